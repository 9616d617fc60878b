"""Admission: decide, before any engine runs, whether a request fits the context and the memory.

Once the frames are sampled, the input grids follow (each model's family ``plan``), hence the
visual tokens of the primary and the assistant, the kept tokens, the prompt lengths and the
activation peak of every stage. ``assess`` turns those numbers into a verdict; ``admit`` runs it for a
pipeline request and, with ``fit="auto"``, lowers the pixels and then the frames until it fits.

Memory model (ONNX Runtime, fp32 activations; weights are already resident when this runs, so
the budget is compared with the process's RSS now plus the run's additional peak):

- held for the whole run: the primary's preprocessed input (``family.pixel_bytes``: Qwen2.5-VL's
  patches ``[t*h*w, 3*tp*p^2]``, LLaVA-OV's frames ``[T, 3, 384, 384]``) and its vision outputs
  (tokens, metric and importance per visual token);
- preprocessing (``family.preprocess_bytes``): the resized frames and their float copies;
- vision, per call of ``vision_chunk`` temporal groups (``family.vision_bytes``): per patch the
  hidden/qkv/MLP activations ``10 e + 3 I`` floats, and attention scores, which are family-specific:
  Qwen2.5-VL's windowed blocks plus ``3 * chunk * heads * P^2`` for its full-attention blocks
  (each attends within one group of P patches); SigLIP's full attention in every layer over each
  frame's 729 patches (no windows), ``3 * chunk * heads * 729^2``;
- prefill of ``S`` tokens in chunks of ``C``: the KV cache twice (past and present are both
  alive at a chunk boundary) ``2 * 2 * layers * kv_heads * d * S``, per-chunk activations
  ``C * (8 h + 3 I)``, attention scores ``3 * heads * C * S`` and the KV heads expanded to the
  query heads ``2 * heads * S * d``. With ``C`` fixed this is linear in ``S``; one-shot (``C = S``)
  it is quadratic;
- each engine keeps its own high-water mark (ONNX Runtime's CPU arena does not shrink), so the
  stages' peaks add up: peak = RSS now + OVERHEAD * (held + max(preprocessing, sum of stages));
- everything times ``OVERHEAD`` for the allocator (ORT's arena, copies at graph boundaries),
  calibrated on measured peak RSS (docs/runtime.md, "Long videos, memory and bad input").
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace

import numpy as np

from .compression.dytok import budget_for_retention
from .compression.registry import get_method
from .errors import PromptError
from .families import REGISTRY, family_of
from .families.qwen2_5_vl import preprocess_bytes, vision_bytes  # noqa: F401 (Qwen's terms, by their old names)

FLOAT = 4  # fp32 activations
OVERHEAD = 1.5
MIN_FIT_PIXELS = 4 * 28 * 28  # the smallest frame --fit auto goes to: 2 x 2 merged tokens
QWEN = REGISTRY["qwen2_5_vl"]


class AdmissionError(PromptError):
    """The request does not fit the context or the memory budget; the message names the flags that fix it."""


@dataclass(frozen=True)
class ModelPlan:
    """What one model (primary or assistant) will process. grid: patch grid (t, h, w)."""
    grid: tuple[int, int, int]
    text_tokens: int  # prompt without the visual tokens
    kept_tokens: int  # visual tokens that reach the LLM (all of them for the assistant's prior)
    new_tokens: int = 0
    prefill_layers: int | None = None  # LLM layers that run (the prior stops at its deepest layer)
    prefill_chunk: int | None = None  # None: one call
    visual: int | None = None  # the LLM's visual tokens of ``grid`` (None: 2x2 merged patches)

    @property
    def visual_tokens(self) -> int:
        t, h, w = self.grid
        return self.visual if self.visual is not None else t * h * w // 4

    @property
    def sequence(self) -> int:
        return self.text_tokens + self.kept_tokens + self.new_tokens


def vision_output_bytes(m: dict, visual_tokens: int) -> float:
    """The vision graph's outputs: tokens, metric and importance per visual token."""
    return float(visual_tokens * (m["hidden_size"] + m["vision_key_dim"] + 1) * FLOAT)


