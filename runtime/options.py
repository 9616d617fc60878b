"""The options of one request (``Pipeline.answer``), with their defaults: the one place they are
declared (scripts/infer.py, the server and the evaluator read them from here)."""
from __future__ import annotations

from dataclasses import dataclass

from .prefill import DEFAULT_CHUNK


@dataclass(frozen=True)
class Options:
    num_frames: int | None = 8  # None: Qwen fps sampling (fps, max_frames)
    fps: float = 2.0
    max_frames: int = 64
    max_pixels: int | None = None  # per frame, primary; None: the manifest's
    min_pixels: int | None = None
    method: str = "visionzip"
    retention: float = 0.25  # of the visual tokens, on average per group
    budget: int | None = None  # tokens per group on average (overrides retention)
    cap: int | None = None  # max tokens per group; None: all of a group's tokens
    assistant: bool = True  # off: uniform budgets
    assistant_max_pixels: int | None = None  # reduced resolution for the prior
    assistant_num_frames: int | None = None  # fewer frames for the prior
    max_new_tokens: int = 32
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int = 0
    ignore_eos: bool = False  # benchmarks: always decode max_new_tokens
    vision_chunk: int | None = None  # temporal groups per vision call (bounds ViT memory); None: all
    prefill_chunk: int | None = DEFAULT_CHUNK  # prompt tokens per LLM/prior prefill call; None or 0: one call
    memory_budget: int | None = None  # bytes the process may peak at; None: RSS now + available memory
    fit: str = "off"  # "auto": lower frames/pixels until the run fits the context and the memory budget
    dycoke_kv: bool = False  # DyCoke's decode-time KV pruning (needs the split LLM, runtime/llm_split.py)
    kv_prune_ratio: float = 0.8  # DyCoke's p: share of the visual KV rows layers >= L drop per step
    encoder_slack: float | None = None  # budget-aware encoder resolution (runtime/encoder_plan.py); None: off
    prior_layers: tuple[int, ...] | None = None  # assistant layers of the prior, among the exported ones; None: all
