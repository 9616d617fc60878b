"""DynTok (arXiv 2506.03990): merge runs of similar left-right neighbours into one token.

No public code exists; this is the reconstruction of spec §5, every point of it unconfirmed:
similarity is the cosine of each token to its left neighbour in ``features`` (encoder side),
groups chain through that link inside a row, and a group becomes the mean of its ``values``.
A merged token takes its first (leftmost) member's position.

Budget mode (ours, so DynTok can serve DyToK's per-frame budgets): instead of a fixed threshold,
cut the ``budget - 1`` weakest links of the frame's raster chain, where links across row ends are
cut first (so groups stay within rows whenever ``budget >= rows``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import BudgetError, ShapeError
from .method import Kept, Method, Request


@dataclass(frozen=True)
class MergedTokens:
    tokens: np.ndarray  # [K, D] mean of each group's values
    source: np.ndarray  # [K] int64 index of each group's first member
    sizes: np.ndarray  # [K] int64 group sizes


def link_similarity(features: np.ndarray, width: int) -> np.ndarray:
    """Cosine of each token to its left neighbour in a raster frame; -inf across row ends.
    features [h*w, d] -> [h*w - 1] (link j joins token j and j+1)."""
    f = features.astype(np.float32)
    f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    sim = (f[:-1] * f[1:]).sum(axis=1)
    sim[np.arange(1, len(f)) % width == 0] = -np.inf
    return sim


def _merge(values: np.ndarray, cuts: np.ndarray) -> MergedTokens:
    starts = np.concatenate([[0], np.flatnonzero(cuts) + 1]).astype(np.int64)
    sizes = np.diff(np.append(starts, len(values)))
    sums = np.add.reduceat(values.astype(np.float32), starts, axis=0)
    return MergedTokens((sums / sizes[:, None]).astype(values.dtype), starts, sizes)


def dyntok_frame(features: np.ndarray, values: np.ndarray, width: int, threshold: float = 0.6,
                 budget: int | None = None) -> MergedTokens:
    """One frame of ``h*w`` raster tokens. features [h*w, d], values [h*w, D].

    Threshold mode: a link is kept when its cosine exceeds ``threshold``. Budget mode: exactly
    ``budget`` groups (0 gives none).
    """
    n = len(values)
    if len(features) != n or n % width:
        raise ShapeError(f"features {features.shape} / values {values.shape} are not a raster of width {width}")
    sim = link_similarity(features, width)
    if budget is None:
        cuts = ~(sim > threshold)
    else:
        if not 0 <= budget <= n:
            raise BudgetError(f"budget {budget} is outside [0, {n}] tokens")
        if budget == 0:
            return MergedTokens(values[:0], np.zeros(0, np.int64), np.zeros(0, np.int64))
        cuts = np.zeros(n - 1, bool)
        cuts[np.argsort(sim, kind="stable")[:budget - 1]] = True
    return _merge(values, cuts)


def dyntok_groups(features: np.ndarray, values: np.ndarray, num_groups: int, width: int,
                  budgets: np.ndarray | None = None, threshold: float = 0.6) -> MergedTokens:
    """DynTok per group over a span [F*h*w, ...]; ``source`` indexes the span."""
    if num_groups <= 0 or len(values) % num_groups:
        raise ShapeError(f"{len(values)} tokens cannot be split into {num_groups} groups")
    per = len(values) // num_groups
    parts = []
    for g in range(num_groups):
        sl = slice(g * per, (g + 1) * per)
        b = None if budgets is None else int(budgets[g])
        m = dyntok_frame(features[sl], values[sl], width, threshold, b)
        parts.append(MergedTokens(m.tokens, m.source + g * per, m.sizes))
    return MergedTokens(np.concatenate([p.tokens for p in parts]), np.concatenate([p.source for p in parts]),
                        np.concatenate([p.sizes for p in parts]))


def _compress(vision: dict, request: Request) -> Kept:
    merged = dyntok_groups(vision["metric"], vision["tokens"], request.grid[0], request.grid[2], budgets=request.budgets)
    return Kept(merged.tokens, merged.source, np.ones(len(merged.source), bool))


METHOD = Method("dyntok", "DynTok", _compress, per_group=True)
