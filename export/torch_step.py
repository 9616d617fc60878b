"""Prefill and decode of the primary LLM on a preallocated KV cache, written in place: the
``open_step`` of the PyTorch backend's LLM engine (``export.torch_engine.TorchLLMEngine``),
which the runtime uses instead of feeding ``past_*``/``present_*`` through ``Engine.run``.

The decode step has static shapes: it attends over the whole cache ``[0, max_len)`` with a mask
of the rows written so far, and its inputs (embedding, M-RoPE position, write indices) are device
buffers filled before each call. A method that prunes inside the LLM (FastV, DART, the self prior:
``runtime/llm_split.py``) runs on the same cache through ``prefill_split``: layers below the split
layer K hold every prompt row, layers from K on only the kept rows, so the two layer ranges write
and read up to their own row counts (two indices, one captured step). On CUDA it is captured once in a ``torch.cuda.CUDAGraph`` and
replayed (one launch per token instead of hundreds, which is what bounds decode there); on CPU
the same function runs eagerly, so the tests exercise the captured code.
"""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict

import numpy as np
import torch

from runtime.errors import PromptError
from runtime.llm_split import HostView

from .graphs.gqa import causal_mask
from .graphs.llm import LanguageModel, mrope_cos_sin

log = logging.getLogger("dytok.torch")


def to_host(value) -> np.ndarray:
    """A tensor as a NumPy array; floating ones as float32 (NumPy has no bfloat16)."""
    if not isinstance(value, torch.Tensor):
        return np.asarray(value)
    return (value.detach().float() if value.is_floating_point() else value.detach()).cpu().numpy()


class _Cache:
    """K/V buffers (layers, 1, KV, max_len, d) and, on CUDA, the decode graph captured over them.
    Layers ``[0, split)`` write at ``index``, layers ``[split, depth)`` at ``index_hi``."""

    def __init__(self, module: LanguageModel, max_len: int, device: torch.device, dtype: torch.dtype, split: int):
        shape = (len(module.text.layers), 1, module.kv_heads, max_len, module.head_dim)
        self.max_len, self.split = max_len, split
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        hidden = module.text.config.hidden_size
        self.embed = torch.zeros(1, 1, hidden, dtype=dtype, device=device)
        self.position = torch.zeros(3, 1, 1, dtype=torch.int64, device=device)
        self.index = torch.zeros(1, dtype=torch.int64, device=device)
        self.index_hi = torch.zeros(1, dtype=torch.int64, device=device)
        self.rows = torch.arange(max_len, device=device)
        self.graph: torch.cuda.CUDAGraph | bool | None = None  # None: not tried; False: capture failed, eager
        self.logits: torch.Tensor | None = None