def prefill_bytes(m: dict, tokens: int, chunk: int | None, layers: int | None = None) -> float:
    """Peak bytes of prefilling ``tokens`` tokens in chunks of ``chunk`` (None: one call)."""
    s = tokens
    c = min(chunk or s, s)
    layers = layers or m["num_layers"]
    h, inter, heads, d = m["hidden_size"], m["intermediate_size"], m["num_heads"], m["head_dim"]
    kv = 2 * 2 * layers * m["num_kv_heads"] * d * s
    acts = c * (8 * h + 3 * inter) + 3 * heads * c * s + 2 * heads * s * d + s * h
    return float((kv + acts) * FLOAT)


@dataclass
class Verdict:
    ok: bool
    problems: list[str]
    stages: dict[str, float]  # bytes each stage adds at its peak
    peak: float  # estimated process peak, bytes (RSS now + held + largest stage, times OVERHEAD)
    budget: float
    primary: ModelPlan
    assistant: ModelPlan | None
    context: dict[str, int] = field(default_factory=dict)
    failing: set[str] = field(default_factory=set)  # "primary" / "assistant"

    @property
    def memory_ok(self) -> bool:
        return self.peak <= self.budget

    def grids(self) -> str:
        out = f"primary {self.primary.grid}"
        return out + (f", assistant {self.assistant.grid}" if self.assistant is not None else "")

    def summary(self) -> str:
        p = self.primary
        parts = [f"primary {p.visual_tokens} visual tokens (grid {p.grid}), {p.kept_tokens} kept, prompt "
                 f"{p.text_tokens + p.kept_tokens} + {p.new_tokens} new of context {self.context['primary']}"]
        if self.assistant is not None:
            a = self.assistant
            parts.append(f"assistant {a.visual_tokens} visual tokens (grid {a.grid}), prompt {a.sequence} of context "
                         f"{self.context['assistant']}")
        parts.append(f"estimated peak memory {self.peak / 1e9:.2f} GB of budget {self.budget / 1e9:.2f} GB")
        return "; ".join(parts)


def assess(primary_model: dict, primary: ModelPlan, assistant_model: dict | None, assistant: ModelPlan | None,
           vision_chunk: int | None, budget: float, rss_now: float = 0.0, families=(QWEN, QWEN)) -> Verdict:
    """Context and memory verdict for one request (pure: numbers in, numbers out). ``families``:
    the primary's and the assistant's (``runtime.families``), whose vision terms apply."""
    problems: list[str] = []
    failing: set[str] = set()
    context = {"primary": primary_model["context_length"]}
    if primary.sequence > context["primary"]:
        problems.append(f"the primary's prompt of {primary.text_tokens + primary.kept_tokens} tokens "
                        f"({primary.kept_tokens} kept visual) plus {primary.new_tokens} new tokens exceeds its context "
                        f"of {context['primary']}")
        failing.add("primary")
    pf, af = families
    held = pf.pixel_bytes(primary_model, primary.grid) + vision_output_bytes(primary_model, primary.visual_tokens)
    stages = {"primary vision": pf.vision_bytes(primary_model, primary.grid, vision_chunk),
              "primary prefill": prefill_bytes(primary_model, primary.text_tokens + primary.kept_tokens,
                                               primary.prefill_chunk)}
    if assistant is not None and assistant_model is not None:
        context["assistant"] = assistant_model["context_length"]
        if assistant.sequence > context["assistant"]:
            problems.append(f"the assistant's prompt of {assistant.sequence} tokens ({assistant.visual_tokens} visual) "
                            f"exceeds its context of {context['assistant']}")
            failing.add("assistant")
        stages["assistant vision"] = (af.pixel_bytes(assistant_model, assistant.grid) + vision_output_bytes(
            assistant_model, assistant.visual_tokens) + af.vision_bytes(assistant_model, assistant.grid, vision_chunk))
        stages["assistant prior"] = prefill_bytes(assistant_model, assistant.sequence, assistant.prefill_chunk,
                                                  assistant.prefill_layers)
    biggest = max(stages, key=stages.get)
    # Each engine keeps its allocator's high-water mark (ONNX Runtime's CPU arena does not shrink),
    # so the engines' peaks add up; preprocessing's float copies come before them.
    pre = pf.preprocess_bytes(primary_model, primary.grid)
    if assistant is not None and assistant_model is not None:
        pre = max(pre, af.preprocess_bytes(assistant_model, assistant.grid))
    peak = rss_now + OVERHEAD * (held + max(pre, sum(stages.values())))
    if peak > budget:
        problems.append(f"the estimated peak of {peak / 1e9:.2f} GB ({biggest} the largest stage) exceeds the memory "
                        f"budget of {budget / 1e9:.2f} GB")
        failing.add("assistant" if biggest.startswith("assistant") else "primary")
    return Verdict(not problems, problems, stages, peak, budget, primary, assistant, context, failing)


