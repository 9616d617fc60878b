"""Qwen2.5-VL video preprocessing in NumPy: plan sizes, resize, normalise, patchify.

Mirrors transformers 5.23 ``models/qwen2_vl/image_processing_pil_qwen2_vl.py`` (smart_resize,
PIL bicubic resize of uint8 frames, rescale in float64 then float32, normalise in float32) and
``video_processing_qwen2_vl.py`` (temporal padding, patch layout, per-frame pixel cap).

The resize reproduces Pillow's fixed-point bicubic (``Resample.c``: a = -0.5 kernel widened by the
downscale factor, 22-bit integer coefficients, horizontal pass then vertical, each rounded to
uint8), so our pixels equal the PIL path bit for bit with no PIL dependency at run time.
Reference: Pillow 12.1.1 (Pillow 13 runs the vertical pass first for some size pairs, which
moves a few pixels by a few levels; pinned in the ``export`` extra for the parity tests).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import PreprocessError

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
PRECISION_BITS = 22  # Pillow: 32 - 8 - 2


@dataclass(frozen=True)
class PreprocessConfig:
    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2
    min_pixels: int = 128 * 28 * 28  # Qwen2VLVideoProcessor.size["shortest_edge"]
    max_pixels: int = 768 * 28 * 28  # Qwen2VLVideoProcessor.size["longest_edge"]
    image_mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    image_std: tuple[float, float, float] = OPENAI_CLIP_STD
    cap_pixels_per_frame: bool = True  # qwen-vl-utils' total-video pixel budget
    max_video_tokens: int = 128000

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size

    @classmethod
    def from_manifest(cls, section: dict, max_pixels: int | None = None, min_pixels: int | None = None) -> "PreprocessConfig":
        """From a manifest's ``preprocess`` section; pixel bounds override the exported defaults."""
        return cls(patch_size=section["patch_size"], temporal_patch_size=section["temporal_patch_size"],
                   merge_size=section["merge_size"], min_pixels=min_pixels or section["min_pixels"],
                   max_pixels=max_pixels or section["max_pixels"], image_mean=tuple(section["image_mean"]),
                   image_std=tuple(section["image_std"]))


@dataclass(frozen=True)
class VideoPatches:
    pixel_values: np.ndarray  # [grid_t * grid_h * grid_w, 3 * tp * p * p] float32
    grid_thw: tuple[int, int, int]  # patch grid: temporal groups, patch rows, patch cols
    resized_hw: tuple[int, int]  # frame size after resize, pixels


