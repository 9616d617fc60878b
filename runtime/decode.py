"""The one decode loop. An LLM step object holds one request's state (its KV cache) and turns a
prompt, then one token at a time, into next-token logits; ``generate`` drives any of them:

- ``GraphStep``: one LLM graph with ``past_*``/``present_*`` feeds (ONNX Runtime, TensorRT, PyTorch);
- ``llm_split.SplitStep``: the LLM split at layer K (FastV at prefill, DyCoke's KV step in decode);
- an engine's own step (``engine.open_step(max_len)``), e.g. the PyTorch backend's preallocated
  KV cache with a captured CUDA graph.

Every step object has ``prefill(embeds [S, D] float32, positions [3, S] int64, chunk) -> logits
[V]`` and ``decode(embed [D] float32, position int) -> logits [V]``.
"""
from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from .engines.base import Engine
from .prefill import run_chunked
from .prompt import StreamDecoder
from .specs_kv import kv_input_names


def sample_token(logits: np.ndarray, temperature: float, top_p: float, rng: np.random.Generator) -> int:
    """Greedy at ``temperature`` <= 0, else nucleus sampling: the smallest prefix of the sorted
    distribution with mass >= ``top_p``. logits [V] -> token id."""
    if temperature <= 0:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / temperature
    p = np.exp(z - z.max())
    p /= p.sum()
    order = np.argsort(-p, kind="stable")
    cut = np.searchsorted(np.cumsum(p[order]), top_p) + 1
    keep = order[:cut]
    return int(rng.choice(keep, p=p[keep] / p[keep].sum()))


def empty_kv(names: list[str], kv_heads: int, head_dim: int) -> dict[str, np.ndarray]:
    return {n: np.zeros((1, kv_heads, 0, head_dim), np.float32) for n in names}


def one_token(embed: np.ndarray, position: int) -> tuple[np.ndarray, np.ndarray]:
    """One generated token's feeds: embed [D] -> inputs_embeds [1, 1, D]; position ids [3, 1, 1]."""
    return np.asarray(embed, np.float32)[None, None], np.full((3, 1, 1), position, np.int64)


class GraphStep:
    """The one-graph LLM: the KV cache travels as ``present_*`` outputs fed back as ``past_*``."""

    def __init__(self, engine: Engine, num_layers: int, kv_heads: int, head_dim: int):
        self.engine = engine
        self.names = kv_input_names(num_layers)
        self.kv_heads, self.head_dim = kv_heads, head_dim
        self.cache: dict = {}
        self.length = 0

    def _keep(self, out: dict) -> np.ndarray:
        self.cache = {n: out[n.replace("past", "present", 1)] for n in self.names}
        return out["logits"][0]

    def prefill(self, embeds: np.ndarray, positions: np.ndarray, chunk: int | None) -> np.ndarray:
        self.length = len(embeds)
        feeds = {"inputs_embeds": embeds[None], "position_ids": positions[:, None],
                 "attention_mask": np.ones((1, len(embeds)), np.int64),
                 **empty_kv(self.names, self.kv_heads, self.head_dim)}
        return self._keep(run_chunked(self.engine, feeds, chunk, self.names))

    def decode(self, embed: np.ndarray, position: int) -> np.ndarray:
        self.length += 1
        x, pos = one_token(embed, position)
        return self._keep(self.engine.run({"inputs_embeds": x, "position_ids": pos,
                                           "attention_mask": np.ones((1, self.length), np.int64), **self.cache}))


def generate(step, embeds: np.ndarray, positions: np.ndarray, next_position: int, opts,
             embed: Callable[[int], np.ndarray], eos_ids, stream: StreamDecoder | None = None,
             on_token: Callable[[str], None] | None = None, timings: dict | None = None) -> list[int]:
    """Prefill ``embeds`` [S, D] at ``positions`` [3, S], then decode up to ``opts.max_new_tokens``
    (``temperature``, ``top_p``, ``seed``, ``ignore_eos``, ``prefill_chunk``) from position
    ``next_position``. ``embed(token) -> [D]``. Streams pieces through ``stream`` to ``on_token``.
    Fills ``timings`` prefill / decode seconds and decode_tokens. -> generated ids."""
    timings = {} if timings is None else timings
    rng = np.random.default_rng(opts.seed)
    t0 = time.perf_counter()
    logits = step.prefill(embeds, positions, opts.prefill_chunk)
    timings["prefill"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    out: list[int] = []
    for i in range(opts.max_new_tokens):
        token = sample_token(logits, opts.temperature, opts.top_p, rng)
        out.append(token)
        last = (token in eos_ids and not opts.ignore_eos) or i == opts.max_new_tokens - 1
        if on_token and stream is not None:
            on_token(stream.push(token, final=last))
        if last:
            break
        logits = step.decode(embed(token), next_position + i)
    timings["decode"] = time.perf_counter() - t0
    timings["decode_tokens"] = max(len(out) - 1, 0)
    return out
