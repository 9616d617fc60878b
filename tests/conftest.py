import pytest

from runtime.video import write_test_video


@pytest.fixture(scope="session")
def video_path(tmp_path_factory):
    """A generated 48-frame 160x120 MP4 at 12 fps (4 s)."""
    return write_test_video(str(tmp_path_factory.mktemp("video") / "sample.mp4"))


@pytest.fixture(scope="session")
def tiny_artifacts(tmp_path_factory):
    """The tiny preset (primary + assistant) exported once for the whole session."""
    pytest.importorskip("torch")
    from export.exporter import export_artifacts
    return export_artifacts("tiny", str(tmp_path_factory.mktemp("artifacts") / "tiny"), log=lambda *_: None)


@pytest.fixture(scope="session")
def needle_artifacts(tmp_path_factory):
    """The committed needle weights exported through the real checkpoint path, once per session."""
    pytest.importorskip("torch")
    from export.exporter import export_artifacts
    return export_artifacts("needle", str(tmp_path_factory.mktemp("artifacts") / "needle"), log=lambda *_: None)


@pytest.fixture(scope="session")
def tiny_models(tiny_artifacts):
    """The transformers models behind the tiny artifacts (same seed)."""
    from export.torch_engine import load_models
    from runtime.manifest import load_manifest
    return load_models(load_manifest(tiny_artifacts))


@pytest.fixture(scope="session")
def tiny_split(tiny_artifacts, tmp_path_factory):
    """The tiny artifacts plus the LLM split at layer 2 (primary_llm_lo/_hi): a hard-linked copy,
    re-exported in place, so the four existing graphs are reused and only the segments are new."""
    import os
    import shutil

    from export.exporter import export_artifacts
    from runtime.manifest import link_or_copy
    out = str(tmp_path_factory.mktemp("split") / "tiny-split")
    shutil.copytree(tiny_artifacts, out, copy_function=link_or_copy)
    assert os.path.isfile(os.path.join(out, "manifest.json"))
    return export_artifacts("tiny", out, fastv_layer=2, log=lambda *_: None)


@pytest.fixture(scope="session")
def llava_tiny(tmp_path_factory):
    """llava-onevision-tiny (primary + assistant) with the LLM split at layer 2 (FastV, DyCoke's KV
    step), exported once for the whole session."""
    pytest.importorskip("torch")
    from export.exporter import export_artifacts
    return export_artifacts("llava-onevision-tiny", str(tmp_path_factory.mktemp("llava") / "tiny"), fastv_layer=2,
                            validate=False, log=lambda *_: None)


@pytest.fixture(scope="session")
def llava_models(llava_tiny):
    """The transformers models behind the LLaVA-OV tiny artifacts (same seed; eager attention)."""
    from export.torch_engine import load_models
    from runtime.manifest import load_manifest
    return load_models(load_manifest(llava_tiny))