def smart_resize(height: int, width: int, factor: int = 28, min_pixels: int = 56 * 56,
                 max_pixels: int = 14 * 14 * 4 * 1280) -> tuple[int, int]:
    """Target (height, width): multiples of ``factor``, area within [min_pixels, max_pixels], aspect kept."""
    if min(height, width) <= 0:
        raise PreprocessError(f"frame size must be positive, got {height}x{width}")
    if max(height, width) / min(height, width) > 200:
        raise PreprocessError(f"frame aspect ratio must be below 200, got {height}x{width}")
    h_bar = round(height / factor) * factor  # Python round: half to even, as transformers
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def frame_max_pixels(num_frames: int, cfg: PreprocessConfig) -> int:
    """Per-frame pixel cap under the total-video budget (transformers ``Qwen2VLVideoProcessor.resize``)."""
    if not cfg.cap_pixels_per_frame:
        return cfg.max_pixels
    total = int(cfg.max_video_tokens * cfg.factor * cfg.factor * 0.9)
    return max(min(cfg.max_pixels, total * cfg.temporal_patch_size // num_frames), int(cfg.min_pixels * 1.05))


def plan_size(height: int, width: int, num_frames: int, cfg: PreprocessConfig) -> tuple[int, int]:
    """Resized (height, width) for a video of ``num_frames`` frames of ``height x width``."""
    return smart_resize(height, width, cfg.factor, cfg.min_pixels, frame_max_pixels(num_frames, cfg))


def plan_grid(height: int, width: int, num_frames: int, cfg: PreprocessConfig) -> tuple[int, int, int]:
    """Patch grid (t, h, w) that ``preprocess_video`` gives ``num_frames`` frames of ``height x width``."""
    h, w = plan_size(height, width, num_frames, cfg)
    return -(-num_frames // cfg.temporal_patch_size), h // cfg.patch_size, w // cfg.patch_size


def _bicubic(x: np.ndarray) -> np.ndarray:
    a = -0.5
    x = np.abs(x)
    return np.where(x < 1.0, ((a + 2.0) * x - (a + 3.0)) * x * x + 1,
                    np.where(x < 2.0, (((x - 5) * x + 8) * x - 4) * a, 0.0))


def pil_coefficients(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pillow ``precompute_coeffs`` + ``normalize_coeffs_8bpc``: tap indices and int weights [out, k]."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 2.0 * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    center = (np.arange(out_size) + 0.5) * scale
    xmin = np.maximum(np.trunc(center - support + 0.5).astype(np.int64), 0)
    xmax = np.minimum(np.trunc(center + support + 0.5).astype(np.int64), in_size) - xmin
    taps = np.arange(ksize)
    valid = taps[None, :] < xmax[:, None]
    w = _bicubic((taps[None, :] + xmin[:, None] - center[:, None] + 0.5) / filterscale) * valid
    total = w.sum(axis=1, keepdims=True)
    w = np.where(total != 0, w / np.where(total != 0, total, 1), w)
    scaled = w * (1 << PRECISION_BITS)
    k = np.where(scaled < 0, np.trunc(scaled - 0.5), np.trunc(scaled + 0.5)).astype(np.int64)
    index = np.minimum(xmin[:, None] + taps[None, :], in_size - 1)
    return index, np.where(valid, k, 0)


def _resample_axis(img: np.ndarray, out_size: int, axis: int) -> np.ndarray:
    index, k = pil_coefficients(img.shape[axis], out_size)
    acc = np.full(img.shape[:axis] + (out_size,) + img.shape[axis + 1:], 1 << (PRECISION_BITS - 1), np.int64)
    shape = [1] * img.ndim
    shape[axis] = out_size
    for j in range(index.shape[1]):  # one tap at a time keeps memory at one output-sized buffer
        acc += np.take(img, index[:, j], axis=axis).astype(np.int64) * k[:, j].reshape(shape)
    return np.clip(acc >> PRECISION_BITS, 0, 255).astype(np.uint8)


def resize_bicubic(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pillow-exact bicubic resize of one RGB uint8 frame. [H, W, 3] -> [height, width, 3]"""
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise PreprocessError(f"frame must be uint8 [H, W, 3], got {frame.dtype} {frame.shape}")
    out = frame
    if width != frame.shape[1]:
        out = _resample_axis(out, width, axis=1)  # Pillow: horizontal pass first
    if height != frame.shape[0]:
        out = _resample_axis(out, height, axis=0)
    return out


def normalize(frames: np.ndarray, mean, std) -> np.ndarray:
    """uint8 [..., 3] -> float32 (x/255 - mean)/std, rounding as transformers' NumPy path."""
    x = (frames.astype(np.float64) * (1 / 255)).astype(np.float32)
    return (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def patchify(frames: np.ndarray, patch_size: int = 14, temporal_patch_size: int = 2,
             merge_size: int = 2) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Qwen2.5-VL patch layout. [T, H, W, 3] float32 -> ([gt*gh*gw, 3*tp*p*p], (gt, gh, gw)).

    T is padded to a multiple of ``temporal_patch_size`` by repeating the last frame. Rows are
    ordered (t, h-block, w-block, merge-row, merge-col) so each 2x2 merge unit is contiguous.
    """
    t, height, width, channels = frames.shape
    unit = patch_size * merge_size
    if height % unit or width % unit:
        raise PreprocessError(f"frame size {height}x{width} is not a multiple of {unit}")
    if pad := -t % temporal_patch_size:
        frames = np.concatenate([frames, np.repeat(frames[-1:], pad, axis=0)])
        t += pad
    gt, gh, gw = t // temporal_patch_size, height // patch_size, width // patch_size
    x = frames.transpose(0, 3, 1, 2).reshape(  # (T, C, H, W) -> blocks
        gt, temporal_patch_size, channels, gh // merge_size, merge_size, patch_size,
        gw // merge_size, merge_size, patch_size)
    x = x.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)  # (gt, bh, bw, mh, mw, C, tp, ph, pw)
    return np.ascontiguousarray(x.reshape(gt * gh * gw, channels * temporal_patch_size * patch_size ** 2)), (gt, gh, gw)


def preprocess_video(frames: np.ndarray, cfg: PreprocessConfig = PreprocessConfig()) -> VideoPatches:
    """RGB uint8 frames [T, H, W, 3] -> Qwen2.5-VL ``pixel_values_videos`` and ``video_grid_thw``."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise PreprocessError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    if len(frames) == 0:
        raise PreprocessError("no frames to preprocess")
    height, width = plan_size(frames.shape[1], frames.shape[2], len(frames), cfg)
    resized = np.stack([resize_bicubic(f, height, width) for f in frames])
    pixel_values, grid = patchify(normalize(resized, cfg.image_mean, cfg.image_std),
                                  cfg.patch_size, cfg.temporal_patch_size, cfg.merge_size)
    return VideoPatches(pixel_values=pixel_values, grid_thw=grid, resized_hw=(height, width))
