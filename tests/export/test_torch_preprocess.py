"""Preprocessing on a torch device (the CUDA backend's) is the NumPy reference bit for bit: on the
needle test videos and on odd frame sizes and counts (here on the CPU device; the same code runs
on CUDA), and a needle answer through it is the answer through NumPy. The pipeline preprocesses
once when the assistant reads the same frames at the same geometry as the primary."""
import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from export.torch_preprocess import TorchPreprocess  # noqa: E402
from runtime.preprocess import PreprocessConfig, preprocess_video  # noqa: E402
from synthetic.needle import make_video, split_seed  # noqa: E402


@pytest.mark.parametrize("seed", range(3))
def test_needle_videos_bit_identical(seed):
    frames = make_video(split_seed("test", seed)).frames
    cfg = PreprocessConfig(min_pixels=56 * 56, max_pixels=112 * 112)
    want, got = preprocess_video(frames, cfg), TorchPreprocess("cpu")(frames, cfg)
    assert got.grid_thw == want.grid_thw and got.resized_hw == want.resized_hw
    assert torch.equal(got.pixel_values, torch.from_numpy(want.pixel_values))


@pytest.mark.parametrize("t, h, w", [(3, 37, 91), (8, 360, 640), (1, 1080, 720)])
def test_resized_frames_bit_identical(t, h, w):
    frames = np.random.default_rng(t).integers(0, 256, (t, h, w, 3), dtype=np.uint8)
    cfg = PreprocessConfig(min_pixels=16 * 784, max_pixels=256 * 784)
    want, got = preprocess_video(frames, cfg), TorchPreprocess("cpu")(frames, cfg)
    assert got.grid_thw == want.grid_thw
    assert torch.equal(got.pixel_values, torch.from_numpy(want.pixel_values))


def test_needle_answers_through_the_device_hook(needle_artifacts):
    from export.torch_engine import torch_pipeline
    from runtime.manifest import load_manifest
    from runtime.options import Options

    pipe = torch_pipeline(load_manifest(needle_artifacts))
    opts = Options(method="visionzip", retention=0.25, max_new_tokens=2)
    videos = [make_video(split_seed("test", i)) for i in range(3)]
    want = [pipe.answer(v.sampled(), v.question, opts).token_ids for v in videos]
    pipe.device_preprocess["qwen2_5_vl"] = TorchPreprocess("cpu")
    assert [pipe.answer(v.sampled(), v.question, opts).token_ids for v in videos] == want


def test_one_preprocessing_when_the_assistant_shares_the_frames(tiny_artifacts):
    from runtime.options import Options
    from runtime.pipeline import load_pipeline

    pipe = load_pipeline(tiny_artifacts)
    calls = []
    pipe.device_preprocess["qwen2_5_vl"] = lambda frames, cfg: calls.append(cfg) or preprocess_video(frames, cfg)
    video = make_video(split_seed("test", 0))
    opts = Options(method="visionzip", retention=0.25, max_new_tokens=1, min_pixels=3136, max_pixels=12544)
    shared = pipe.answer(video.sampled(), video.question, opts)
    assert len(calls) == 1, calls
    calls.clear()
    frames = video.sampled()
    cfg = pipe.preprocess_config("primary", opts.max_pixels, opts.min_pixels)
    own = pipe.frame_prior(video.question, frames, opts, len(shared.budgets))  # the assistant's own preprocessing
    assert len(calls) == 1 and np.array_equal(own, shared.frame_weights)
    calls.clear()
    smaller = dataclasses.replace(opts, assistant_max_pixels=3136)
    pipe.answer(video.sampled(), video.question, smaller)
    assert len(calls) == 2 and calls[0] == cfg  # another geometry: the assistant preprocesses its own
    assert pipe.family.plan(*frames.frames.shape[1:3], len(frames.frames), calls[1]) != \
        pipe.family.plan(*frames.frames.shape[1:3], len(frames.frames), cfg)
