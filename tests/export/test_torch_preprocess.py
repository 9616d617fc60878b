"""Preprocessing on a torch device (the CUDA backend's) is the NumPy reference bit for bit: on the
needle test videos and on odd frame sizes and counts (here on the CPU device; the same code runs
on CUDA), and a needle answer through it is the answer through NumPy."""
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
