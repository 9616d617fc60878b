"""M-RoPE position ids for Qwen2.5-VL prompts, and their gather after token pruning.

Mirrors transformers 5.23 ``Qwen2_5_VLModel.get_rope_index``: text runs count up by one on all
three axes; a video span of ``(t, h, w)`` merged tokens gets temporal ids
``floor(i * tokens_per_second * second_per_grid) + start`` and spatial ids ``row + start``,
``col + start``; the text after it continues at ``start + max(h, w)``. The rope delta is
``max(position) + 1 - sequence length``.

After pruning, kept tokens keep their original (t, h, w) ids (a gather); decoding continues from
the original maximum + 1 (``next_position``), the FlashVID convention (spec §2.5).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import ShapeError


def vision_span_positions(start: int, llm_grid: tuple[int, int, int], time_interval: float) -> np.ndarray:
    """Ids of one vision span of ``llm_grid = (t, h, w)`` merged tokens starting at ``start``. [3, t*h*w]"""
    t, h, w = llm_grid
    temporal = (np.arange(t) * time_interval).astype(np.int64) + start
    rows = np.arange(h, dtype=np.int64) + start
    cols = np.arange(w, dtype=np.int64) + start
    tt, hh, ww = np.meshgrid(temporal, rows, cols, indexing="ij")
    return np.stack([tt, hh, ww]).reshape(3, -1)


def mrope_positions(
    input_ids: np.ndarray,
    video_token_id: int,
    video_grid_thw: Sequence[tuple[int, int, int]],
    second_per_grid: Sequence[float],
    spatial_merge_size: int = 2,
    tokens_per_second: float = 2.0,
    image_token_id: int | None = None,
    image_grid_thw: Sequence[tuple[int, int, int]] = (),
) -> tuple[np.ndarray, int]:
    """Position ids for one prompt. input_ids [L] -> (positions [3, L] int64, rope_delta).

    ``video_grid_thw`` are patch grids (as the preprocessor returns them); each run of
    ``video_token_id`` consumes the next grid, which must match its length.
    """
    input_ids = np.asarray(input_ids)
    if input_ids.ndim != 1:
        raise ShapeError(f"input_ids must be 1-D, got shape {input_ids.shape}")
    kind = np.zeros(len(input_ids), np.int8)
    kind[input_ids == video_token_id] = 2
    if image_token_id is not None:
        kind[input_ids == image_token_id] = 1
    grids = {1: iter(image_grid_thw), 2: iter(zip(video_grid_thw, second_per_grid))}
    pieces, pos, i = [], 0, 0
    while i < len(kind):
        j = i
        while j < len(kind) and kind[j] == kind[i]:
            j += 1
        if kind[i] == 0:
            pieces.append(np.broadcast_to(np.arange(pos, pos + j - i), (3, j - i)))
            pos += j - i
        else:
            try:
                item = next(grids[int(kind[i])])
            except StopIteration:
                raise ShapeError(f"prompt has more vision spans than grids (span at token {i})") from None
            (t, h, w), interval = (item, 1.0) if kind[i] == 1 else (item[0], tokens_per_second * item[1])
            llm_grid = (t, h // spatial_merge_size, w // spatial_merge_size)
            n = llm_grid[0] * llm_grid[1] * llm_grid[2]
            if n != j - i:
                raise ShapeError(f"vision span at token {i} has {j - i} tokens but grid {(t, h, w)} gives {n}")
            pieces.append(vision_span_positions(pos, llm_grid, interval))
            pos += max(llm_grid[1], llm_grid[2])
        i = j
    positions = np.concatenate(pieces, axis=1).astype(np.int64) if pieces else np.zeros((3, 0), np.int64)
    delta = int(positions.max()) + 1 - len(input_ids) if len(input_ids) else 0
    return positions, delta


def gather_positions(positions: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Original ids of the kept sequence slots. positions [3, L], keep [K] -> [3, K]"""
    return positions[:, np.asarray(keep, np.int64)]


def next_position(positions: np.ndarray) -> int:
    """First decode position: the original (unpruned) maximum + 1."""
    return int(positions.max()) + 1


def decode_positions(start: int, count: int = 1) -> np.ndarray:
    """Ids of ``count`` generated tokens from ``start``, equal on all three axes. [3, count]"""
    return np.broadcast_to(np.arange(start, start + count, dtype=np.int64), (3, count)).copy()


def kept_sequence_indices(num_tokens: int, vision_start: int, vision_len: int, kept_vision: np.ndarray) -> np.ndarray:
    """Sequence slots that survive when only ``kept_vision`` (local indices) of the span stay. [K]"""
    kept_vision = np.asarray(kept_vision, np.int64)
    return np.concatenate([
        np.arange(vision_start), vision_start + np.sort(kept_vision),
        np.arange(vision_start + vision_len, num_tokens)]).astype(np.int64)


def mrope_positions_grouped(input_ids: np.ndarray, video_token_id: int, group_grids: Sequence[tuple[int, int]],
                            time_interval: float) -> np.ndarray:
    """Ids for a prompt whose one video span holds temporal groups of different merged grids
    (budget-aware encoder resolution). input_ids [L], group_grids [(rows, cols)] per group ->
    positions [3, L] int64.

    Group g gets temporal id ``floor(g * time_interval) + start`` and spatial ids on its own grid;
    text after the span continues at ``start + max(rows, cols)`` over all groups. With every group
    at one grid this equals ``mrope_positions`` for that video."""
    input_ids = np.asarray(input_ids)
    where = np.flatnonzero(input_ids == video_token_id)
    n = sum(a * b for a, b in group_grids)
    if len(where) != n or (n and where[-1] - where[0] + 1 != n):
        raise ShapeError(f"prompt has {len(where)} video tokens (contiguous: {n and where[-1] - where[0] + 1 == len(where)}) "
                         f"but the group grids give {n}")
    start = int(where[0]) if n else len(input_ids)
    temporal = (np.arange(len(group_grids)) * time_interval).astype(np.int64) + start
    span = [np.concatenate([np.full((1, a * b), temporal[g]), vision_span_positions(start, (1, a, b), 1.0)[1:]])
            for g, (a, b) in enumerate(group_grids)]
    after = start + max((max(a, b) for a, b in group_grids), default=0)
    tail = len(input_ids) - start - n
    pieces = [np.broadcast_to(np.arange(start), (3, start)), *span,
              np.broadcast_to(np.arange(after, after + tail), (3, tail))]
    return np.concatenate(pieces, axis=1).astype(np.int64)
