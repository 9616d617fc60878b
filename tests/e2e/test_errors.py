"""Bad input gives one clear error: through the API (typed) and the scripts (exit 2, one line)."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from runtime.errors import ManifestError, PromptError
from runtime.manifest import load_manifest

pytest.importorskip("torch")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def script(*args, env=None):
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, **(env or {})}, timeout=300)
    return out.returncode, out.stdout, out.stderr.strip()


def test_missing_checkpoint_says_where_it_looked(tmp_path):
    code, _, err = script("scripts/export.py", "--model", "qwen2.5-vl-7b", "--out", str(tmp_path / "x"),
                          env={"HF_HOME": str(tmp_path / "hf")})
    assert code == 2 and "Traceback" not in err and len(err.splitlines()) == 1
    assert "qwen2.5-vl-7b" in err and str(tmp_path / "hf") in err and "--checkpoint" in err
    assert not (tmp_path / "x").exists()
    code, _, err = script("scripts/export.py", "--model", "qwen2.5-vl-3b", "--checkpoint", str(tmp_path), "--out",
                          str(tmp_path / "y"))
    assert code == 2 and str(tmp_path) in err


@pytest.mark.parametrize("content", [b"", b"\x00not a video" * 100])
def test_infer_bad_video_one_line(tiny_artifacts, tmp_path, content):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(content)
    code, out, err = script("scripts/infer.py", "--artifacts", tiny_artifacts, "--video", str(bad), "--question", "hi")
    assert code == 2 and out == "" and err.startswith("error: video") and len(err.splitlines()) == 1


def test_infer_prints_answer_and_timing(tiny_artifacts, video_path):
    code, out, err = script("scripts/infer.py", "--artifacts", tiny_artifacts, "--video", video_path, "--question",
                            "What moves?", "--max-new-tokens", "4", "--min-pixels", "3136", "--max-pixels", "50176")
    assert code == 0 and out.strip() and err.splitlines()[-1].startswith("timing:") and "visual tokens" in err
    assert "random weights" in err  # the note comes after the answer


def test_infer_encoder_slack(tiny_artifacts, video_path):
    common = ("scripts/infer.py", "--artifacts", tiny_artifacts, "--video", video_path, "--question", "What moves?",
              "--max-new-tokens", "2", "--min-pixels", "3136", "--max-pixels", "50176", "--method", "dyntok")
    code, out, err = script(*common, "--encoder-slack", "2")
    assert code == 0 and out.strip() and err.splitlines()[-1].startswith("timing:"), err
    code, out, err = script(*common, "--encoder-slack", "0.5")
    assert code == 2 and out == "" and err.startswith("error: --encoder-slack") and len(err.splitlines()) == 1


def test_torch_only_folder_runs_on_the_torch_backend_only(tmp_path, video_path):
    folder = str(tmp_path / "tiny-torch")
    code, _, err = script("scripts/export.py", "--model", "tiny", "--torch-only", "--dtype", "bfloat16", "--out", folder)
    assert code == 0, err
    common = ("scripts/infer.py", "--artifacts", folder, "--video", video_path, "--question", "What moves?",
              "--max-new-tokens", "3", "--min-pixels", "3136", "--max-pixels", "50176")
    code, out, err = script(*common, "--backend", "torch")
    assert code == 0 and err.splitlines()[-1].startswith("timing:"), err
    code, out, err = script(*common)
    assert code == 2 and len(err.splitlines()) == 1 and "--torch-only" in err and "--backend torch" in err


def test_question_longer_than_context(tiny_artifacts, video_path):
    from runtime.options import Options
    from runtime.pipeline import load_pipeline
    pipe = load_pipeline(tiny_artifacts)
    question = "word " * 5000  # the tiny preset's context is 4096 tokens
    with pytest.raises(PromptError, match="context of 4096"):
        pipe.answer(video_path, question, Options(max_new_tokens=4, min_pixels=3136, max_pixels=50176))


def copy_artifacts(src, dst):
    shutil.copytree(src, dst)
    return str(dst)


def test_manifest_from_newer_schema(tiny_artifacts, tmp_path):
    folder = copy_artifacts(tiny_artifacts, tmp_path / "a")
    path = os.path.join(folder, "manifest.json")
    data = json.load(open(path))
    data["schema_version"] = 99
    json.dump(data, open(path, "w"))
    with pytest.raises(ManifestError, match="newer than this runtime"):
        load_manifest(folder)


def test_graph_hash_mismatch(tiny_artifacts, tmp_path):
    folder = copy_artifacts(tiny_artifacts, tmp_path / "b")
    with open(os.path.join(folder, "primary_llm.onnx.data"), "r+b") as f:
        f.seek(100)
        f.write(b"\x01\x02\x03\x04")
    with pytest.raises(ManifestError, match="primary_llm.*sha256"):
        load_manifest(folder)
    code, _, err = script("scripts/infer.py", "--artifacts", folder, "--video", "x.mp4", "--question", "q")
    assert code == 2 and "re-run scripts/export.py" in err


def test_not_an_artifact_folder(tmp_path):
    with pytest.raises(ManifestError, match="not an artifact folder"):
        load_manifest(str(tmp_path))


def test_reexport_reuses_unchanged_graphs(tiny_artifacts, tmp_path):
    from export.exporter import export_artifacts
    folder = copy_artifacts(tiny_artifacts, tmp_path / "c")
    lines = []
    export_artifacts("tiny", folder, log=lines.append)
    assert sum("reused" in line for line in lines) == 4
    assert load_manifest(folder).data["graphs"] == load_manifest(tiny_artifacts).data["graphs"]
    assert not [n for n in os.listdir(tmp_path) if ".partial-" in n]  # nothing half-written left behind


def test_embeddings_are_not_pickles(tiny_artifacts):
    m = load_manifest(tiny_artifacts)
    table = np.load(m.path(m.model("primary")["embeddings"]["file"]), allow_pickle=False)
    assert table.shape == tuple(m.model("primary")["embeddings"]["shape"])
