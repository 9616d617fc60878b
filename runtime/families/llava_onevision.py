"""LLaVA-OneVision: whole frames at one fixed size, a SigLIP tower with 2x bilinear pooling (one
frame = one temporal group of 196 tokens), the learned ``image_newline`` row after a video's
frames, 1-D RoPE.

Preprocessing mirrors transformers 5.23 ``LlavaOnevisionVideoProcessor`` (a torchvision backend):
every frame resized to ``image_size`` x ``image_size`` (384) by torchvision's ``resize`` with
``BICUBIC`` and ``antialias=True`` on the uint8 frames, which on CPU is torch's own uint8 kernel
(``interpolate(mode="bicubic", antialias=True)``: Pillow's a = -0.5 filter widened by the downscale
factor, int16 weights at the largest precision that fits, horizontal pass then vertical, each
rounded to uint8); then the fused rescale-and-normalise in float32, ``(x - mean / rescale) /
(std / rescale)``. ``resize_frames`` reproduces the kernel bit for bit without torch.

The prompt's ``<video>`` placeholder expands to ``frames * 196 + 1`` rows: the frames' tokens (the
compressible span) and the ``image_newline`` embedding (``suffix_rows``), never compressed.

Positions after compression: the kept tokens are spliced in the order the method gives them and
the whole prompt is renumbered ``0 .. L-1`` (three equal rows), decoding continuing at ``L``. This
is what the reference implementations do on LLaVA-OV, which assign positions after splicing:
DyToK + VisionZip (per frame: dominant tokens ascending, then contextual tokens in target order;
spec §1.7, §2.5), DyCoke's TTM (pruned frames in ascending-similarity order, §4.2) and the §6
summary, "contiguous 1-D renumbering". Methods inside the LLM (FastV, DyCoke's KV step) see
an unpruned prompt here, so their kept rows keep these ids (§3.2, §4.3).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import PreprocessError
from ..preprocess import VideoPatches
from .base import Family


@dataclass(frozen=True)
class FrameConfig:
    """The manifest's ``preprocess`` section of a LLaVA-OV model."""
    image_size: int = 384
    patch_size: int = 14
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    rescale_factor: float = 1 / 255

    @classmethod
    def from_manifest(cls, section: dict, max_pixels: int | None = None, min_pixels: int | None = None) -> "FrameConfig":
        """Pixel bounds do not apply: every frame is ``image_size`` square (admission refuses them)."""
        return cls(section["image_size"], section["patch_size"], tuple(section["image_mean"]),
                   tuple(section["image_std"]), section.get("rescale_factor", 1 / 255))


def plan(height: int, width: int, frames: int, cfg: FrameConfig) -> tuple[int, int, int]:
    """The patch grid (frames, G, G) of ``frames`` frames of any size (G = image_size / patch_size)."""
    if min(height, width) <= 0:
        raise PreprocessError(f"frame size must be positive, got {height}x{width}")
    g = cfg.image_size // cfg.patch_size
    return frames, g, g


def _filter(x: np.ndarray) -> np.ndarray:
    """torch's antialiased bicubic filter (a = -0.5), in its own operation order."""
    a = -0.5
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


