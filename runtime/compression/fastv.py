"""FastV (arXiv 2403.06764): keep the visual tokens the last prompt token attends to most.

Selection only (spec §3.2): layers >= K then run on ``keep`` with position ids ``keep`` (the
original numbering, gaps kept) and decoding continues at position N.
"""
from __future__ import annotations

import numpy as np

from ..errors import BudgetError, ShapeError
from ..positions import kept_sequence_indices
from .method import Kept, Method, Request


def fastv_keep_count(num_visual: int, drop_ratio: float) -> int:
    """Visual tokens kept: Python ``round(V * (1 - R))`` (half to even)."""
    if not 0 <= drop_ratio <= 1:
        raise BudgetError(f"FastV drop ratio must be in [0, 1], got {drop_ratio}")
    return round(num_visual * (1 - drop_ratio))


def fastv_keep(attention: np.ndarray, vision_start: int, num_visual: int, drop_ratio: float) -> np.ndarray:
    """attention [N]: head-mean last-row attention at layer K-1 -> kept sequence indices, ascending."""
    return fastv_keep_top(attention, vision_start, num_visual, fastv_keep_count(num_visual, drop_ratio))


def fastv_keep_top(attention: np.ndarray, vision_start: int, num_visual: int, k: int) -> np.ndarray:
    """The global top-``k`` visual tokens by attention (stable: lower index first on ties).
    attention [N] -> kept sequence indices [N - V + k], ascending."""
    attention = np.asarray(attention)
    n = len(attention)
    if attention.ndim != 1 or vision_start < 0 or vision_start + num_visual > n:
        raise ShapeError(f"visual span [{vision_start}, {vision_start + num_visual}) is outside {n} tokens")
    if not 0 <= k <= num_visual:
        raise BudgetError(f"FastV keeps {k} of {num_visual} visual tokens: must be within [0, {num_visual}]")
    top = np.argsort(-attention[vision_start:vision_start + num_visual], kind="stable")[:k]
    return kept_sequence_indices(n, vision_start, num_visual, top)


def fastv_keep_per_frame(attention: np.ndarray, vision_start: int, num_visual: int,
                         budgets: np.ndarray) -> np.ndarray:
    """DyToK + FastV analogue (spec §1.9, unconfirmed): top-``a_f`` of each frame's equal share of
    the visual span instead of one global top-k. attention [N], budgets [F] -> kept indices."""
    budgets = np.asarray(budgets, np.int64)
    attention = np.asarray(attention)
    if len(budgets) == 0 or num_visual % len(budgets) or vision_start + num_visual > len(attention):
        raise ShapeError(f"visual span of {num_visual} tokens cannot be split into {len(budgets)} frames")
    per = num_visual // len(budgets)
    if (budgets < 0).any() or (budgets > per).any():
        raise BudgetError(f"frame budgets must be within [0, {per}], got {budgets.tolist()}")
    span = attention[vision_start:vision_start + num_visual].reshape(len(budgets), per)
    local = [np.sort(np.argsort(-row, kind="stable")[:b]) + f * per for f, (row, b) in enumerate(zip(span, budgets))]
    return kept_sequence_indices(len(attention), vision_start, num_visual, np.concatenate(local))


def _all_tokens(vision: dict, request: Request) -> Kept:
    """FastV prunes inside the LLM, at layer K (``runtime/llm_split.py``): every token goes in."""
    return Kept.select(vision["tokens"], np.arange(len(vision["tokens"])))


def _select(lo: dict, request: Request, start: int) -> np.ndarray:
    """With the prior: each group's top-``b_g`` (DyToK+FastV); without: FastV's global top-k with
    the same total."""
    attention, visual = np.asarray(lo["attention"]), int(np.prod(request.grid))
    if request.prior:
        return fastv_keep_per_frame(attention, start, visual, request.budgets)
    return fastv_keep_top(attention, start, visual, int(np.sum(request.budgets)))


METHOD = Method("fastv", "FastV", _all_tokens, in_llm=_select, baseline=True)
