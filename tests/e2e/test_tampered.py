"""Tampered artifact folders: every case is one clear error at load time, never a crash mid-run."""
import json
import os
import shutil

import pytest

pytest.importorskip("torch")
from runtime.errors import DyTokError, EngineError, ManifestError  # noqa: E402
from runtime.manifest import load_manifest  # noqa: E402
from runtime.pipeline import load_pipeline  # noqa: E402


@pytest.fixture
def folder(tiny_artifacts, tmp_path):
    return str(shutil.copytree(tiny_artifacts, tmp_path / "t"))


def edit(folder, change):
    path = os.path.join(folder, "manifest.json")
    data = json.load(open(path))
    change(data)
    json.dump(data, open(path, "w"))


@pytest.mark.parametrize("verify", [True, False])
def test_truncated_external_data(folder, verify):
    path = os.path.join(folder, "primary_llm.onnx.data")
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    with pytest.raises(ManifestError if verify else EngineError, match="primary_llm"):
        load_pipeline(folder, verify_hashes=verify)


def test_swapped_graph_files(folder):
    for ext in (".onnx", ".onnx.data"):  # the LLM and the prior trade files
        a, b = os.path.join(folder, "primary_llm" + ext), os.path.join(folder, "assistant_prior" + ext)
        os.replace(a, a + ".tmp")
        os.replace(b, a)
        os.replace(a + ".tmp", b)
    with pytest.raises(ManifestError, match="sha256"):
        load_manifest(folder)
    # external data references stay by name, so the swapped graphs still load: the I/O check catches them
    with pytest.raises(DyTokError, match="primary_llm|assistant_prior"):
        load_pipeline(folder, verify_hashes=False)


def test_swapped_graph_with_updated_hashes(folder):
    """Someone copies the assistant's vision graph over the primary's and fixes the hashes: the
    graph loads, but its outputs differ from the manifest's table, so load fails with one error."""
    def change(data):
        data["graphs"]["primary_llm"].update({k: data["graphs"]["assistant_prior"][k] for k in
                                              ("file", "sha256", "data_file", "data_sha256")})
    edit(folder, change)
    with pytest.raises(EngineError, match="graph primary_llm: the engine's inputs .* manifest"):
        load_pipeline(folder)


@pytest.mark.parametrize("change,match", [
    (lambda d: d["models"]["primary"].update(context_length="4096"), "context_length"),
    (lambda d: d["models"]["primary"].update(hidden_size=65), "embeddings.shape"),
    (lambda d: d["models"]["primary"].update(num_kv_heads=3), "num_heads"),
    (lambda d: d["models"]["assistant"].update(prior_layers=[7]), "prior_layers"),
    (lambda d: d["models"]["primary"].update(mrope_section=[1, 1]), "mrope_section"),
    (lambda d: d["graphs"]["primary_llm"].update(file="../../etc/passwd"), "file name inside"),
    (lambda d: d["preprocess"].update(min_pixels=10 ** 9), "min_pixels"),
    (lambda d: d["preprocess"].update(image_std=[0, 1, 1]), "image_std"),
    (lambda d: d["tokens"].update(eos="x"), "tokens.eos"),
    (lambda d: d["graphs"].update(primary_vision=[]), "graphs.primary_vision"),
    (lambda d: d.update(models=[]), "models"),
])
def test_edited_manifest_fields(folder, change, match):
    edit(folder, change)
    with pytest.raises(ManifestError, match=match) as err:
        load_manifest(folder)
    assert "\n" not in str(err.value)
