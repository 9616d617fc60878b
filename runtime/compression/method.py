"""What a registered compression method is: its needs, and one function from the vision graph's
outputs to the kept visual tokens. Each method's file declares its ``Method``; ``registry.py``
lists them."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Kept:
    """The visual tokens a method keeps, in any order (``prefill_input`` sorts them by source)."""
    tokens: np.ndarray  # [K, D] float32 kept (or merged) token vectors
    source: np.ndarray  # [K] int64 index into the full visual span whose M-RoPE id each token takes
    dominant: np.ndarray  # [K] bool: a token of the span itself (False: a merged, contextual token)

    @staticmethod
    def select(tokens: np.ndarray, index: np.ndarray) -> Kept:
        """Plain selection: ``tokens[index]``, all dominant."""
        index = np.asarray(index, np.int64)
        return Kept(tokens[index], index, np.ones(len(index), bool))


@dataclass(frozen=True)
class Request:
    """What a method may read besides the vision outputs.

    grid: merged tokens (groups, rows, cols) of the span; budgets [groups] int64 per-group token
    counts (DyToK's allocation, or uniform); retention / budget: the user's request (budget: tokens
    per group on average, or None); prior: True when the budgets come from the keyframe prior;
    text: [S_t, D] float32 input embeddings of the prompt after the visual span (DART's text
    pivots; ``prefill_input.text_after``), None where the caller has no prompt; start: the prompt
    position of the span's first token."""
    grid: tuple[int, int, int]
    budgets: np.ndarray
    retention: float
    budget: int | None = None
    prior: bool = False
    text: np.ndarray | None = None
    start: int = 0

    @property
    def per_group(self) -> int:
        return self.grid[1] * self.grid[2]

    @property
    def share(self) -> float:
        """The share of the visual tokens asked for: the retention, or the average budget over the
        tokens of a group; at most 1. For methods with budgets of their own (EVS, VidCom2, DART)."""
        return min(1.0, self.retention if self.budget is None else self.budget / max(self.per_group, 1))


@dataclass(frozen=True)
class Method:
    """A compression method.

    ``compress(vision, request) -> Kept``: ``vision`` holds the vision graph's outputs over the
    span ("tokens" [N, D], "importance" [N], "metric" [N, dk]). ``label``: its name in tables.
    ``uses_budgets``: per-group budgets decide how many tokens each group keeps (else the prior does
    not change what it keeps). ``in_llm(lo, request, start) -> kept sequence indices`` (ascending,
    int64): a method that prunes inside the LLM, on the split graphs, chooses from the lower
    segment's prefill outputs ``lo`` ("hidden_states" [1, S, D], "attention" [S], "present_*")
    which prompt positions layers >= K see; ``start`` is where the visual span begins (the
    pre-LLM step keeps every token). None for the others. ``final_norm``: ``in_llm`` also reads
    the LLM's final RMSNorm, ``lo["final_norm"]`` (weight [D]) and ``lo["final_norm_eps"]``, which
    a split export writes (``models.primary.final_norm``). ``per_group``: each group is compressed on its own, so groups
    may come at different grids (budget-aware encoder resolution). ``baseline``: run without the
    prior it is a published method of its own (evaluation rows "no assistant"). ``compresses``:
    False only for "none" (every token goes in; no prior runs). ``own_prior``: the method weights the
    groups itself (inside the primary), so no assistant runs."""
    name: str
    label: str
    compress: Callable[[dict, Request], Kept]
    uses_budgets: bool = True
    in_llm: Callable[[dict, Request, int], np.ndarray] | None = None
    final_norm: bool = False
    per_group: bool = False
    baseline: bool = False
    compresses: bool = True
    own_prior: bool = False