def _int16_weights(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """torch ``_compute_index_ranges_int16_weights``: tap indices [out, k], integer weights [out, k]
    and their precision (bits), the largest with every weight below 2^15."""
    scale = in_size / out_size
    support = 2.0 * scale if scale >= 1.0 else 2.0
    ksize = int(math.ceil(support)) * 2 + 1
    invscale = 1.0 / scale if scale >= 1.0 else 1.0
    center = scale * (np.arange(out_size) + 0.5)
    xmin = np.maximum((center - support + 0.5).astype(np.int64), 0)
    xsize = np.clip(np.minimum((center + support + 0.5).astype(np.int64), in_size) - xmin, 0, ksize)
    taps = np.arange(ksize)
    valid = taps[None] < xsize[:, None]
    w = np.where(valid, _filter((taps[None] + xmin[:, None] - center[:, None] + 0.5) * invscale), 0.0)
    total = w.sum(axis=1, keepdims=True)
    w = np.where(total != 0, w / np.where(total != 0, total, 1), w)
    precision = 0
    while precision < 22 and int(0.5 + w.max() * (1 << (precision + 1))) < (1 << 15):
        precision += 1
    scaled = w * (1 << precision)
    k = np.where(w < 0, (scaled - 0.5).astype(np.int64), (scaled + 0.5).astype(np.int64))  # C casts truncate
    return np.minimum(xmin[:, None] + taps[None], in_size - 1), np.where(valid, k, 0), precision


def _resample_axis(img: np.ndarray, out_size: int, axis: int) -> np.ndarray:
    index, k, precision = _int16_weights(img.shape[axis], out_size)
    acc = np.full(img.shape[:axis] + (out_size,) + img.shape[axis + 1:], 1 << (precision - 1), np.int64)
    shape = [1] * img.ndim
    shape[axis] = out_size
    for j in range(index.shape[1]):  # one tap at a time: one output-sized buffer
        acc += np.take(img, index[:, j], axis=axis).astype(np.int64) * k[:, j].reshape(shape)
    return np.clip(acc >> precision, 0, 255).astype(np.uint8)


def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """torch's uint8 antialiased bicubic resize of RGB frames to ``size`` square, bit for bit.
    [T, H, W, 3] uint8 -> [T, size, size, 3] uint8"""
    out = []
    for frame in frames:  # per frame: the int64 accumulators stay one frame's size
        if frame.shape[1] != size:
            frame = _resample_axis(frame, size, axis=1)
        if frame.shape[0] != size:
            frame = _resample_axis(frame, size, axis=0)
        out.append(frame)
    return np.stack(out)


def normalize(frames: np.ndarray, cfg: FrameConfig) -> np.ndarray:
    """transformers' fused rescale and normalise: uint8 [..., 3] -> float32 (x - m / r) / (s / r)."""
    scale = np.float32(1.0 / cfg.rescale_factor)
    mean, std = np.asarray(cfg.image_mean, np.float32) * scale, np.asarray(cfg.image_std, np.float32) * scale
    return (frames.astype(np.float32) - mean) / std


def preprocess(frames: np.ndarray, cfg: FrameConfig) -> VideoPatches:
    """RGB uint8 frames [T, H, W, 3] -> ``pixel_values_videos`` of one video [T, 3, S, S] float32,
    with the patch grid (T, S/p, S/p)."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise PreprocessError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    if len(frames) == 0:
        raise PreprocessError("no frames to preprocess")
    grid = plan(frames.shape[1], frames.shape[2], len(frames), cfg)
    pixels = normalize(resize_frames(frames, cfg.image_size), cfg).transpose(0, 3, 1, 2)
    return VideoPatches(np.ascontiguousarray(pixels), grid, (cfg.image_size, cfg.image_size))


def merged_grid(grid: tuple[int, int, int], model: dict) -> tuple[int, int, int]:
    """Patch grid (frames, G, G) -> pooled tokens (frames, P, P), P * P = tokens_per_frame."""
    side = math.isqrt(model["tokens_per_frame"])
    return grid[0], side, side


def frame_feeds(patches: VideoPatches, first: int, count: int, model: dict) -> dict:
    return {"pixel_values": patches.pixel_values[first:first + count]}


def positions(ids: np.ndarray, video_id: int, grid: tuple[int, int, int], seconds_per_group: float,
              model: dict) -> np.ndarray:
    """1-D RoPE: positions 0 .. L-1 on all three rows. [3, L] int64"""
    return np.broadcast_to(np.arange(len(ids), dtype=np.int64), (3, len(ids))).copy()


def newline(manifest, which: str) -> np.ndarray:
    """The ``image_newline`` row after a video's frames. [1, D] float32"""
    return np.load(manifest.path(manifest.model(which)["image_newline"]["file"]), allow_pickle=False)[None].astype(np.float32)


# ---- memory and FLOPs of the vision graph (admission, benchmark floors) -------------------------

FLOAT = 4


def vision_bytes(m: dict, grid: tuple[int, int, int], chunk: int | None) -> float:
    """Transient activation bytes of one vision call over ``chunk`` frames (None: all): per patch
    the hidden, norm, q/k/v, attention output and MLP activations ``10 e + 3 I``, the projector's
    two D-wide outputs, and full attention over each frame's P = G^2 patches (no windows): scores,
    softmax and the probabilities the importance signal is read from, ``3 * heads * P^2`` per frame."""
    t, g, _ = grid
    c = min(chunk or t, t)
    per = g * g
    n = c * per
    e, inter = m["vision_hidden_size"], m["vision_intermediate_size"]
    heads = max(1, e // m["vision_key_dim"])
    return float((n * (10 * e + 3 * inter + 2 * m["hidden_size"]) + 3 * c * heads * per ** 2) * FLOAT)


def pixel_bytes(m: dict, grid: tuple[int, int, int]) -> float:
    """The preprocessed frames [T, 3, S, S] float32, held for the run."""
    return float(grid[0] * 3 * m["image_size"] ** 2 * FLOAT)


def preprocess_bytes(m: dict, grid: tuple[int, int, int]) -> float:
    """The resized uint8 frames and the float32 normalisation temporary."""
    return float(grid[0] * 3 * m["image_size"] ** 2 * (1 + FLOAT))


def vision_flops(m: dict, grid: tuple[int, int, int]) -> float:
    """SigLIP up to the feature layer, projector and pooling over ``grid`` = (frames, G, G).
    Patch embedding ``2 N (3 p^2) e``; per layer ``2 N e 4e`` (q, k, v, out) + ``4 e F P^2`` (scores
    and weighted sum over each frame's P = G^2 patches) + ``2 N 2 e I`` (fc1, fc2); projector
    ``2 N e D + 2 N D D``; pooling ``2 F T P D`` (T pooled tokens per frame)."""
    t, g, _ = grid
    per = g * g
    n = t * per
    e, inter, d = m["vision_hidden_size"], m["vision_intermediate_size"], m["hidden_size"]
    total = 2.0 * n * 3 * m["patch_size"] ** 2 * e
    total += m["vision_depth"] * (2.0 * n * e * 4 * e + 4.0 * e * t * per ** 2 + 2.0 * n * 2 * e * inter)
    return total + 2.0 * n * e * d + 2.0 * n * d * d + 2.0 * t * m["tokens_per_frame"] * per * d


FAMILY = Family("llava_onevision", frames_per_group=1, encoder_slack=False, renumber=True,
                config=FrameConfig.from_manifest, pixel_bounds=lambda section: None, plan=plan, preprocess=preprocess,
                merged_grid=merged_grid, vision_feeds=frame_feeds, positions=positions, suffix_rows=newline,
                vision_bytes=vision_bytes, pixel_bytes=pixel_bytes, preprocess_bytes=preprocess_bytes,
                vision_flops=vision_flops)
