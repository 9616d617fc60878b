"""DyToK: per-frame token budgets from an LLM keyframe prior (spec §1, arXiv 2512.06866).

Frame unit for Qwen2.5-VL: one temporal patch group (2 frames).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import BudgetError, ShapeError

LayerSpec = None | str | int | float | Sequence[int] | range


def select_layers(spec: LayerSpec, num_layers: int) -> list[int]:
    """Decoder layers to score from (spec §1.3.1). ``None``/"none" -> all; ``int k`` -> [k];
    float ``a.bb`` -> a..bb inclusive (two decimals: 16.23 -> 16..23, 16.2 -> 16..20);
    "last_third" -> the last ``num_layers // 3`` layers; a sequence or range -> those layers.
    Layers beyond the depth are dropped (as the reference); an empty result raises."""
    if spec is None or (isinstance(spec, str) and spec.lower() == "none"):
        layers = list(range(num_layers))
    elif isinstance(spec, str) and spec.lower() in ("last_third", "last-third"):
        layers = list(range(num_layers - num_layers // 3, num_layers))
    elif isinstance(spec, bool):
        raise BudgetError(f"layer selection {spec!r}: not a layer spec")
    elif isinstance(spec, (int, np.integer)):
        layers = [int(spec)]
    elif isinstance(spec, float):
        first, last = f"{spec:.2f}".split(".")
        layers = list(range(int(first), int(last) + 1))
    elif isinstance(spec, str):
        try:
            return select_layers(float(spec) if "." in spec else int(spec), num_layers)
        except ValueError:
            raise BudgetError(f"layer selection {spec!r}: expected none, last_third, an int or a.bb") from None
    else:
        layers = [int(x) for x in spec]
    kept = sorted({x for x in layers if 0 <= x < num_layers})
    if not kept:
        raise BudgetError(f"layer selection {spec!r} selects no layer of a {num_layers}-layer model")
    return kept


def visual_softmax_head_mean(logits: np.ndarray) -> np.ndarray:
    """Softmax over the visual keys only, then mean over heads. [L, H, V] -> [L, V] float32"""
    z = np.asarray(logits, np.float32)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return (z / z.sum(axis=-1, keepdims=True)).mean(axis=1)


def frame_weights(attention: np.ndarray, tokens_per_frame: int) -> np.ndarray:
    """Frame weights from head-mean last-token attention over the visual keys (spec §1.3).

    attention [L, F*T] (one row per selected layer; each row a distribution over visual keys)
    -> w [F] float32: per-frame mean, mean over layers, normalised to sum 1.
    """
    a = np.asarray(attention, np.float32)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2 or a.shape[1] == 0 or a.shape[1] % tokens_per_frame:
        raise ShapeError(f"attention {a.shape} is not [layers, frames * {tokens_per_frame}]")
    if not np.isfinite(a).all():
        raise BudgetError("attention over visual tokens contains NaN or inf")
    per_frame = a.reshape(a.shape[0], -1, tokens_per_frame).mean(axis=2).mean(axis=0)
    total = per_frame.sum()
    if not total > 0:
        raise BudgetError("attention over visual tokens sums to zero: cannot weight frames")
    return (per_frame / total).astype(np.float32)


def allocate_budgets(weights: np.ndarray, per_frame_budget: int, cap: int) -> np.ndarray:
    """Integer tokens per frame, exactly as the DyToK reference (spec §1.4). w [F] -> a [F] int64.

    ``N = B * F``; floor of ``w * N`` (float32), largest remainders get the leftover, clamp at
    ``cap``, then hand the excess back one token per sweep to uncapped frames by descending weight.
    Ties break toward the lower index. Raises where the reference would loop forever (B > cap).
    """
    w = np.asarray(weights)
    if w.ndim != 1 or len(w) == 0:
        raise ShapeError(f"weights must be a non-empty 1-D array, got shape {w.shape}")
    if not np.isfinite(w).all() or (w < 0).any():
        raise BudgetError("frame weights must be finite and non-negative")
    if per_frame_budget < 0 or cap < 0:
        raise BudgetError(f"budget {per_frame_budget} and cap {cap} must be non-negative")
    if per_frame_budget > cap:
        raise BudgetError(
            f"average budget {per_frame_budget} tokens/frame exceeds the cap {cap}: "
            f"{len(w)} frames can hold at most {cap * len(w)} tokens")
    w = w.astype(np.float32)
    total = per_frame_budget * len(w)
    x = w * np.float32(total)
    a = np.floor(x).astype(np.int64)
    leftover = int(total - a.sum())
    if leftover > 0:
        remainder = x - np.floor(x)
        a[np.argsort(-remainder, kind="stable")[:leftover]] += 1
    a = np.minimum(a, cap)
    excess = total - int(a.sum())
    by_weight = np.argsort(-w, kind="stable")
    while excess > 0:
        open_frames = by_weight[a[by_weight] < cap]
        if len(open_frames) == 0:  # cannot happen when B <= cap; kept as a guard, not a loop
            raise BudgetError(f"{excess} tokens left with every frame at the cap {cap}")
        step = open_frames[:excess]
        a[step] += 1
        excess -= len(step)
    return a


def split_dominant_contextual(budgets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fixed 6:1 split of each frame budget. a [F] -> (dominant [F], contextual [F])."""
    a = np.asarray(budgets, np.int64)
    dominant = 6 * a // 7
    return dominant, a - dominant


