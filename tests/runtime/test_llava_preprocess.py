"""LLaVA-OneVision preprocessing (runtime/families/llava_onevision.py) against transformers'
``LlavaOnevisionVideoProcessor`` on random frames of several sizes, both downscaled and upscaled.

The processor is a torchvision backend: ``tvF.resize(uint8 frames, (384, 384), BICUBIC,
antialias=True)``, which on CPU hands the uint8 tensor to torch's
``interpolate(mode="bicubic", antialias=True)``, then the fused rescale and normalise. Where
torchvision is installed the processor itself is the reference; otherwise those same two torch
operations are (torchvision is not a dependency of this project). Tolerance: none (bit-exact)."""
import numpy as np
import pytest

from runtime.errors import PreprocessError
from runtime.families import REGISTRY
from runtime.families.llava_onevision import FrameConfig, plan, preprocess, resize_frames

torch = pytest.importorskip("torch")

SIZES = [(120, 160), (480, 640), (384, 384), (383, 385), (50, 700), (720, 1280)]
CLIP = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))


def reference(frames: np.ndarray, cfg: FrameConfig) -> np.ndarray:
    try:
        from transformers import LlavaOnevisionVideoProcessor
        processor = LlavaOnevisionVideoProcessor(image_mean=list(cfg.image_mean), image_std=list(cfg.image_std))
    except ImportError:  # no torchvision: the operations it runs on CPU
        video = torch.from_numpy(frames).permute(0, 3, 1, 2)  # as transformers lays out a NumPy video
        resized = torch.nn.functional.interpolate(video, size=(cfg.image_size, cfg.image_size), mode="bicubic",
                                                  antialias=True, align_corners=False)
        mean = torch.tensor(cfg.image_mean) * (1.0 / cfg.rescale_factor)  # _fuse_mean_std_and_rescale_factor
        std = torch.tensor(cfg.image_std) * (1.0 / cfg.rescale_factor)
        return ((resized.to(torch.float32) - mean[:, None, None]) / std[:, None, None]).numpy()
    return processor(videos=[frames], return_tensors="np")["pixel_values_videos"][0]


@pytest.mark.parametrize("mean_std", [((0.5,) * 3, (0.5,) * 3), CLIP], ids=["siglip", "clip"])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_preprocess_matches_transformers(size, mean_std):
    cfg = FrameConfig(384, 14, *mean_std)
    frames = np.random.default_rng(size[0] * size[1]).integers(0, 256, (2, *size, 3), dtype=np.uint8)
    out = preprocess(frames, cfg)
    want = reference(frames, cfg)
    assert out.pixel_values.shape == want.shape == (2, 3, 384, 384)
    assert out.grid_thw == (2, 27, 27) == plan(*size, 2, cfg)
    np.testing.assert_array_equal(out.pixel_values, want)


def test_smooth_frames_and_identity():
    """A gradient (no random texture) and the identity size: still bit-exact against torch."""
    y, x = np.mgrid[0:300, 0:500]
    frame = np.stack([(x * 255 // 499), (y * 255 // 299), ((x + y) % 256)], -1).astype(np.uint8)
    want = torch.nn.functional.interpolate(torch.from_numpy(frame[None]).permute(0, 3, 1, 2), size=(384, 384),
                                           mode="bicubic", antialias=True).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(resize_frames(frame[None], 384), want)
    square = np.random.default_rng(1).integers(0, 256, (1, 384, 384, 3), dtype=np.uint8)
    np.testing.assert_array_equal(resize_frames(square, 384), square)


def test_family_declarations():
    fam = REGISTRY["llava_onevision"]
    assert fam.frames_per_group == 1 and not fam.encoder_slack and fam.renumber
    assert fam.merged_grid((5, 27, 27), {"tokens_per_frame": 196}) == (5, 14, 14)
    pos = fam.positions(np.zeros(7, np.int64), 3, (1, 27, 27), 0.5, {})
    np.testing.assert_array_equal(pos, np.tile(np.arange(7), (3, 1)))


@pytest.mark.parametrize("bad", [np.zeros((2, 8, 8, 3), np.float32), np.zeros((8, 8, 3), np.uint8),
                                 np.zeros((0, 8, 8, 3), np.uint8)])
def test_bad_frames(bad):
    with pytest.raises(PreprocessError):
        preprocess(bad, FrameConfig())