class LLMStep:
    """One request's prefill + decode on a ``_Cache``. ``prefill`` then ``decode`` per new token;
    returns NumPy float32 logits of the last position. The cache goes back to the engine's pool
    when the step is dropped."""

    def __init__(self, pool: "StepPool", cache: _Cache):
        self._pool, self._cache = pool, cache
        self.module: LanguageModel = pool.module
        self.max_len = cache.max_len
        self.length = 0  # rows of the cache written by this request (layers below the split)
        self.length_hi = 0  # ... by layers from the split on (fewer when prefill_split pruned)

    def __del__(self):
        pool, cache = getattr(self, "_pool", None), getattr(self, "_cache", None)
        if pool is not None and cache is not None:
            pool.release(cache)

    def _tensor(self, array: np.ndarray, dtype=None) -> torch.Tensor:
        array = np.ascontiguousarray(array)
        t = torch.from_numpy(array if array.flags.writeable else array.copy())  # tables are read-only mmaps
        return t.to(self._pool.device, dtype or self._pool.dtype)

    def _prompt(self, embeds, positions) -> tuple[np.ndarray, np.ndarray]:
        embeds, positions = np.asarray(embeds), np.asarray(positions)
        n = len(embeds)
        if embeds.ndim != 2 or positions.shape != (3, n) or n == 0:
            raise PromptError(f"prefill: embeds [S, D] and positions [3, S] with S >= 1, got {embeds.shape} and "
                              f"{positions.shape}")
        if n > self.max_len:
            raise PromptError(f"prompt of {n} tokens exceeds the step's cache of {self.max_len} rows")
        return embeds, positions

    @torch.no_grad()
    def prefill(self, embeds: np.ndarray, positions: np.ndarray, chunk: int | None = None) -> np.ndarray:
        """embeds [S, D] float32, positions [3, S] int64 (M-RoPE ids), ``chunk`` prompt tokens per
        call (None or 0: one call) -> logits [V] float32 of the last position."""
        m, c = self.module, self._cache
        embeds, positions = self._prompt(embeds, positions)
        n = len(embeds)
        if chunk is not None and chunk < 0:
            raise PromptError(f"prefill chunk must be positive, got {chunk}")
        step = chunk or n
        for s0 in range(0, n, step):
            s1 = min(n, s0 + step)
            x = self._tensor(embeds[s0:s1])[None]
            cos, sin = mrope_cos_sin(self._tensor(positions[:, s0:s1], torch.int64)[:, None], m.inv_freq, m.sections, x.dtype)
            mask = None if s0 == 0 else causal_mask(s1 - s0, s1, x.device)

            def write(cache, new, s0=s0, s1=s1):
                cache[:, :, s0:s1].copy_(new)
            logits = m.forward_static(x, cos, sin, c.k, c.v, write, s1, mask)
        self.length = self.length_hi = n
        return to_host(logits[0])

    @torch.no_grad()
    def prefill_split(self, embeds: np.ndarray, positions: np.ndarray, select) -> tuple[np.ndarray, np.ndarray]:
        """The prompt through layers below the split on every row, then the layers from it on the rows
        ``select`` keeps, at their original M-RoPE ids (one call each). ``select(outputs)``: a Mapping
        of the lower layers' outputs as host arrays, read lazily (``hidden_states`` [1, S, D],
        ``attention`` [S]: layer K-1's last-query head-mean row, ``present_key_i`` / ``present_value_i``
        [1, KV, S, d]) -> kept sequence indices, ascending. -> (logits [V] float32, the kept indices)."""
        m, c = self.module, self._cache
        k = c.split
        if not 0 < k < len(m.text.layers):
            raise PromptError(f"prefill_split: this LLM engine has no split layer inside its {len(m.text.layers)} layers")
        embeds, positions = self._prompt(embeds, positions)
        n = len(embeds)
        pos = self._tensor(positions, torch.int64)[:, None]
        x = self._tensor(embeds)[None]
        cos, sin = mrope_cos_sin(pos, m.inv_freq, m.sections, x.dtype)

        def write_all(cache, new):
            cache[:, :, :n].copy_(new)
        x, row = m.layers_static(x, cos, sin, c.k, c.v, 0, k, write_all, n, None, row=True)
        outputs = {"hidden_states": x, "attention": row}
        for i in range(k):
            outputs[f"present_key_{i}"], outputs[f"present_value_{i}"] = c.k[i, :, :, :n], c.v[i, :, :, :n]
        keep = np.asarray(select(HostView(outputs, to_host)), np.int64)
        if keep.ndim != 1 or not 0 < len(keep) <= n or np.any(np.diff(keep) <= 0) or keep[0] < 0 or keep[-1] >= n:
            raise PromptError(f"prefill_split: the kept rows must be ascending indices into the {n} prompt rows")
        rows = torch.from_numpy(keep).to(x.device)
        kept = len(keep)

        def write_kept(cache, new):
            cache[:, :, :kept].copy_(new)
        x, _ = m.layers_static(x[:, rows], cos[:, :, rows], sin[:, :, rows], c.k, c.v, k, len(m.text.layers),
                               write_kept, kept, None)
        self.length, self.length_hi = n, kept
        return to_host(m.head_static(x)[0]), keep

    def _decode_body(self) -> torch.Tensor:
        """The static-shape decode step over the cache's buffers (captured on CUDA)."""
        m, c = self.module, self._cache
        cos, sin = mrope_cos_sin(c.position, m.inv_freq, m.sections, c.embed.dtype)
        x = c.embed
        for start, stop, index in ((0, c.split, c.index), (c.split, len(m.text.layers), c.index_hi)):
            if start == stop:
                continue
            mask = (c.rows <= index)[None, None, None]  # (1, 1, 1, max_len): rows written so far and this one
            write = lambda cache, new, index=index: cache.index_copy_(2, index, new)  # noqa: E731
            x, _ = m.layers_static(x, cos, sin, c.k, c.v, start, stop, write, c.max_len, mask)
        return m.head_static(x)

    @torch.no_grad()
    def decode(self, embed: np.ndarray, position: int) -> np.ndarray:
        """One token: embed [D] float32, its M-RoPE position (the same in all 3 rows) -> logits [V]."""
        c = self._cache
        if self.length == 0:
            raise PromptError("decode before prefill")
        if self.length >= self.max_len:
            raise PromptError(f"decode past the step's cache of {self.max_len} rows (open_step(max_len) with "
                              f"prompt + new tokens)")
        c.embed.copy_(self._tensor(np.asarray(embed, np.float32).reshape(1, 1, -1)))
        c.position.fill_(int(position))
        c.index.fill_(self.length)
        c.index_hi.fill_(self.length_hi)
        if c.k.device.type == "cuda" and c.graph is None:
            self._capture()
        if c.graph:
            c.graph.replay()
            logits = c.logits
        else:
            logits = self._decode_body()
        self.length += 1
        self.length_hi += 1
        return to_host(logits[0])

    def _capture(self) -> None:
        """Warm up on a side stream (allocator, kernel selection), then capture one decode step.
        The warm-up runs the real step: it writes this token's rows, which the replay rewrites."""
        c = self._cache
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                self._decode_body()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                c.logits = self._decode_body()
        except RuntimeError as e:  # an op this torch build cannot capture: same step, launched eagerly
            log.warning("CUDA graph capture of the decode step failed (%s); decoding without it", e)
            c.graph, c.logits = False, None
            return
        c.graph = graph