def uniform_budgets(num_frames: int, per_frame_budget: int) -> np.ndarray:
    """Budgets with the assistant off: every frame gets the average. [F]"""
    return np.full(num_frames, per_frame_budget, np.int64)


def budget_for_retention(tokens_per_frame: int, retention: float) -> int:
    """Average tokens per frame for a retention ratio in (0, 1]; at least one token."""
    if not 0 < retention <= 1:
        raise BudgetError(f"retention must be in (0, 1], got {retention}")
    return max(1, int(round(tokens_per_frame * retention)))


def plan_budgets(weights: np.ndarray | None, groups: int, per_group: int, retention: float, budget: int | None = None,
                 cap: int | None = None, everything: bool = False) -> np.ndarray:
    """Per-group token counts of one request. -> [groups] int64.

    ``everything``: every token of every group. Otherwise the average per group is ``budget``, else
    ``retention`` of ``per_group``; with frame ``weights`` [groups] (the keyframe prior) DyToK
    allocates it (§1.4) with at most ``cap`` per group (default: a whole group), without them every
    group gets the average."""
    if everything:
        return uniform_budgets(groups, per_group)
    average = budget if budget is not None else budget_for_retention(per_group, retention)
    cap = per_group if cap is None else cap
    if cap > per_group:
        raise BudgetError(f"--cap {cap} exceeds the {per_group} tokens of a temporal group")
    average = min(average, cap)  # a budget above what a group holds keeps every token
    if weights is not None:
        return allocate_budgets(weights, average, cap)
    return uniform_budgets(groups, average)


def map_group_weights(weights: np.ndarray, groups: int) -> np.ndarray:
    """Weights over one model's temporal groups -> over ``groups`` groups of the same clip: each
    target group takes the source group nearest in time, renormalised. [G'] -> [groups] float32"""
    weights = np.asarray(weights, np.float32)
    if len(weights) == groups:
        return weights
    src = (np.arange(len(weights)) + 0.5) / len(weights)
    dst = (np.arange(groups) + 0.5) / groups
    mapped = weights[np.abs(dst[:, None] - src[None, :]).argmin(axis=1)]
    return (mapped / mapped.sum()).astype(np.float32)


def map_weights_by_time(weights: np.ndarray, src_times: np.ndarray, src_per_group: int, dst_times: np.ndarray,
                        dst_per_group: int) -> np.ndarray:
    """Group weights of one model -> group weights of another that groups the frames differently
    (an assistant of another family: e.g. one frame per group for LLaVA-OV, two for Qwen2.5-VL).

    weights [Gs] over groups of ``src_per_group`` consecutive frames at ``src_times`` [Fs] (seconds;
    the last group may hold fewer); each source frame carries its group's weight shared equally
    among the group's frames; each destination frame at ``dst_times`` [Fd] takes the weight of the
    source frame nearest in time (the earlier on ties); a destination group's weight is the sum over
    its frames, renormalised. -> [ceil(Fd / dst_per_group)] float32."""
    weights = np.asarray(weights, np.float64)
    src_times, dst_times = np.asarray(src_times, np.float64), np.asarray(dst_times, np.float64)
    groups = -(-len(src_times) // src_per_group)
    if len(weights) != groups or len(dst_times) == 0:
        raise ShapeError(f"{len(weights)} group weights for {len(src_times)} frames in groups of {src_per_group} "
                         f"(expected {groups}), mapped onto {len(dst_times)} frames")
    owner = np.arange(len(src_times)) // src_per_group
    per_frame = weights[owner] / np.bincount(owner)[owner]
    nearest = np.abs(dst_times[:, None] - src_times[None, :]).argmin(axis=1)
    mapped = np.bincount(np.arange(len(dst_times)) // dst_per_group, weights=per_frame[nearest])
    return (mapped / mapped.sum()).astype(np.float32)
