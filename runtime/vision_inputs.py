"""Host-side index math for the Qwen2.5-VL vision graph (window order, rotary ids, segments).

The exported vision graph holds only gathers, matmuls and softmax; everything that depends on
the video's grid is computed here in NumPy and fed as named inputs (mirrors transformers 5.23
``vision_utils.get_vision_window_index`` / ``get_vision_position_ids`` / ``get_vision_cu_seqlens``).

Attention segments (windows, or whole temporal groups for the full-attention blocks) are given
as a padded index matrix ``[segments, max_len]`` with a validity mask and the inverse map back
to patch order, so memory grows with segment size squared, never with the whole video's.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class VisionGeometry:
    patch_size: int = 14
    merge_size: int = 2
    window_size: int = 112


def window_unit_order(grid_thw: tuple[int, int, int], geo: VisionGeometry) -> tuple[np.ndarray, np.ndarray]:
    """Merge units in window order, and each window's length in units. -> ([t*h*w/4], [windows])"""
    t, h, w = grid_thw
    lh, lw = h // geo.merge_size, w // geo.merge_size
    win = geo.window_size // geo.merge_size // geo.patch_size  # window side in merge units
    ph, pw = win - lh % win, win - lw % win  # as transformers: a full extra window when divisible
    index = np.full((t, lh + ph, lw + pw), -1, np.int64)
    index[:, :lh, :lw] = np.arange(t * lh * lw).reshape(t, lh, lw)
    nh, nw = (lh + ph) // win, (lw + pw) // win
    blocks = index.reshape(t, nh, win, nw, win).transpose(0, 1, 3, 2, 4).reshape(t * nh * nw, win * win)
    lengths = (blocks >= 0).sum(axis=1)
    return blocks[blocks >= 0], lengths[lengths > 0]


def rotary_hw(grid_thw: tuple[int, int, int], merge_size: int) -> np.ndarray:
    """(row, col) of every patch in merge-block-major raster order. [t*h*w, 2]"""
    t, h, w = grid_thw
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    shape = (h // merge_size, merge_size, w // merge_size, merge_size)
    rows = rows.reshape(shape).transpose(0, 2, 1, 3).ravel()
    cols = cols.reshape(shape).transpose(0, 2, 1, 3).ravel()
    return np.tile(np.stack([rows, cols], axis=1), (t, 1)).astype(np.int64)


def segment_layout(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Padded gather layout of consecutive segments. lengths [S] ->
    (index [S, Lmax] int64, valid [S, Lmax] bool, inverse [sum(lengths)] int64 into S*Lmax)."""
    lengths = np.asarray(lengths, np.int64)
    longest = int(lengths.max())
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    slots = np.arange(longest)
    valid = slots[None, :] < lengths[:, None]
    index = np.where(valid, starts[:, None] + slots[None, :], 0)
    inverse = (np.arange(len(lengths))[:, None] * longest + slots[None, :])[valid]
    return index.astype(np.int64), valid, inverse.astype(np.int64)


def vision_feeds(grid_thw: tuple[int, int, int], geo: VisionGeometry = VisionGeometry()) -> dict[str, np.ndarray]:
    """Every grid-dependent input of the vision graph, for one video of patch grid ``grid_thw``."""
    t, h, w = grid_thw
    unit = geo.merge_size ** 2
    units, window_units = window_unit_order(grid_thw, geo)
    patch_order = (units[:, None] * unit + np.arange(unit)[None, :]).ravel()
    win_index, win_valid, win_inverse = segment_layout(window_units * unit)
    full_index, full_valid, full_inverse = segment_layout(np.full(t, h * w))
    return {
        "patch_order": patch_order.astype(np.int64),  # window order of patches [N]
        "rotary_hw": rotary_hw(grid_thw, geo.merge_size)[patch_order],  # [N, 2]
        "window_index": win_index, "window_valid": win_valid, "window_inverse": win_inverse,
        "full_index": full_index, "full_valid": full_valid, "full_inverse": full_inverse,
        "unit_inverse": np.argsort(units).astype(np.int64),  # window order -> raster, merged tokens
    }