# ---- the pipeline request ----------------------------------------------------------------------

def available_memory() -> float:
    """Bytes the OS can still give (MemAvailable; else free pages)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return float("inf")


def current_rss() -> float:
    try:
        with open("/proc/self/statm") as f:
            return float(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0.0


def parse_bytes(text: str) -> int:
    """'12G', '800M', '1.5GB', '4096' -> bytes (powers of 1000; 'GiB'/'MiB' powers of 1024)."""
    s = str(text).strip().upper().removesuffix("B")
    units = {"K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "KI": 2 ** 10, "MI": 2 ** 20, "GI": 2 ** 30, "TI": 2 ** 40}
    for suffix in sorted(units, key=len, reverse=True):
        if s.endswith(suffix):
            number, scale = s[: -len(suffix)], units[suffix]
            break
    else:
        number, scale = s, 1
    try:
        value = float(number) * scale
    except ValueError:
        raise ValueError(f"memory size {text!r}: expected a number with an optional K/M/G/T suffix, e.g. 12G") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"memory size {text!r} must be positive")
    return int(value)


def kept_estimate(method: str, groups: int, per_group: int, retention: float, budget: int | None, cap: int | None) -> int:
    """Visual tokens that reach the LLM's prefill (a method that ignores budgets: by its retention,
    approximately; one that prunes inside the LLM: all of them)."""
    m = get_method(method)
    if not m.compresses or m.in_llm:
        return groups * per_group
    if not m.uses_budgets:
        return math.ceil(groups * per_group * min(max(retention, 0.0), 1.0))
    b = budget if budget is not None else budget_for_retention(per_group, retention)
    return groups * min(b, cap if cap is not None else per_group, per_group)


@dataclass(frozen=True)
class Request:
    """The knobs ``--fit auto`` turns, and the facts it cannot change."""
    frames: int  # decoded frames for the primary
    height: int
    width: int
    max_pixels: int  # 0 where the family has no pixel bounds
    min_pixels: int
    assistant_frames: int | None  # None: no assistant
    assistant_max_pixels: int
    text_tokens: int
    vision_chunk: int | None = None  # temporal groups per vision call
    prefill_chunk: int | None = None  # prompt tokens per prefill call
    assistant_text_tokens: int | None = None  # the assistant's prompt without visual tokens (None: text_tokens)


def plan_request(manifest, req: Request, opts) -> tuple[dict, ModelPlan, dict | None, ModelPlan | None]:
    """The primary's and the assistant's plans for ``req``, each by its own family."""
    family = family_of(manifest, "primary")
    pm = manifest.model("primary")
    cfg = family.config(manifest.section("primary", "preprocess"), req.max_pixels, req.min_pixels)
    grid = family.plan(req.height, req.width, req.frames, cfg)
    groups, rows, cols = family.merged_grid(grid, pm)
    kept = kept_estimate(opts.method, groups, rows * cols, opts.retention, opts.budget, opts.cap)
    primary = ModelPlan(grid, req.text_tokens, kept, opts.max_new_tokens, None, req.prefill_chunk or None,
                        groups * rows * cols)
    if req.assistant_frames is None:
        return pm, primary, None, None
    am, family = manifest.model("assistant"), family_of(manifest, "assistant")
    agrid = family.plan(req.height, req.width, req.assistant_frames,
                        family.config(manifest.section("assistant", "preprocess"), req.assistant_max_pixels, req.min_pixels))
    a_visual = int(np.prod(family.merged_grid(agrid, am)))
    layers = max(am.get("prior_layers") or [am["num_layers"] - 1]) + 1
    inputs = {t["name"] for t in manifest.data["graphs"].get("assistant_prior", {}).get("inputs", [])}
    chunk = (req.prefill_chunk or None) if "attention_mask" in inputs else None  # old one-shot prior graphs
    assistant = ModelPlan(agrid, req.assistant_text_tokens or req.text_tokens, a_visual, 0, layers, chunk, a_visual)
    return pm, primary, am, assistant


def _shrink(req: Request, who: str, floor_pixels: int, frames_too: bool) -> Request | None:
    """One step down for ``who``: its pixels towards ``floor_pixels``, else (``frames_too``) its
    frames towards 2; None when neither can go lower."""
    if who == "primary":
        if req.max_pixels > floor_pixels:
            p = max(floor_pixels, int(req.max_pixels * 0.7))
            return replace(req, max_pixels=p, min_pixels=min(req.min_pixels, p))
        if frames_too and req.frames > 2:
            n = max(2, int(req.frames * 0.7) // 2 * 2)
            return replace(req, frames=n, assistant_frames=None if req.assistant_frames is None else min(req.assistant_frames, n))
        return None
    if req.assistant_max_pixels > floor_pixels:
        p = max(floor_pixels, int(req.assistant_max_pixels * 0.7))
        return replace(req, assistant_max_pixels=p, min_pixels=min(req.min_pixels, p))
    if frames_too and req.assistant_frames and req.assistant_frames > 2:
        return replace(req, assistant_frames=max(2, int(req.assistant_frames * 0.7) // 2 * 2))
    return None


def fit_request(evaluate, req: Request, qwen_min_pixels: int) -> tuple[Request, Verdict]:
    """Lower the failing model's pixels (to Qwen's min_pixels), then its frames (to 2), then its
    pixels (to MIN_FIT_PIXELS) until ``evaluate(req)`` admits it. Returns the first request that
    fits, else the last one tried with its verdict."""
    verdict = evaluate(req)
    if not verdict.memory_ok and req.vision_chunk is None and max(verdict.stages, key=verdict.stages.get).endswith("vision"):
        req, verdict = replace(req, vision_chunk=2), evaluate(replace(req, vision_chunk=2))  # exact, and free
    while (not verdict.memory_ok and max(verdict.stages, key=verdict.stages.get).endswith(("prefill", "prior"))
           and (req.prefill_chunk is None or req.prefill_chunk > 256)):  # smaller chunks: exact too
        step = replace(req, prefill_chunk=2048 if req.prefill_chunk is None else max(256, req.prefill_chunk // 2))
        req, verdict = step, evaluate(step)
    for floor, frames_too in ((qwen_min_pixels, False), (qwen_min_pixels, True), (MIN_FIT_PIXELS, True)):
        while not verdict.ok:
            steps = (_shrink(req, who, floor, frames_too) for who in ("primary", "assistant") if who in verdict.failing)
            step = next((s for s in steps if s is not None), None)
            if step is None:
                break
            req, verdict = step, evaluate(step)
    return req, verdict


def admit(pipe, frames, question: str, opts):
    """Admission for ``Pipeline.answer``: returns (frames, opts), adjusted under ``fit="auto"`` (the
    default) with one stderr note, or raises ``AdmissionError`` naming the numbers and the flags
    that fix them. Checks the question and the pixel bounds first; notes what it changes."""
    from .notes import note
    from .video import SampledFrames

    for name in ("prefill_chunk", "vision_chunk", "memory_budget"):
        value = getattr(opts, name)
        bad = not isinstance(value, (int, np.integer)) or value < 0 or (value == 0 and name != "prefill_chunk")
        if value is not None and bad:
            raise AdmissionError(f"--{name.replace('_', '-')} {value!r}: expected a positive integer")
    m, family = pipe.m, pipe.family
    n, height, width = len(frames.frames), frames.frames.shape[1], frames.frames.shape[2]
    pre = m.section("primary", "preprocess")
    if family.check_pixels is not None:
        max_px, min_px = family.check_pixels(pre, opts.max_pixels, opts.min_pixels)
        if (max_px, min_px) != (opts.max_pixels, opts.min_pixels):
            opts = replace(opts, max_pixels=max_px, min_pixels=min_px)
    elif opts.max_pixels or opts.min_pixels:
        note(f"--max-pixels/--min-pixels do not apply: {family.name} encodes every frame at one fixed size")
    if pad := -n % family.frames_per_group:
        note(f"{n} frame{'s' if n > 1 else ''}: {family.name} encodes frames in groups of {family.frames_per_group}; the last frame is "
             f"repeated to make {n + pad}")
    use_assistant = pipe.uses_prior(opts)
    # pixel bounds (min, max) per model; None: the family encodes every frame at one fixed size
    bounds = family.pixel_bounds(pre)
    a_family = pipe.families["assistant"] if use_assistant else family
    a_bounds = a_family.pixel_bounds(m.section("assistant", "preprocess")) if use_assistant else bounds
    if opts.assistant_max_pixels and a_bounds is None:
        note(f"--assistant-max-pixels does not apply: {a_family.name} encodes every frame at one fixed size")
    max_pixels = (opts.max_pixels or bounds[1]) if bounds else 0
    min_pixels = opts.min_pixels or (bounds or a_bounds or (0, 0))[0]
    a_max = (opts.assistant_max_pixels or (max_pixels if bounds else a_bounds[1])) if a_bounds else 0
    a_frames = (min(opts.assistant_num_frames, n) if opts.assistant_num_frames else n) if use_assistant else None
    ids, _ = pipe.prompt.input_ids(question, 0)
    context = m.model("primary")["context_length"]
    if len(ids) + opts.max_new_tokens >= context:
        raise AdmissionError(f"the question is {len(ids)} tokens with the prompt template; with --max-new-tokens "
                             f"{opts.max_new_tokens} it leaves no room for the video in the context of {context} tokens: "
                             f"shorten --question")
    text = {w: len(pipe.prompts[w].input_ids(question, 0)[0]) + len(pipe.suffix[w]) for w in pipe.prompts}
    req = Request(n, height, width, max_pixels, min_pixels, a_frames, a_max, text["primary"], opts.vision_chunk,
                  opts.prefill_chunk or None, text.get("assistant"))
    rss = current_rss()
    budget = float(opts.memory_budget) if opts.memory_budget else rss + available_memory()
    families = (pipe.family, pipe.families.get("assistant", pipe.family))

    def evaluate(r: Request) -> Verdict:
        pm, p, am, a = plan_request(m, r, opts)
        return assess(pm, p, am, a, r.vision_chunk, budget, rss, families)

    verdict = evaluate(req)
    per_group = verdict.primary.visual_tokens // max(verdict.primary.grid[0], 1)
    if opts.budget is not None and opts.budget > per_group:
        note(f"--budget {opts.budget} is more than the {per_group} tokens of a temporal group at this size; "
             f"every group keeps all of its tokens")
    if verdict.ok:
        return frames, opts
    if opts.fit == "auto":
        floor = min([b[0] for b in (bounds, a_bounds) if b] or [0])
        fitted, verdict = fit_request(evaluate, req, min(floor, max_pixels) if bounds else floor)
        if verdict.ok:
            changes = []
            if fitted.frames != req.frames:
                pick = np.linspace(0, n - 1, fitted.frames).round().astype(int)
                frames = SampledFrames(frames.frames[pick], frames.indices[pick], frames.timestamps[pick], frames.fps)
                changes.append(f"frames {req.frames} -> {fitted.frames}")
            if fitted.vision_chunk != req.vision_chunk:
                changes.append(f"vision chunk {fitted.vision_chunk} groups")
            if fitted.prefill_chunk != req.prefill_chunk:
                changes.append(f"prefill chunk {req.prefill_chunk or 'one call'} -> {fitted.prefill_chunk} tokens")
            if fitted.max_pixels != req.max_pixels:
                changes.append(f"max pixels {req.max_pixels} -> {fitted.max_pixels}")
            if a_frames is not None and fitted.assistant_frames != req.assistant_frames:
                changes.append(f"assistant frames {req.assistant_frames} -> {fitted.assistant_frames}")
            if a_frames is not None and fitted.assistant_max_pixels != req.assistant_max_pixels:
                changes.append(f"assistant max pixels {req.assistant_max_pixels} -> {fitted.assistant_max_pixels}")
            opts = replace(opts, max_pixels=fitted.max_pixels or None, vision_chunk=fitted.vision_chunk,
                           prefill_chunk=fitted.prefill_chunk, min_pixels=fitted.min_pixels or None,
                           assistant_max_pixels=(fitted.assistant_max_pixels or None) if a_frames is not None
                           else opts.assistant_max_pixels,
                           assistant_num_frames=fitted.assistant_frames if a_frames is not None else opts.assistant_num_frames)
            note(f"--fit auto: {', '.join(changes)} to fit ({verdict.summary()})")
            return frames, opts
    fix = ("even at the fewest frames and pixels --fit auto tries" if opts.fit == "auto" else
           "(--fit strict)")
    raise AdmissionError(
        f"the request does not fit {fix}: {'; '.join(verdict.problems)} (grids: {verdict.grids()}). Lower --frames/"
        f"--max-frames or --max-pixels (primary), --assistant-frames/--assistant-max-pixels (assistant) or --retention, "
        f"set --prefill-chunk/--vision-chunk, raise --memory-budget"
        + (", or leave --fit at auto" if opts.fit != "auto" else ", or lower --max-new-tokens"))
