"""VisionZip: dominant tokens by importance, contextual tokens by merging into strided targets.

``visionzip`` is the per-frame primitive of spec §2.1; ``visionzip_groups`` applies it per
temporal group at merged-token granularity with per-group budgets (Qwen2.5-VL form, §2.2(c)).
Both plan first (``plan_visionzip``: which tokens, which merges; small index arrays) and then
move the token vectors once (``apply_plan``), since the vectors are what costs memory bandwidth.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import BudgetError, ShapeError
from .dytok import split_dominant_contextual
from .method import Kept, Method, Request


@dataclass(frozen=True)
class ZipPlan:
    source: np.ndarray  # [K] int64 kept token index (contextual: its target)
    dominant: np.ndarray  # [K] bool
    merge_rows: np.ndarray  # [C] int64 output rows that receive a merge (the contextual rows)
    merge_weights: np.ndarray  # [C, T] float32: row r adds merge_weights[r] @ tokens (mean of assignees)


def strided_targets(n: int, c: int) -> np.ndarray:
    """Target positions into the remaining list: stride ``max(1, n // c)``, first ``c``. [c]"""
    if c <= 0:
        return np.zeros(0, np.int64)
    return (np.arange(c) * max(1, n // c)).astype(np.int64)


def plan_visionzip(importance: np.ndarray, metric: np.ndarray, dominant: int, contextual: int) -> ZipPlan:
    """Selection and merges for one frame. importance [T], metric [T, dk] -> ZipPlan (spec order:
    dominant ascending, then contextual by target)."""
    n_tok = len(importance)
    if importance.ndim != 1 or metric.ndim != 2 or len(metric) != n_tok:
        raise ShapeError(f"importance {importance.shape} and metric {metric.shape} disagree")
    if dominant < 0 or contextual < 0 or dominant + contextual > n_tok:
        raise BudgetError(f"budget {dominant} dominant + {contextual} contextual exceeds the {n_tok} tokens of the frame")
    dom = np.sort(np.argsort(-np.asarray(importance), kind="stable")[:dominant]).astype(np.int64)
    if contextual == 0:
        return ZipPlan(dom, np.ones(len(dom), bool), np.zeros(0, np.int64), np.zeros((0, n_tok), np.float32))
    remaining = np.setdiff1d(np.arange(n_tok), dom)
    unit = metric[remaining].astype(np.float32, copy=False)
    unit = unit / np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-12)
    targets = strided_targets(len(remaining), contextual)
    is_target = np.zeros(len(remaining), bool)
    is_target[targets] = True
    others = np.flatnonzero(~is_target)
    assign = np.argmax(unit[others] @ unit[targets].T, axis=1)  # first maximum on ties
    counts = np.bincount(assign, minlength=len(targets)).astype(np.float32)
    weights = np.zeros((len(targets), n_tok), np.float32)
    weights[assign, remaining[others]] = 1 / counts[assign]  # target + mean of its assignees
    source = np.concatenate([dom, remaining[targets]]).astype(np.int64)
    return ZipPlan(source, np.arange(len(source)) < len(dom), np.arange(len(dom), len(source)), weights)


def apply_plan(tokens: np.ndarray, plan: ZipPlan) -> np.ndarray:
    """tokens [T, D] -> kept vectors [K, D]: one gather, then the contextual rows add their merges."""
    out = tokens[plan.source]
    if len(plan.merge_rows):
        out[plan.merge_rows] += (plan.merge_weights @ tokens).astype(out.dtype, copy=False)
    return out


def visionzip(tokens: np.ndarray, importance: np.ndarray, metric: np.ndarray, dominant: int,
              contextual: int) -> Kept:
    """One frame. tokens [T, D], importance [T], metric [T, dk] -> d + c tokens (spec order)."""
    if len(tokens) != len(importance):
        raise ShapeError(f"tokens {tokens.shape} and importance {importance.shape} disagree")
    plan = plan_visionzip(importance, metric, dominant, contextual)
    return Kept(apply_plan(tokens, plan), plan.source, plan.dominant)


def visionzip_groups(tokens: np.ndarray, importance: np.ndarray, metric: np.ndarray, budgets: np.ndarray,
                     raster_order: bool = True) -> Kept:
    """Per-group VisionZip. tokens [F*T, D], importance [F*T], metric [F*T, dk], budgets [F].

    Each group's budget is split 6:1 (DyToK). ``source`` indexes the full [F*T] span. With
    ``raster_order`` the kept tokens are put back in original order (for M-RoPE gathers).
    """
    budgets = np.asarray(budgets, np.int64)
    n_groups = len(budgets)
    if n_groups == 0 or len(tokens) % n_groups or len(importance) != len(tokens) or len(metric) != len(tokens):
        raise ShapeError(f"{len(tokens)} tokens / {len(importance)} scores / {len(metric)} keys "
                         f"cannot be split into {n_groups} equal groups")
    per = len(tokens) // n_groups
    dom, ctx = split_dominant_contextual(budgets)
    sources, flags, merges = [], [], []
    offset = 0
    for g in range(n_groups):
        sl = slice(g * per, (g + 1) * per)
        plan = plan_visionzip(importance[sl], metric[sl], int(dom[g]), int(ctx[g]))
        order = np.argsort(plan.source, kind="stable") if raster_order else np.arange(len(plan.source))
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        sources.append(plan.source[order] + g * per)
        flags.append(plan.dominant[order])
        merges.append((offset + rank[plan.merge_rows], sl, plan.merge_weights))
        offset += len(order)
    source = np.concatenate(sources)
    out = tokens[source]  # the one pass over the kept vectors
    for rows, sl, weights in merges:
        if len(rows):
            out[rows] += (weights @ tokens[sl]).astype(out.dtype, copy=False)
    return Kept(out, source, np.concatenate(flags))


def pool_merge_units(patch_values: np.ndarray, unit: int = 4) -> np.ndarray:
    """Average consecutive ``unit`` patch rows (one 2x2 merge unit) into one merged-token row.
    [N*unit, ...] -> [N, ...]"""
    v = np.asarray(patch_values)
    if len(v) % unit:
        raise ShapeError(f"{len(v)} patch rows are not a multiple of the merge unit {unit}")
    return v.reshape(len(v) // unit, unit, *v.shape[1:]).mean(axis=1)


def _compress(vision: dict, request: Request) -> Kept:
    # spec order (per group: dominant ascending, then contextual by target); families that keep
    # original ids put the tokens back in span order when splicing (prefill_input)
    return visionzip_groups(vision["tokens"], vision["importance"], vision["metric"], request.budgets, raster_order=False)


METHOD = Method("visionzip", "VisionZip", _compress, per_group=True, baseline=True)
