"""What one model family does differently on the runtime side, declared as plain functions: the
pipeline, admission and the benchmark ask the manifest's family (``runtime.families.family_of``)
instead of branching on its name."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..preprocess import VideoPatches


@dataclass(frozen=True)
class Family:
    """A model family's preprocessing, vision feeds and positions.

    ``config(section, max_pixels, min_pixels)``: the preprocessing config from the manifest's
    ``preprocess`` section (pixel bounds override it where the family has them).
    ``plan(height, width, frames, config) -> input grid``: the grid ``preprocess`` will give,
    before any pixel moves (admission plans with it). ``preprocess(frames [T, H, W, 3] uint8,
    config) -> VideoPatches``. ``merged_grid(input grid, model) -> (groups, rows, cols)``: the
    LLM's visual tokens per axis (budgets are per group). ``vision_feeds(patches, first, count,
    model) -> feeds``: the vision graph's inputs for groups ``first .. first+count-1``.
    ``positions(ids [L], video_id, input grid, seconds_per_group, model) -> [3, L] int64``: the
    LLM's position ids (three equal rows for 1-D RoPE). ``frames_per_group``: frames one group holds.
    ``encoder_slack``: budget-aware encoder resolution (groups at their own grids) applies.
    ``check_pixels(section, max_pixels, min_pixels) -> (max_pixels, min_pixels)``: the pixel bounds
    a request asked for, checked (an error naming the flag) and adjusted (a note); None for a
    family that encodes every frame at one fixed size (pixel bounds do not apply)."""
    name: str
    frames_per_group: int
    encoder_slack: bool
    config: Callable[[dict, int | None, int | None], Any]
    plan: Callable[[int, int, int, Any], tuple[int, int, int]]
    preprocess: Callable[[np.ndarray, Any], VideoPatches]
    merged_grid: Callable[[tuple[int, int, int], dict], tuple[int, int, int]]
    vision_feeds: Callable[[VideoPatches, int, int, dict], dict]
    positions: Callable[[np.ndarray, int, tuple[int, int, int], float, dict], np.ndarray]
    check_pixels: Callable[[dict, int | None, int | None], tuple[int | None, int | None]] | None = None
