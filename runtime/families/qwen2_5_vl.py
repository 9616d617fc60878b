"""Qwen2.5-VL: smart-resized frames in 2-frame temporal patches, a windowed ViT with 2x2 merging,
M-RoPE positions."""
from __future__ import annotations

import numpy as np

from ..errors import PreprocessError
from ..notes import note
from ..positions import mrope_positions
from ..preprocess import PreprocessConfig, VideoPatches, plan_grid, preprocess_video
from ..vision_inputs import VisionGeometry, vision_feeds
from .base import Family


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


FAMILY = Family("qwen2_5_vl", frames_per_group=2, encoder_slack=True, config=PreprocessConfig.from_manifest,
                plan=plan_grid, preprocess=preprocess_video, merged_grid=merged_grid, vision_feeds=group_feeds,
                positions=positions, check_pixels=check_pixels)
