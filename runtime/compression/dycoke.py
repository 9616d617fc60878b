"""DyCoke (arXiv 2411.15024): temporal token merging (TTM) and the decode-time KV selection.

``ttm`` reproduces ``dycole_ttm`` of KD-TAO/DyCoke (spec §4.2), quirks included: pruned frames
keep their least-similar tokens in ascending-similarity order; the last 4-frame window is never
pruned by stage 2; an odd last frame is dropped (``drop_odd_last=True``, the reference).
Deliberate deviation: where the reference crashes (fewer than 2 frames, or no stage-2 window
when F <= 4), stage 1 or stage 2 is simply skipped.
"""
from __future__ import annotations

import numpy as np

from ..errors import BudgetError, ShapeError
from ..positions import kept_sequence_indices
from .method import Kept, Method, Request


def _cos_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.astype(np.float32)
    b = b.astype(np.float32)
    den = np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    return (a * b).sum(axis=1) / den


def ttm_keep(n_per_frame: int, prune_ratio: float) -> int:
    """Tokens a pruned frame keeps: ``int((1 - K) * T)`` in float64 (0.7, 196 -> 58)."""
    if not 0 <= prune_ratio <= 1:
        raise BudgetError(f"TTM prune ratio must be in [0, 1], got {prune_ratio}")
    return int((1 - prune_ratio) * n_per_frame)


def ttm(tokens: np.ndarray, num_frames: int, prune_ratio: float = 0.7, drop_odd_last: bool = True) -> np.ndarray:
    """Kept source indices of TTM, in output order. tokens [F*T, D] -> indices [K] into [F*T].

    Stage 1 prunes frame i+1 against i for pairs (0,1), (2,3), ...; stage 2 prunes frame i+2
    against i for i = 0, 4, ... while i < F - 4, comparing with the unpruned frame i+2.
    """
    if num_frames <= 0 or len(tokens) % num_frames:
        raise ShapeError(f"{len(tokens)} tokens cannot be split into {num_frames} frames")
    per = len(tokens) // num_frames
    n_keep = ttm_keep(per, prune_ratio)
    x = tokens.reshape(num_frames, per, -1)
    kept: list[np.ndarray] = [np.arange(per) for _ in range(num_frames)]
    for i in range(0, num_frames - 1, 2):
        kept[i + 1] = np.argsort(_cos_rows(x[i], x[i + 1]), kind="stable")[:n_keep]
    for i in range(0, num_frames - 4, 4):
        kept[i + 2] = np.argsort(_cos_rows(x[i], x[i + 2]), kind="stable")[:n_keep]
    last = num_frames - 1 if (drop_odd_last and num_frames % 2 and num_frames > 1) else num_frames
    return np.concatenate([kept[f] + f * per for f in range(last)]).astype(np.int64)


def kv_keep(beta: np.ndarray, beta_prev: np.ndarray | None, vision_start: int, seq_len: int,
            prune_ratio: float = 0.8, threshold: float = 0.9) -> np.ndarray | None:
    """One decode step of DyCoke's KV pruning (spec §4.3). Returns kept cache rows for layers >= L,
    or None when attention is stable (cos(beta, beta_prev) >= threshold: no pruning this step).

    beta [V]: head-mean attention of the new token over the visual span at layer L-1;
    the caller carries ``beta`` as the next step's ``beta_prev`` (reset per request).
    """
    beta = np.asarray(beta, np.float32)
    n_vis = len(beta)
    if beta_prev is not None:
        beta_prev = np.asarray(beta_prev, np.float32)
        if beta_prev.shape != beta.shape:
            raise ShapeError(f"previous attention {beta_prev.shape} does not match {beta.shape}")
        rho = float(beta @ beta_prev / max(np.linalg.norm(beta) * np.linalg.norm(beta_prev), 1e-12))
    else:
        rho = 0.0
    if rho >= threshold:
        return None
    n_kv = int(n_vis * (1 - prune_ratio))
    top = np.argsort(-beta, kind="stable")[:n_kv]
    return kept_sequence_indices(seq_len, vision_start, n_vis, top)


def _compress(vision: dict, request: Request) -> Kept:
    # TTM keeps anchor frames whole; its prune ratio is chosen so that the average kept share
    # matches the retention (about 3 in 4 groups are pruned). Budgets do not apply.
    k = float(np.clip((1 - request.retention) * 4 / 3, 0, 1))
    tokens = vision["tokens"]
    return Kept.select(tokens, ttm(tokens, request.grid[0], k, drop_odd_last=False))  # TTM's own order


METHOD = Method("dycoke", "DyCoke", _compress, uses_budgets=False)
