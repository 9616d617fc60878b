"""The primary as its own assistant, inside one prefill (ours): layers < K see every visual token;
the last prompt token's attention at layer K-1 (the split LLM's lower segment, the row FastV
reads) gives the temporal groups their DyToK weights (§1.3, from this one row), DyToK allocates the
budgets (§1.4), each group keeps its ``b_g`` most attended tokens, and layers >= K run on those at
their original positions. No second model, no second ViT: one attention row of the primary. The
row is a softmax over every key, so the weights are its visual part renormalised (not the
assistant's softmax over the visual keys alone)."""
from __future__ import annotations

import numpy as np

from .dytok import allocate_budgets, budget_for_retention, frame_weights
from .fastv import fastv_keep_per_frame
from .method import Kept, Method, Request


def self_budgets(attention: np.ndarray, start: int, request: Request) -> np.ndarray:
    """DyToK budgets [groups] from the primary's own attention row [S] over the span at ``start``."""
    groups, per = request.grid[0], request.per_group
    span = np.asarray(attention, np.float32)[start:start + groups * per]
    average = request.budget if request.budget is not None else budget_for_retention(per, request.retention)
    return allocate_budgets(frame_weights(span / max(span.sum(), 1e-30), per), min(average, per), per)


def _select(lo: dict, request: Request, start: int) -> np.ndarray:
    attention = np.asarray(lo["attention"])
    return fastv_keep_per_frame(attention, start, int(np.prod(request.grid)), self_budgets(attention, start, request))


def _all_tokens(vision: dict, request: Request) -> Kept:
    return Kept.select(vision["tokens"], np.arange(len(vision["tokens"])))


METHOD = Method("self", "DyToK-self", _all_tokens, in_llm=_select, own_prior=True)
