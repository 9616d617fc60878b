"""VisionZip: dominant tokens by importance, contextual tokens by merging into strided targets.

``visionzip`` is the per-frame primitive of spec §2.1; ``visionzip_groups`` applies it per
temporal group at merged-token granularity with per-group budgets (Qwen2.5-VL form, §2.2(c)).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import BudgetError, ShapeError
from .dytok import split_dominant_contextual


@dataclass(frozen=True)
class KeptTokens:
    tokens: np.ndarray  # [K, D] output vectors
    source: np.ndarray  # [K] int64 index of the token each output sits at (dominant: itself; contextual: its target)
    dominant: np.ndarray  # [K] bool, True for dominant tokens


def strided_targets(n: int, c: int) -> np.ndarray:
    """Target positions into the remaining list: stride ``max(1, n // c)``, first ``c``. [c]"""
    if c <= 0:
        return np.zeros(0, np.int64)
    return (np.arange(c) * max(1, n // c)).astype(np.int64)


def visionzip(tokens: np.ndarray, importance: np.ndarray, metric: np.ndarray, dominant: int,
              contextual: int) -> KeptTokens:
    """One frame. tokens [T, D], importance [T], metric [T, dk] -> d + c tokens.

    Output order as the reference: dominant in ascending index, then contextual by target.
    """
    n_tok = len(tokens)
    if importance.shape != (n_tok,) or metric.ndim != 2 or len(metric) != n_tok:
        raise ShapeError(f"tokens {tokens.shape}, importance {importance.shape}, metric {metric.shape} disagree")
    if dominant < 0 or contextual < 0 or dominant + contextual > n_tok:
        raise BudgetError(f"budget {dominant} dominant + {contextual} contextual exceeds the {n_tok} tokens of the frame")
    dom = np.sort(np.argsort(-np.asarray(importance), kind="stable")[:dominant])
    if contextual == 0:
        return KeptTokens(tokens[dom], dom.astype(np.int64), np.ones(len(dom), bool))
    remaining = np.setdiff1d(np.arange(n_tok), dom)
    unit = metric[remaining].astype(np.float32)
    unit = unit / np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-12)
    targets = strided_targets(len(remaining), contextual)
    is_target = np.zeros(len(remaining), bool)
    is_target[targets] = True
    others = np.flatnonzero(~is_target)
    assign = np.argmax(unit[others] @ unit[targets].T, axis=1)  # first maximum on ties
    values = tokens[remaining].astype(np.float32)
    sums = np.zeros((len(targets), tokens.shape[1]), np.float32)
    np.add.at(sums, assign, values[others])
    counts = np.bincount(assign, minlength=len(targets)).astype(np.float32)
    merged = values[targets] + sums / np.maximum(counts, 1)[:, None]
    out = np.concatenate([tokens[dom].astype(np.float32), merged]).astype(tokens.dtype)
    source = np.concatenate([dom, remaining[targets]]).astype(np.int64)
    return KeptTokens(out, source, np.arange(len(out)) < len(dom))


def visionzip_groups(tokens: np.ndarray, importance: np.ndarray, metric: np.ndarray, budgets: np.ndarray,
                     raster_order: bool = True) -> KeptTokens:
    """Per-group VisionZip. tokens [F*T, D], importance [F*T], metric [F*T, dk], budgets [F].

    Each group's budget is split 6:1 (DyToK). ``source`` indexes the full [F*T] span. With
    ``raster_order`` the kept tokens are put back in original order (for M-RoPE gathers).
    """
    budgets = np.asarray(budgets, np.int64)
    n_groups = len(budgets)
    if n_groups == 0 or len(tokens) % n_groups:
        raise ShapeError(f"{len(tokens)} tokens cannot be split into {n_groups} equal groups")
    per = len(tokens) // n_groups
    dom, ctx = split_dominant_contextual(budgets)
    parts = []
    for g in range(n_groups):
        sl = slice(g * per, (g + 1) * per)
        kept = visionzip(tokens[sl], importance[sl], metric[sl], int(dom[g]), int(ctx[g]))
        order = np.argsort(kept.source, kind="stable") if raster_order else np.arange(len(kept.source))
        parts.append(KeptTokens(kept.tokens[order], kept.source[order] + g * per, kept.dominant[order]))
    return KeptTokens(np.concatenate([p.tokens for p in parts]), np.concatenate([p.source for p in parts]),
                      np.concatenate([p.dominant for p in parts]))


def pool_merge_units(patch_values: np.ndarray, unit: int = 4) -> np.ndarray:
    """Average consecutive ``unit`` patch rows (one 2x2 merge unit) into one merged-token row.
    [N*unit, ...] -> [N, ...]"""
    v = np.asarray(patch_values)
    if len(v) % unit:
        raise ShapeError(f"{len(v)} patch rows are not a multiple of the merge unit {unit}")
    return v.reshape(len(v) // unit, unit, *v.shape[1:]).mean(axis=1)
