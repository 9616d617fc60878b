"""Every input is checked before work and every change is said: one error naming the flag, or one
note on stderr, for each case a new user hits (on the tiny preset through ONNX Runtime)."""
import os
import subprocess
import sys

import numpy as np
import pytest

from runtime.errors import BudgetError, PreprocessError, PromptError, VideoError
from runtime.options import Options
from runtime.pipeline import load_pipeline
from runtime.video import SampledFrames, sample_video

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
Q = "What happens in the video?"
SMALL = dict(min_pixels=16 * 784, max_pixels=64 * 784, max_new_tokens=2)


@pytest.fixture(scope="module")
def pipe(tiny_artifacts):
    return load_pipeline(tiny_artifacts)


@pytest.fixture(scope="module")
def clip(video_path):
    return sample_video(video_path, num_frames=8)


class NoEngine:
    def run(self, feeds):
        raise AssertionError("an engine ran before the input was checked")


@pytest.mark.parametrize("opts, error, flag", [
    (dict(budget=0), BudgetError, "--budget 0"),
    (dict(budget=-1), BudgetError, "--budget -1"),
    (dict(retention=0.0), BudgetError, "--retention 0.0"),
    (dict(cap=2, budget=5), BudgetError, "--cap 2 is below --budget 5"),
    (dict(max_pixels=10), PreprocessError, "--max-pixels 10"),
    (dict(max_new_tokens=0), BudgetError, "--max-new-tokens 0"),
    (dict(top_p=0.0), BudgetError, "--top-p 0.0"),
    (dict(fit="off"), BudgetError, "--fit 'off'"),
    (dict(method="nope"), BudgetError, "unknown method 'nope'"),
])
def test_bad_values_fail_before_any_engine(pipe, clip, opts, error, flag):
    engines, pipe.engines = pipe.engines, {k: NoEngine() for k in pipe.engines}
    try:
        with pytest.raises(error) as e:
            pipe.answer(clip, Q, Options(**{**SMALL, **opts}))
    finally:
        pipe.engines = engines
    assert str(e.value).startswith(flag) or flag in str(e.value)
    assert "\n" not in str(e.value)


def test_empty_question_and_a_question_longer_than_the_context(pipe, clip):
    with pytest.raises(PromptError, match="--question '  ': ask something"):
        pipe.answer(clip, "  ", Options(**SMALL))
    long = " ".join(["word"] * 5000)
    with pytest.raises(PromptError) as e:
        pipe.answer(clip, long, Options(**SMALL))
    assert "shorten --question" in str(e.value) and "--fit" not in str(e.value)


def test_folder_as_video_is_named(pipe, tmp_path):
    with pytest.raises(VideoError, match="is a folder"):
        pipe.answer(str(tmp_path), Q, Options(**SMALL))


def test_changes_are_said_once(pipe, clip, capsys):
    odd = SampledFrames(clip.frames[:7], clip.indices[:7], clip.timestamps[:7], clip.fps)
    pipe.answer(odd, Q, Options(**SMALL))
    assert capsys.readouterr().err.strip() == ("note: 7 frames: qwen2_5_vl encodes frames in groups of 2; the last frame "
                                              "is repeated to make 8")
    r = pipe.answer(clip, Q, Options(**{**SMALL, "method": "dycoke"}))
    err = capsys.readouterr().err.strip().splitlines()
    kept, total = r.visual_tokens
    assert len(err) == 1 and f"kept {kept / total:.0%} of the visual tokens, not the 25% of --retention" in err[0]
    r = pipe.answer(clip, Q, Options(**{**SMALL, "budget": 500}))
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--budget 500 is more than the" in err[0] and r.visual_tokens[0] == r.visual_tokens[1]
    r = pipe.answer(clip, Q, Options(**{**SMALL, "max_pixels": 8 * 784, "min_pixels": None}))
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--max-pixels 6272 is below the minimum" in err[0]
    assert r.grid_thw[1] * r.grid_thw[2] * 196 <= 8 * 784


def test_a_long_video_fits_by_default(pipe, capsys):
    rng = np.random.default_rng(0)
    frames = np.repeat(rng.integers(0, 256, (8, 360, 640, 3), dtype=np.uint8), 8, axis=0)
    idx = np.arange(64) * 15
    long_clip = SampledFrames(frames, idx, idx / 30.0, 30.0)
    r = pipe.answer(long_clip, Q, Options(num_frames=None, max_new_tokens=2, retention=1.0, assistant=False))
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("note: --fit auto:") and r.visual_tokens[1] < 4096


def test_infer_uses_the_default_model_and_says_what_it_is(tiny_artifacts, video_path):
    """No --artifacts: the default folder (DYTOK_ARTIFACTS here, artifacts/needle for users); a
    random-weight model says so instead of printing noise; one-token answers print no tok/s."""
    env = dict(os.environ, DYTOK_ARTIFACTS=tiny_artifacts)
    out = subprocess.run([sys.executable, "scripts/infer.py", "--video", video_path, "--question", Q,
                          "--max-new-tokens", "1"], capture_output=True, text=True, cwd=ROOT, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(1 tokens from random weights: not text)"
    lines = out.stderr.strip().splitlines()
    assert lines[0].startswith("note: tiny has random weights") and "tok/s" not in lines[-1]
    assert all(line.startswith(("note:", "timing:")) for line in lines)  # no third-party warnings
    bad = subprocess.run([sys.executable, "scripts/infer.py", "--video", video_path, "--question", Q, "--budget", "0"],
                         capture_output=True, text=True, cwd=ROOT, timeout=300, env=env)
    assert bad.returncode == 2 and bad.stdout == "" and bad.stderr.strip().splitlines() == [
        "error: --budget 0: expected at least 1 token per temporal group (or use --retention)"]


def test_every_script_help_shows_defaults():
    out = subprocess.run([sys.executable, "scripts/infer.py", "--help"], capture_output=True, text=True, cwd=ROOT,
                         timeout=120)
    text = " ".join(out.stdout.split())
    assert out.returncode == 0 and "(default: 0.25)" in text and "(default: visionzip)" in text
    assert "(default: None)" not in text and "(default: False)" not in text
