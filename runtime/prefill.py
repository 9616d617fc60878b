"""Chunked prefill through a graph's KV-cache inputs: the prompt goes in chunks of ``chunk``
tokens, each attending to the cached keys of the chunks before it. Attention scores then take
``heads x chunk x total`` floats per layer instead of ``heads x total^2``, so activation memory
grows linearly with the prompt, not with its square.

Used for the primary LLM (``past_*``/``present_*``, ``attention_mask``) and for the assistant's
prior graph when it was exported with a KV cache (manifest ``kv_cache``). Old one-shot prior
graphs run in one call.
"""
from __future__ import annotations

import numpy as np

from .engines.base import Engine
from .errors import EngineError
from .specs_kv import kv_input_names

DEFAULT_CHUNK = 2048


def run_chunked(engine: Engine, feeds: dict[str, np.ndarray], chunk: int | None, kv_names: list[str],
                last_only: dict[str, np.ndarray] | None = None,
                early: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """One prefill call, split into chunks of ``chunk`` tokens (None or 0: one call).

    feeds: ``inputs_embeds`` [1, S, D], ``position_ids`` [3, 1, S], ``attention_mask`` [1, S] (all
    ones) and the empty ``past_*`` [1, KV, 0, d] named by ``kv_names``. ``last_only``: extra feeds of
    the last chunk (the prior's ``visual_index``); ``early``: their stand-ins for the chunks before
    it. Returns the last chunk's outputs (its ``present_*`` hold the whole prompt).
    """
    n = feeds["inputs_embeds"].shape[1]
    last_only, early = last_only or {}, early or {}
    if not chunk or n <= chunk:
        return engine.run({**feeds, **last_only})
    if chunk < 0:
        raise EngineError(f"prefill chunk must be positive, got {chunk}")
    past = {k: feeds[k] for k in kv_names}
    out: dict[str, np.ndarray] = {}
    for s0 in range(0, n, chunk):
        s1 = min(n, s0 + chunk)
        step = {"inputs_embeds": feeds["inputs_embeds"][:, s0:s1], "position_ids": feeds["position_ids"][:, :, s0:s1],
                "attention_mask": np.ones((1, s1), np.int64), **past, **(last_only if s1 == n else early)}
        out = engine.run(step)
        past = {k: out[k.replace("past", "present", 1)] for k in kv_names}
    return out


def empty_cache(num_layers: int, kv_heads: int, head_dim: int) -> dict[str, np.ndarray]:
    return {k: np.zeros((1, kv_heads, 0, head_dim), np.float32) for k in kv_input_names(num_layers)}


def prior_attention(engine: Engine, embeds: np.ndarray, positions: np.ndarray, visual_index: np.ndarray,
                    model: dict, graph: dict, chunk: int | None) -> np.ndarray:
    """The assistant prior [n_selected, V] of prompt ``embeds`` [S, D] with ``positions`` [3, S].
    ``graph``: the prior's manifest entry (its I/O table says whether it has a KV cache)."""
    inputs = [t["name"] for t in graph["inputs"]]
    feeds = {"inputs_embeds": embeds[None], "position_ids": positions[:, None]}
    last = {"visual_index": np.asarray(visual_index, np.int64)}
    names = [n for n in inputs if n.startswith("past_")]
    if "attention_mask" not in inputs or not names:  # a one-shot prior graph (exported before chunking)
        return engine.run({**feeds, **last})["attention"]
    feeds.update(attention_mask=np.ones((1, len(embeds)), np.int64),
                 **empty_cache(len(names) // 2, model["num_kv_heads"], model["head_dim"]))
    return run_chunked(engine, feeds, chunk, names, last, {"visual_index": np.zeros(1, np.int64)})["attention"]
