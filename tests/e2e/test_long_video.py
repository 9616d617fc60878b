"""Long videos on the tiny preset: admission decides before any engine runs (error, or --fit auto
with one note), chunked prefill answers like one call, old one-shot prior folders still work,
short clips answer, and two pipelines run from two threads."""
import json
import os
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest

pytest.importorskip("torch")
from runtime.admission import AdmissionError  # noqa: E402
from runtime.errors import PromptError  # noqa: E402
from runtime.options import Options
from runtime.pipeline import load_pipeline  # noqa: E402
from runtime.video import SampledFrames, sample_video, write_test_video  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QUESTION = "What happens in the video?"
SMALL = dict(min_pixels=16 * 784, max_pixels=64 * 784, max_new_tokens=6)


class Spy:
    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def run(self, feeds):
        self.calls += 1
        return self.inner.run(feeds)


@pytest.fixture(scope="module")
def pipe(tiny_artifacts):
    return load_pipeline(tiny_artifacts)


@pytest.fixture(scope="module")
def long_clip():
    """64 frames of 360x640 (fps-sampling's cap): 32 groups x 299 tokens = 9568 visual tokens at the
    default pixels, past the tiny models' 4096-token context."""
    rng = np.random.default_rng(0)
    frames = np.repeat(rng.integers(0, 256, (8, 360, 640, 3), dtype=np.uint8), 8, axis=0)
    idx = np.arange(64) * 15
    return SampledFrames(frames, idx, idx / 30.0, 30.0)


def test_too_long_stops_before_any_engine(pipe, long_clip):
    spied = {role: Spy(e) for role, e in pipe.engines.items()}
    original, pipe.engines = pipe.engines, spied
    try:
        with pytest.raises(AdmissionError) as err:
            pipe.answer(long_clip, QUESTION, Options(num_frames=None, fit="strict"))
    finally:
        pipe.engines = original
    message = str(err.value)
    assert isinstance(err.value, PromptError) and "\n" not in message
    assert "context of 4096" in message and "leave --fit at auto" in message and "--max-pixels" in message
    assert all(s.calls == 0 for s in spied.values())


def test_memory_budget_is_checked_before_any_engine(pipe, video_path):
    with pytest.raises(AdmissionError, match="memory budget of 0.00 GB"):
        pipe.answer(video_path, QUESTION, Options(memory_budget=1, **SMALL))


def test_fit_auto_lowers_pixels_and_notes_once(pipe, long_clip, capsys):
    half = SampledFrames(long_clip.frames[::2], long_clip.indices[::2], long_clip.timestamps[::2], 30.0)
    opts = Options(num_frames=None, fit="auto", max_new_tokens=2, retention=1.0, assistant=False)  # 4784 kept
    result = pipe.answer(half, QUESTION, opts)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("note: --fit auto:") and "max pixels 602112 ->" in err[0]
    kept, total = result.visual_tokens
    assert kept == total and 4096 - 60 > total > 2000 and len(result.token_ids) == 2


def test_chunked_prefill_end_to_end_same_answer(pipe, video_path):
    clip = sample_video(video_path, num_frames=16)
    one = pipe.answer(clip, QUESTION, Options(prefill_chunk=None, **SMALL))
    chunked = pipe.answer(clip, QUESTION, Options(prefill_chunk=16, **SMALL))
    assert one.token_ids == chunked.token_ids
    np.testing.assert_array_equal(one.budgets, chunked.budgets)
    np.testing.assert_allclose(one.frame_weights, chunked.frame_weights, atol=1e-6)


def test_old_one_shot_prior_folder_still_works(tiny_artifacts, tiny_models, pipe, video_path, tmp_path):
    """A folder exported before chunking has a prior graph without KV inputs: it runs in one call."""
    from export import specs
    from export.exporter import _export, _graph_entry
    from export.graphs.llm import KeyframePrior
    folder = str(tmp_path / "old")
    shutil.copytree(tiny_artifacts, folder)
    for name in ("assistant_prior.onnx", "assistant_prior.onnx.data"):
        os.remove(os.path.join(folder, name))
    consts = json.load(open(os.path.join(folder, "manifest.json")))["models"]["assistant"]
    layers = consts["prior_layers"]
    spec = specs.prior_spec(consts["hidden_size"], len(layers))
    rng = np.random.default_rng(0)
    example = {"inputs_embeds": rng.normal(size=(1, 12, consts["hidden_size"])).astype(np.float32),
               "position_ids": np.tile(np.arange(12), (3, 1, 1)), "visual_index": np.arange(3, 9)}
    _export(KeyframePrior(tiny_models["assistant"], layers).eval(), spec, example,
            os.path.join(folder, "assistant_prior.onnx"))
    path = os.path.join(folder, "manifest.json")
    data = json.load(open(path))
    data["graphs"]["assistant_prior"] = _graph_entry(folder, "assistant_prior.onnx", spec, "old")
    json.dump(data, open(path, "w"))
    clip = sample_video(video_path, num_frames=16)
    old = load_pipeline(folder).answer(clip, QUESTION, Options(prefill_chunk=16, **SMALL))
    new = pipe.answer(clip, QUESTION, Options(prefill_chunk=16, **SMALL))
    assert old.token_ids == new.token_ids
    np.testing.assert_array_equal(old.budgets, new.budgets)


def test_clip_shorter_than_the_default_frames_answers(pipe, tmp_path, capsys):
    path = write_test_video(str(tmp_path / "short.mp4"), num_frames=3)
    result = pipe.answer(path, QUESTION, Options(**SMALL))  # default 8 frames
    assert len(result.frames.frames) == 3 and result.grid_thw[0] == 2  # the last group is padded
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "asked for 8 frames but it has 3" in err[0] and "the last frame is repeated to make 4" in err[1]


def test_two_pipelines_two_threads(tiny_artifacts, pipe, video_path, tmp_path):
    """Two pipelines on different folders, used at once from two threads, answer as they do alone."""
    other = load_pipeline(shutil.copytree(tiny_artifacts, tmp_path / "copy"))
    clips = [sample_video(video_path, num_frames=n) for n in (8, 16)]
    want = [pipe.answer(c, QUESTION, Options(**SMALL)).token_ids for c in clips]
    got, errors = {}, []

    def work(name, p, clip):
        try:
            for _ in range(2):
                got.setdefault(name, []).append(p.answer(clip, QUESTION, Options(**SMALL)).token_ids)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i, p, c)) for i, (p, c) in enumerate(zip((pipe, other), clips))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors and not any(t.is_alive() for t in threads)
    assert got[0] == [want[0]] * 2 and got[1] == [want[1]] * 2


def test_infer_long_video_one_line(tiny_artifacts, tmp_path):
    """The script: fps sampling of a clip past the context stops with one line before any engine."""
    path = write_test_video(str(tmp_path / "long.mp4"), num_frames=240, size=(640, 360), fps=8.0)
    out = subprocess.run([sys.executable, "scripts/infer.py", "--artifacts", tiny_artifacts, "--video", path,
                          "--question", "hi", "--frames", "0", "--fit", "strict"], capture_output=True, text=True, cwd=ROOT,
                         timeout=300)
    *notes, err = out.stderr.strip().splitlines()
    assert out.returncode == 2 and out.stdout == "" and notes == [line for line in notes if "random weights" in line]
    assert err.startswith("error: the request does not fit (--fit strict)") and "leave --fit at auto" in err
