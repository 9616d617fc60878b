"""Qwen2.5-VL: smart-resized frames in 2-frame temporal patches, a windowed ViT with 2x2 merging,
M-RoPE positions. Kept tokens keep their original M-RoPE ids (spec §2.5, the FlashVID convention)."""
from __future__ import annotations

import numpy as np

from ..errors import PreprocessError
from ..flops import vision_flops
from ..notes import note
from ..positions import mrope_positions
from ..preprocess import PreprocessConfig, VideoPatches, plan_grid, preprocess_video
from ..vision_inputs import VisionGeometry, vision_feeds
from .base import Family

FLOAT = 4


def merged_grid(grid_thw: tuple[int, int, int], model: dict) -> tuple[int, int, int]:
    """Patch grid (t, h, w) -> the LLM's tokens per axis (t, h / merge, w / merge)."""
    return grid_thw[0], grid_thw[1] // model["merge_size"], grid_thw[2] // model["merge_size"]


def group_feeds(patches: VideoPatches, first: int, count: int, model: dict) -> dict:
    _, h, w = patches.grid_thw
    geo = VisionGeometry(model["patch_size"], model["merge_size"], model["window_size"])
    return {"pixel_values": patches.pixel_values[first * h * w:(first + count) * h * w], **vision_feeds((count, h, w), geo)}


def positions(ids: np.ndarray, video_id: int, grid_thw: tuple[int, int, int], seconds_per_group: float,
              model: dict) -> np.ndarray:
    return mrope_positions(ids, video_id, [grid_thw], [seconds_per_group], model["merge_size"],
                           model["tokens_per_second"])[0]


def no_suffix(manifest, which: str) -> np.ndarray:
    return np.zeros((0, manifest.model(which)["hidden_size"]), np.float32)


def patch_dim(m: dict) -> int:
    return 3 * m.get("temporal_patch_size", 2) * m["patch_size"] ** 2


def vision_bytes(m: dict, grid: tuple[int, int, int], chunk: int | None) -> float:
    """Transient activation bytes of one vision call over ``chunk`` temporal groups (None: all) of
    ``P`` patches: hidden/qkv/MLP activations ``n * (10 e + 3 I)`` floats plus the patch input, the
    full-attention scores ``3 * chunk * heads * P^2`` (scores, bias, softmax: each full-attention
    block attends within one group) and the windowed blocks' ``3 * n * heads * window``."""
    t, h, w = grid
    c = min(chunk or t, t)
    per_group = h * w
    n = c * per_group
    e, inter = m["vision_hidden_size"], m["vision_intermediate_size"]
    heads = max(1, e // m["vision_key_dim"])
    window = (m["window_size"] // m["patch_size"]) ** 2
    acts = n * (10 * e + 3 * inter + patch_dim(m)) + 3 * c * heads * per_group ** 2 + 3 * n * heads * window
    return float(acts * FLOAT)


def pixel_bytes(m: dict, grid: tuple[int, int, int]) -> float:
    """The patches ``[t*h*w, 3*tp*p^2]`` float32, held for the run."""
    return float(grid[0] * grid[1] * grid[2] * patch_dim(m) * FLOAT)


def preprocess_bytes(m: dict, grid: tuple[int, int, int]) -> float:
    """Resized frames in float64 and float32 plus the patch copy (``preprocess_video``)."""
    return float(grid[0] * grid[1] * grid[2] * patch_dim(m) * (8 + 4 + 4))


def check_pixels(section: dict, max_pixels: int | None, min_pixels: int | None) -> tuple[int | None, int | None]:
    """A frame is at least one merged 2x2 patch (28x28 = 784 pixels); a minimum above the maximum
    is lowered to it (one note)."""
    unit = (section["patch_size"] * section["merge_size"]) ** 2
    for flag, value in (("--max-pixels", max_pixels), ("--min-pixels", min_pixels)):
        if value is not None and value < unit:
            raise PreprocessError(f"{flag} {value}: a frame needs at least one {int(unit ** 0.5)}x{int(unit ** 0.5)} "
                                  f"merged patch ({unit} pixels)")
    low = min_pixels or section["min_pixels"]
    if max_pixels is not None and max_pixels < low:
        note(f"--max-pixels {max_pixels} is below the minimum of {low} pixels per frame; the minimum is lowered to it")
        min_pixels = max_pixels
    return max_pixels, min_pixels


FAMILY = Family("qwen2_5_vl", frames_per_group=2, encoder_slack=True, renumber=False,
                config=PreprocessConfig.from_manifest,
                pixel_bounds=lambda section: (section["min_pixels"], section["max_pixels"]), plan=plan_grid,
                preprocess=preprocess_video, merged_grid=merged_grid, vision_feeds=group_feeds, positions=positions,
                suffix_rows=no_suffix, vision_bytes=vision_bytes, pixel_bytes=pixel_bytes,
                preprocess_bytes=preprocess_bytes, vision_flops=vision_flops, check_pixels=check_pixels)
