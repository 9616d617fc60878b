"""Qwen2.5-VL preprocessing parity with transformers' own PIL image processor.

Tolerance: exact. Our resize reproduces Pillow's fixed-point bicubic, and rescale/normalise use
the same float64 -> float32 steps as transformers' NumPy path, so pixels and patches must be
bit-identical. (Resampling kernels differ between libraries; matching Pillow's is what makes an
exact comparison possible.) transformers' video processor needs torchvision, which must not be
installed here, so each frame goes through the PIL image processor, whose layout is the video
layout with the frame repeated across the temporal patch; the temporal interleave is checked
by splitting our video patches into their two frames.
"""
import numpy as np
import pytest

from runtime.errors import PreprocessError
from runtime.preprocess import (PreprocessConfig, frame_max_pixels, normalize, patchify, plan_grid, preprocess_video,
                                resize_bicubic, smart_resize)

transformers = pytest.importorskip("transformers")
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (  # noqa: E402
    Qwen2VLImageProcessorPil, smart_resize as hf_smart_resize)

SIZES = [(120, 160), (360, 640), (50, 70), (479, 853), (1080, 1920), (33, 1200)]


@pytest.mark.parametrize("h,w", SIZES + [(28, 28), (3000, 20), (224, 224), (111, 57)])
@pytest.mark.parametrize("min_px,max_px", [(56 * 56, 28 * 28 * 1280), (128 * 784, 768 * 784), (4 * 784, 16 * 784)])
def test_smart_resize_matches(h, w, min_px, max_px):
    assert smart_resize(h, w, 28, min_px, max_px) == hf_smart_resize(h, w, 28, min_px, max_px)


def test_frame_cap():
    cfg = PreprocessConfig()
    total = int(128000 * 28 * 28 * 0.9)
    assert frame_max_pixels(768, cfg) == max(min(768 * 784, total * 2 // 768), int(128 * 784 * 1.05))
    assert frame_max_pixels(4, cfg) == 768 * 784
    assert frame_max_pixels(768, PreprocessConfig(cap_pixels_per_frame=False)) == 768 * 784


@pytest.mark.parametrize("h,w", SIZES)
def test_frames_match_transformers_pil_processor(h, w):
    rng = np.random.default_rng(h * w)
    frames = rng.integers(0, 256, (3, h, w, 3), dtype=np.uint8)  # odd count: last frame is repeated
    cfg = PreprocessConfig(min_pixels=4 * 784, max_pixels=64 * 784)
    ours = preprocess_video(frames, cfg)
    hf = Qwen2VLImageProcessorPil(min_pixels=cfg.min_pixels, max_pixels=frame_max_pixels(3, cfg))
    gt, gh, gw = ours.grid_thw
    assert gt == 2 and plan_grid(h, w, 3, cfg) == ours.grid_thw  # sizes are planned before pixels move
    split = ours.pixel_values.reshape(gt, gh * gw, 3, 2, 14 * 14)  # (t, patch, C, tp, p*p)
    for f, (g, tp) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        ref = hf(images=[frames[min(f, 2)]], return_tensors="np")
        assert ref["image_grid_thw"][0].tolist() == [1, gh, gw]
        want = ref["pixel_values"].reshape(gh * gw, 3, 2, 14 * 14)[:, :, 0]
        np.testing.assert_array_equal(split[g, :, :, tp], want)


def test_resize_is_identity_at_same_size():
    f = np.random.default_rng(1).integers(0, 256, (56, 84, 3), dtype=np.uint8)
    np.testing.assert_array_equal(resize_bicubic(f, 56, 84), f)


def test_patchify_grid_and_padding():
    x = normalize(np.zeros((5, 56, 84, 3), np.uint8), (0, 0, 0), (1, 1, 1))
    pv, grid = patchify(x)
    assert grid == (3, 4, 6) and pv.shape == (3 * 4 * 6, 3 * 2 * 14 * 14)


def test_bad_frames():
    with pytest.raises(PreprocessError, match="uint8"):
        preprocess_video(np.zeros((2, 56, 56, 3), np.float32))
    with pytest.raises(PreprocessError, match="no frames"):
        preprocess_video(np.zeros((0, 56, 56, 3), np.uint8))
    with pytest.raises(PreprocessError, match="multiple of 28"):
        patchify(np.zeros((2, 50, 56, 3), np.float32))
    with pytest.raises(PreprocessError, match="aspect ratio"):
        smart_resize(1, 500)
