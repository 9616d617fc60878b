"""Budget-driven baselines: uniform spatial sampling and random selection, per group."""
from __future__ import annotations

import numpy as np

from ..errors import BudgetError, ShapeError
from .method import Kept, Method, Request


def uniform_indices(num_tokens: int, budget: int) -> np.ndarray:
    """``budget`` evenly spread indices of ``num_tokens`` (floor of i * T / budget), ascending. [budget]"""
    if not 0 <= budget <= num_tokens:
        raise BudgetError(f"budget {budget} is outside [0, {num_tokens}] tokens")
    return (np.arange(budget) * num_tokens // max(budget, 1)).astype(np.int64)


def random_indices(num_tokens: int, budget: int, rng: np.random.Generator) -> np.ndarray:
    """``budget`` distinct random indices, ascending. [budget]"""
    if not 0 <= budget <= num_tokens:
        raise BudgetError(f"budget {budget} is outside [0, {num_tokens}] tokens")
    return np.sort(rng.choice(num_tokens, size=budget, replace=False)).astype(np.int64)


def select_groups(num_tokens: int, budgets: np.ndarray, method: str = "uniform", seed: int = 0) -> np.ndarray:
    """Kept indices into a span of ``num_tokens`` split into ``len(budgets)`` equal groups. [sum(budgets)]"""
    budgets = np.asarray(budgets, np.int64)
    if len(budgets) == 0 or num_tokens % len(budgets):
        raise ShapeError(f"{num_tokens} tokens cannot be split into {len(budgets)} equal groups")
    per = num_tokens // len(budgets)
    rng = np.random.default_rng(seed)
    pick = {"uniform": lambda b: uniform_indices(per, b), "random": lambda b: random_indices(per, b, rng)}
    if method not in pick:
        raise BudgetError(f"unknown selection method {method!r}: expected one of {sorted(pick)}")
    return np.concatenate([pick[method](int(b)) + g * per for g, b in enumerate(budgets)]).astype(np.int64)


def _uniform(vision: dict, request: Request) -> Kept:
    tokens = vision["tokens"]
    return Kept.select(tokens, select_groups(len(tokens), request.budgets, "uniform"))


UNIFORM = Method("uniform", "uniform", _uniform, per_group=True, baseline=True)
