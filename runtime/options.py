"""The options of one request (``Pipeline.answer``), with their defaults: the one place they are
declared (scripts/infer.py, the server and the evaluator read them from here)."""
from __future__ import annotations

from dataclasses import dataclass

from .compression.registry import get_method
from .errors import BudgetError, PromptError
from .prefill import DEFAULT_CHUNK

FITS = ("auto", "strict")  # auto: fit the context and memory by fewer frames/pixels (one note); strict: an error


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
    fit: str = "auto"  # FITS: "auto" lowers frames/pixels until the run fits the context and memory (one note)
    dycoke_kv: bool = False  # DyCoke's decode-time KV pruning (needs the split LLM, runtime/llm_split.py)
    kv_prune_ratio: float = 0.8  # DyCoke's p: share of the visual KV rows layers >= L drop per step
    encoder_slack: float | None = None  # budget-aware encoder resolution (runtime/encoder_plan.py); None: off
    prior_layers: tuple[int, ...] | None = None  # assistant layers of the prior, among the exported ones; None: all


def _bad(flag: str, value, want: str) -> BudgetError:
    return BudgetError(f"{flag} {value!r}: {want}")


def check_request(question: str, opts: Options) -> None:
    """Raise one error naming the flag for a question or a value no request can use, before any
    work. Values that depend on the video or the model (a budget above a group's tokens, pixels
    below one patch) are checked where those are known (``admission.admit``)."""
    if not isinstance(question, str) or not question.strip():
        raise PromptError(f"--question {question!r}: ask something about the video")
    get_method(opts.method)
    if opts.num_frames is not None and (not isinstance(opts.num_frames, int) or opts.num_frames < 1):
        raise _bad("--frames", opts.num_frames, "expected a positive number of frames (0 on the command line: fps sampling)")
    if not opts.fps > 0 or not isinstance(opts.max_frames, int) or opts.max_frames < 1:
        raise _bad("--fps/--max-frames", (opts.fps, opts.max_frames), "expected a positive rate and frame count")
    if not 0 < opts.retention <= 1:
        raise _bad("--retention", opts.retention, "expected a share of the visual tokens in (0, 1]")
    if opts.budget is not None and (not isinstance(opts.budget, int) or opts.budget < 1):
        raise _bad("--budget", opts.budget, "expected at least 1 token per temporal group (or use --retention)")
    if opts.cap is not None and (not isinstance(opts.cap, int) or opts.cap < 1):
        raise _bad("--cap", opts.cap, "expected at least 1 token per temporal group")
    if opts.cap is not None and opts.budget is not None and opts.cap < opts.budget:
        raise BudgetError(f"--cap {opts.cap} is below --budget {opts.budget}: no group could reach the average")
    for flag, value in (("--max-pixels", opts.max_pixels), ("--min-pixels", opts.min_pixels),
                        ("--assistant-max-pixels", opts.assistant_max_pixels),
                        ("--assistant-frames", opts.assistant_num_frames)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise _bad(flag, value, "expected a positive integer")
    if not isinstance(opts.max_new_tokens, int) or opts.max_new_tokens < 1:
        raise _bad("--max-new-tokens", opts.max_new_tokens, "expected at least 1")
    if not opts.temperature >= 0:
        raise _bad("--temperature", opts.temperature, "expected 0 (greedy) or more")
    if not 0 < opts.top_p <= 1:
        raise _bad("--top-p", opts.top_p, "expected a probability mass in (0, 1]")
    if opts.fit not in FITS:
        raise _bad("--fit", opts.fit, f"expected one of {', '.join(FITS)}")