class StepPool:
    """``open_step`` of one LLM module, with idle caches kept for the next requests (their captured
    decode graphs with them): a request takes one that fits without being twice its size (the
    decode step reads the whole cache, so a far larger one would cost bandwidth on every token);
    at most ``keep`` idle caches, one per power-of-two size class. Concurrent steps get their own."""

    def __init__(self, module: LanguageModel, device: torch.device, dtype: torch.dtype, keep: int = 2,
                 split: int | None = None):
        if module.attention != "sdpa":
            raise ValueError(f"the static-cache step runs the sdpa formulation, not {module.attention!r}")
        self.module, self.device, self.dtype, self.keep = module, device, dtype, keep
        self.split = len(module.text.layers) if split is None else int(split)  # None: no pruning inside the LLM
        self._lock = threading.RLock()  # release() runs from LLMStep.__del__, whenever a step is dropped
        self._idle: OrderedDict[int, _Cache] = OrderedDict()  # size class -> cache, least recently used first

    def open(self, max_len: int) -> LLMStep:
        if int(max_len) < 1:
            raise PromptError(f"open_step: max_len must be >= 1, got {max_len}")
        with self._lock:
            key = next((k for k, c in self._idle.items() if max_len <= c.max_len < 2 * max_len), None)
            cache = self._idle.pop(key) if key is not None else None
        if cache is None:
            cache = _Cache(self.module, int(max_len), self.device, self.dtype, self.split)
        return LLMStep(self, cache)

    def release(self, cache: _Cache) -> None:
        with self._lock:
            key = cache.max_len.bit_length()
            if key not in self._idle or self._idle[key].max_len < cache.max_len:
                self._idle[key] = cache
            self._idle.move_to_end(key)
            while len(self._idle) > self.keep:
                self._idle.popitem(last=False)
