"""Budget contact sheet: sampled frames in time order, each labelled with its group's frame weight
and token budget, kept tokens outlined (dominant green, contextual orange). OpenCV only."""
from __future__ import annotations


import cv2
import numpy as np

from .fileio import atomic_path

DOMINANT = (40, 200, 40)  # BGR
CONTEXTUAL = (0, 150, 255)
LABEL_H = 22


def sheet_size(num_frames: int, tile: tuple[int, int], columns: int) -> tuple[int, int]:
    """(height, width) of a sheet of ``num_frames`` tiles of ``tile = (h, w)``."""
    rows = -(-num_frames // columns)
    return rows * (tile[0] + LABEL_H), min(columns, num_frames) * tile[1]


def contact_sheet(frames: np.ndarray, timestamps: np.ndarray, grid_thw: tuple[int, int, int], kept_source: np.ndarray,
                  kept_dominant: np.ndarray, budgets: np.ndarray, weights: np.ndarray | None, tile_width: int = 224,
                  columns: int = 4, merge_size: int = 2, temporal_patch_size: int = 2) -> np.ndarray:
    """RGB frames [T, H, W, 3] -> BGR sheet. ``kept_source`` indexes the visual span (groups of
    ``h*w/merge^2`` merged tokens in raster order)."""
    t, gh, gw = grid_thw
    rows, cols = gh // merge_size, gw // merge_size
    per_group = rows * cols
    tile_h = int(round(tile_width * frames.shape[1] / frames.shape[2]))
    height, width = sheet_size(len(frames), (tile_h, tile_width), columns)
    sheet = np.full((height, width, 3), 255, np.uint8)
    cell_w, cell_h = tile_width / cols, tile_h / rows
    for i, frame in enumerate(frames):
        g = min(i // temporal_patch_size, t - 1)
        y0, x0 = (i // columns) * (tile_h + LABEL_H), (i % columns) * tile_width
        tile = cv2.resize(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), (tile_width, tile_h), interpolation=cv2.INTER_AREA)
        in_group = (kept_source >= g * per_group) & (kept_source < (g + 1) * per_group)
        for src, dom in zip(kept_source[in_group] - g * per_group, kept_dominant[in_group]):
            r, c = divmod(int(src), cols)
            cv2.rectangle(tile, (int(c * cell_w), int(r * cell_h)), (int((c + 1) * cell_w) - 1, int((r + 1) * cell_h) - 1),
                          DOMINANT if dom else CONTEXTUAL, 1)
        sheet[y0 + LABEL_H:y0 + LABEL_H + tile_h, x0:x0 + tile_width] = tile
        weight = f" w={weights[g]:.3f}" if weights is not None else ""
        cv2.putText(sheet, f"{timestamps[i]:.1f}s g{g}{weight} b={int(budgets[g])}", (x0 + 3, y0 + 15),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return sheet


def write_contact_sheet(path: str, result, **kwargs) -> str:
    """Write the sheet of a pipeline ``Result`` to ``path`` (PNG), atomically."""
    sheet = contact_sheet(result.frames.frames, result.frames.timestamps, result.grid_thw, result.kept_source,
                          result.kept_dominant, result.budgets, result.frame_weights, **kwargs)
    with atomic_path(path, ".png") as tmp:
        if not cv2.imwrite(tmp, sheet):
            raise OSError(f"cannot write {path}")
    return path
