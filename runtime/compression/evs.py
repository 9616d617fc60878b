"""EVS, Efficient Video Sampling (arXiv 2510.14624; vLLM ``vllm/multimodal/evs.py``): query-agnostic
pruning of merged video tokens that barely changed since the previous temporal group (spec §5b).

``evs_mask`` is the reference rule: a global top-K of the dissimilarity. ``evs_groups`` is our
extension for DyToK (no reference): per-group budgets from the keyframe prior replace the global
top-K, each group keeping its ``b_g`` most changed tokens. Kept tokens keep their original order
(and, in the pipeline, their original 3-D M-RoPE ids; vLLM instead renumbers positions).
"""
from __future__ import annotations

import numpy as np

from ..errors import BudgetError, ShapeError
from .method import Kept, Method, Request

FIRST_GROUP = 255.0  # d of the first group: always kept whole by the global rule
EPS = 1e-8  # torch.nn.functional.cosine_similarity's clamp of each norm


def _grid(tokens: np.ndarray, groups: int) -> np.ndarray:
    tokens = np.asarray(tokens)
    if tokens.ndim == 2:
        if groups <= 0 or len(tokens) % groups:
            raise ShapeError(f"{len(tokens)} tokens cannot be split into {groups} temporal groups")
        tokens = tokens.reshape(groups, len(tokens) // groups, -1)
    if tokens.ndim != 3 or tokens.shape[0] != groups:
        raise ShapeError(f"tokens must be [T*h*w, D] or [T, h*w, D] with T = {groups}, got {tokens.shape}")
    return tokens


def evs_dissimilarity(tokens: np.ndarray, groups: int) -> np.ndarray:
    """tokens [T*h*w, D] (raster order per group) or [T, h*w, D] -> d [T, h*w] float32:
    ``1 - cos(X[t, i], X[t-1, i])`` for t >= 1 and 255 for the first group."""
    x = _grid(tokens, groups).astype(np.float32)
    d = np.full(x.shape[:2], FIRST_GROUP, np.float32)
    if len(x) > 1:
        norm = np.maximum(np.linalg.norm(x, axis=2), EPS)
        cos = (x[1:] * x[:-1]).sum(axis=2) / (norm[1:] * norm[:-1])
        d[1:] = 1.0 - cos
    return d


def evs_keep_count(groups: int, per_group: int, pruning_rate: float) -> int:
    """``max(h*w, int(T*h*w*(1 - q)))`` in Python float arithmetic (q = 0.2, 6 tokens -> 4)."""
    if not 0 <= pruning_rate < 1:
        raise BudgetError(f"EVS pruning rate must be in [0, 1), got {pruning_rate}")
    return max(per_group, int(groups * per_group * (1 - pruning_rate)))


def evs_mask(tokens: np.ndarray, groups: int, pruning_rate: float) -> np.ndarray:
    """The reference rule: keep the K most dissimilar tokens by a stable descending sort of the
    flattened d (ties: lower index first). tokens as ``evs_dissimilarity`` -> mask [T*h*w] bool."""
    d = evs_dissimilarity(tokens, groups).reshape(-1)
    k = evs_keep_count(groups, len(d) // groups, pruning_rate)
    mask = np.zeros(len(d), bool)
    mask[np.argsort(-d, kind="stable")[:k]] = True
    return mask


def evs_groups(tokens: np.ndarray, budgets: np.ndarray) -> np.ndarray:
    """DyToK + EVS (our extension): group g keeps its ``budgets[g]`` most dissimilar tokens (stable,
    so the first group keeps its first ``b_0`` in raster order). tokens [T*h*w, D], budgets [T]
    -> kept indices into [T*h*w], ascending."""
    budgets = np.asarray(budgets, np.int64)
    d = evs_dissimilarity(tokens, len(budgets))
    per = d.shape[1]
    if (budgets < 0).any() or (budgets > per).any():
        raise BudgetError(f"group budgets must be within [0, {per}], got {budgets.tolist()}")
    kept = [np.argsort(-row, kind="stable")[:b] + g * per for g, (row, b) in enumerate(zip(d, budgets))]
    return np.sort(np.concatenate(kept)).astype(np.int64)


def _compress(vision: dict, request: Request) -> Kept:
    """With the prior: DyToK+EVS per-group budgets; without: EVS's own global top-K."""
    tokens, groups = vision["tokens"], request.grid[0]
    if request.prior:
        return Kept.select(tokens, evs_groups(tokens, request.budgets))
    share = request.retention if request.budget is None else request.budget / request.per_group
    return Kept.select(tokens, np.flatnonzero(evs_mask(tokens, groups, 1 - share)))


METHOD = Method("evs", "EVS", _compress, baseline=True)
