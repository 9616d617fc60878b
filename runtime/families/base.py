"""What one model family does differently on the runtime side, declared as plain functions: the
pipeline, admission and the benchmark ask each model's family (``runtime.families.family_of``)
instead of branching on its name."""
from __future__ import annotations

from collections.abc import Callable
import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..preprocess import VideoPatches

Grid = tuple[int, int, int]


@dataclass(frozen=True)
class Family:
    """A model family's preprocessing, vision feeds, prompt and positions, and its vision costs.

    ``config(section, max_pixels, min_pixels)``: the preprocessing config from the model's
    ``preprocess`` section (pixel bounds override it where the family has them: ``pixel_bounds(section)
    -> (min, max)``, None where every frame is encoded at one fixed size). ``plan(height, width,
    frames, config) -> input grid``: the grid ``preprocess`` will give, before any pixel moves
    (admission plans with it). ``preprocess(frames [T, H, W, 3] uint8, config) -> VideoPatches``.
    ``merged_grid(input grid, model) -> (groups, rows, cols)``: the LLM's visual tokens per axis
    (budgets are per group). ``vision_feeds(patches, first, count, model) -> feeds``: the vision
    graph's inputs for groups ``first .. first+count-1``. ``positions(ids [L], video_id, input grid,
    seconds_per_group, model) -> [3, L] int64``: the LLM's position ids (three equal rows for 1-D
    RoPE). ``suffix_rows(manifest, which) -> [E, D] float32``: embeddings of the rows the video
    placeholder expands to after the visual span (not compressible; E = 0 for none).
    ``frames_per_group``: frames one group holds. ``encoder_slack``: budget-aware encoder
    resolution (groups at their own grids) applies. ``renumber``: after compression the prompt is
    renumbered 0 .. L-1 with the kept tokens in the method's order (1-D RoPE references); else kept
    tokens keep their original ids, in span order.
    ``vision_bytes(model, grid, chunk)``, ``pixel_bytes(model, grid)``, ``preprocess_bytes(model,
    grid)``: one vision call's transient activations, the preprocessed input held for the run,
    preprocessing's transients (admission). ``vision_flops(model, grid)``: the vision graph's FLOPs.
    ``check_pixels(section, max_pixels, min_pixels) -> (max_pixels, min_pixels)``: the pixel bounds
    a request asked for, checked (an error naming the flag) and adjusted (a note); None for a
    family that encodes every frame at one fixed size (pixel bounds do not apply)."""
    name: str
    frames_per_group: int
    encoder_slack: bool
    renumber: bool
    config: Callable[[dict, int | None, int | None], Any]
    pixel_bounds: Callable[[dict], tuple[int, int] | None]
    plan: Callable[[int, int, int, Any], Grid]
    preprocess: Callable[[np.ndarray, Any], VideoPatches]
    merged_grid: Callable[[Grid, dict], Grid]
    vision_feeds: Callable[[VideoPatches, int, int, dict], dict]
    positions: Callable[[np.ndarray, int, Grid, float, dict], np.ndarray]
    suffix_rows: Callable[[Any, str], np.ndarray]
    vision_bytes: Callable[[dict, Grid, int | None], float]
    pixel_bytes: Callable[[dict, Grid], float]
    preprocess_bytes: Callable[[dict, Grid], float]
    vision_flops: Callable[[dict, Grid], float]
    check_pixels: Callable[[dict, int | None, int | None], tuple[int | None, int | None]] | None = None

    def same_patches(self, shape: tuple[int, int, int], a: Any, b: Any) -> bool:
        """Whether configs ``a`` and ``b`` give the same patches of frames of ``shape`` (T, H, W):
        equal, or equal but for pixel bounds that plan the same grid."""
        if a == b:
            return True
        bounds = {k: 0 for k in ("min_pixels", "max_pixels") if hasattr(a, k)}
        return (type(a) is type(b) and bool(bounds) and dataclasses.replace(a, **bounds) == dataclasses.replace(b, **bounds)
                and self.plan(shape[1], shape[2], shape[0], a) == self.plan(shape[1], shape[2], shape[0], b))
