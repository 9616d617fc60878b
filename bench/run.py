"""The timed run: every configuration on one video in one process, interleaved rounds, medians per
stage after warm-up, peak memory, and each stage's FLOPs (the floor the report divides by)."""
from __future__ import annotations

import resource
from dataclasses import asdict, replace

import numpy as np

from runtime import flops as F
from runtime import llm_split
from runtime.compression import get_method
from runtime.encoder_plan import plan_group_grids
from runtime.errors import DyTokError, EngineError, ManifestError
from runtime.families import family_of
from runtime.manifest import load_manifest
from runtime.options import Options
from runtime.pipeline import load_pipeline
from runtime.video import sample_video

from .configs import Config, default_configs, prior_scale
from .host import machine_info
from .report import STAGES

RUNTIME_BACKENDS = ("auto", "onnxruntime", "tensorrt", "torch")


def stage_flops(manifest, grid, kept: int, prompt_len: int, n_vis: int, opts: Options,
                assistant_grid=None, assistant_len=0, families=None) -> dict:
    """FLOPs per stage; ``families``: the pipeline's per-model families (their vision FLOPs)."""
    families = families or {w: family_of(manifest, w) for w in manifest.data["models"]}
    pm = manifest.model("primary")
    out = {"vision": families["primary"].vision_flops(pm, grid),
           "prefill": F.llm_flops(pm, prompt_len - n_vis + kept),
           "decode": F.decode_flops(pm, prompt_len - n_vis + kept, opts.max_new_tokens - 1)}
    if assistant_grid is not None and manifest.has_assistant:
        am = manifest.model("assistant")
        out["assistant"] = families["assistant"].vision_flops(am, assistant_grid) + F.prior_flops(am, assistant_len)
    return out


def _split_unavailable(manifest, opts) -> str | None:
    try:
        llm_split.check(manifest, opts)
    except DyTokError as e:
        return str(e)
    return None


def _eager(manifest, device: str, attn: str, threads: int | None):
    """The PyTorch backends (export.eager_baseline.Eager), or why they cannot run."""
    try:
        from export.eager_baseline import Eager
    except ImportError as e:
        return None, f"the eager rows need the export extra (pip install -e '.[export]'): {e}"
    try:
        return Eager(manifest, device, attn, threads), None
    except EngineError as e:
        return None, str(e)
    except RuntimeError as e:  # torch's, e.g. out of device memory while loading the pair: the rows say so
        return None, why(e)


def why(e: BaseException) -> str:
    """An exception in one line for a report row: its type and the first line of its message."""
    return f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"


def run_benchmark(artifacts: str, video: str, question: str, frames: int = 16, runs: int = 3, warmup: int = 1,
                  max_new_tokens: int = 16, max_pixels: int | None = None, min_pixels: int | None = None,
                  threads: int | None = None, device: str = "cpu", configs: list[Config] | None = None,
                  runtime_backend: str = "auto", attn: str | None = None, variants: dict[str, str] | None = None,
                  interleave: bool = True, log=print) -> dict:
    """``runtime_backend``: "onnxruntime", "tensorrt" (native engines from build_engines.py), "torch"
    (the pipeline on PyTorch engines, on ``device``) or "auto" (torch for --torch-only folders,
    else ONNX Runtime; on cuda, torch when ONNX Runtime has no CUDA provider). ``attn``:
    transformers' attention for the eager rows (default: sdpa, transformers' own default, on CPU
    and GPU; a row's ``attn`` overrides it). ``variants``: name -> artifact folder (quantized
    copies) for rows with that ``variant``, on ONNX Runtime. Weights' dtype: the folder's."""
    if runtime_backend not in RUNTIME_BACKENDS:
        raise EngineError(f"runtime backend {runtime_backend!r}: expected one of {', '.join(RUNTIME_BACKENDS)}")
    attn = attn or "sdpa"
    manifest = load_manifest(artifacts)
    skipped: dict[str, str] = {}  # backend -> why its rows did not run
    runtime = None
    eager, why = _eager(manifest, device, attn, threads)
    if eager is None:
        skipped["eager"] = why
    if runtime_backend == "auto":
        runtime_backend = "torch" if manifest.torch_only else "onnxruntime"
        if device == "cuda" and eager is not None:
            import onnxruntime
            if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
                runtime_backend = "torch"
    if runtime_backend == "torch":
        if eager is None:
            skipped["runtime"] = skipped["eager"]
        else:
            runtime = eager.pipeline  # the same pipeline and engines: the rows differ by compression only
    else:
        try:
            runtime = load_pipeline(artifacts, ("cuda",) if device == "cuda" else ("cpu",), threads,
                                    backend=runtime_backend)
        except (EngineError, ManifestError) as e:
            skipped["runtime"] = str(e)
    pipes = {"fp32": runtime}
    for name, folder in (variants or {}).items():
        try:
            pipes[name] = load_pipeline(folder, ("cuda",) if device == "cuda" else ("cpu",), threads)
        except (EngineError, ManifestError) as e:
            skipped[f"variant {name}"] = str(e)
    host = runtime or (eager.pipeline if eager else None)
    if host is None:
        raise EngineError(f"no backend can run: {skipped}")
    clip = sample_video(video, num_frames=frames)
    bounds = host.family.pixel_bounds(manifest.section("primary", "preprocess"))
    if bounds is None:  # every frame at the family's one size: pixel options do not apply
        max_pixels = min_pixels = None
    elif host.family.check_pixels is not None:  # once, so the eager baseline and every row see the same bounds
        max_pixels, min_pixels = host.family.check_pixels(manifest.section("primary", "preprocess"), max_pixels,
                                                          min_pixels)
    a_bounds = host.families["assistant"].pixel_bounds(manifest.section("assistant", "preprocess")) \
        if manifest.has_assistant else None
    base = Options(num_frames=frames, max_pixels=max_pixels, min_pixels=min_pixels, max_new_tokens=max_new_tokens,
                   ignore_eos=True)
    configs = configs or default_configs()
    results: list[dict | None] = [None] * len(configs)
    plans = {}  # config index -> (opts, row attention)
    for k, cfg in enumerate(configs):
        f_div, p_div = prior_scale(cfg)
        opts = replace(base, method=cfg.method, retention=cfg.retention, assistant=cfg.assistant,
                       assistant_num_frames=frames // f_div if f_div > 1 else None,
                       assistant_max_pixels=((bounds and max_pixels) or a_bounds[1]) // p_div
                       if p_div > 1 and a_bounds else None, encoder_slack=cfg.encoder_slack, dycoke_kv=cfg.dycoke_kv)
        why = skipped.get(cfg.backend) or (skipped.get(f"variant {cfg.variant}") if cfg.backend == "runtime" else None)
        if not why and p_div > 1 and cfg.assistant and a_bounds is None:
            why = f"the assistant ({host.families['assistant'].name}) encodes every frame at one fixed size: no reduced pixels"
        if not why and cfg.encoder_slack is not None and not host.family.encoder_slack:
            why = f"budget-aware encoder resolution: {host.family.name} encodes every frame at one fixed size"
        if cfg.backend == "runtime" and not why:
            why = (f"no folder for variant {cfg.variant!r} (scripts/benchmark.py --variants)"
                   if cfg.variant not in pipes else _split_unavailable(manifest, opts))
        if why:
            results[k] = {**asdict(cfg), "skipped": why}
            log(f"  {cfg.name}: skipped ({why})")
            continue
        plans[k] = (opts, cfg.attn or attn)
    # interleaved: every round runs each configuration once, so a load change on a shared machine
    # hits all rows alike; else each configuration's runs back to back
    order = [(i, k) for i in range(warmup + runs) for k in plans] if interleave else \
        [(i, k) for k in plans for i in range(warmup + runs)]
    samples: dict[int, list] = {k: [] for k in plans}
    last, peak, failed = {}, {k: 0 for k in plans}, {}
    for i, k in order:
        if k in failed:
            continue
        cfg, (opts, row_attn) = configs[k], plans[k]
        if eager is not None:
            eager.reset_peak()
        try:  # one row's failure (a device error, an out-of-memory) must not lose the others
            if cfg.backend == "eager" and not get_method(cfg.method).compresses:
                t, visual, grid, engine = eager.full_answer(clip, question, opts, row_attn)
                last[k] = (visual, grid, None, engine)
            else:
                pipe = eager.pipeline if cfg.backend == "eager" else pipes[cfg.variant]
                r = pipe.answer(clip, question, opts)
                t = dict(r.timings)
                last[k] = (r.visual_tokens, r.grid_thw, r.budgets, pipe.engines["primary_llm"].name)
        except Exception as e:  # noqa: BLE001 - reported in the row, with its type
            failed[k] = f"failed: {why(e)}"
            results[k] = {**asdict(configs[k]), "skipped": failed[k]}
            log(f"  {cfg.name}: {failed[k]}")
            continue
        if eager is not None:
            peak[k] = max(peak[k], eager.peak_mb())
        if i >= warmup:
            samples[k].append(t)
    pm = manifest.model("primary")
    for k, (opts, _) in plans.items():
        if k in failed:
            continue
        cfg, (visual, grid, budgets, engine) = configs[k], last[k]
        method = get_method(cfg.method)
        f_div, _ = prior_scale(cfg)
        med = {s: float(np.median([x[s] for x in samples[k]])) for s in (*STAGES, "end_to_end")}
        med["ttft"] = sum(med[s] for s in STAGES if s != "decode")
        med["decode_tokens_per_s"] = float(np.median([x["decode_tokens"] / x["decode"] for x in samples[k]]))
        kept, total = visual
        ids, _ = host.prompt.input_ids(question, total + len(host.suffix["primary"]))
        a_grid, a_len = None, 0
        if cfg.assistant and method.compresses:
            a_frames = clip.frames[: frames // f_div]
            a_cfg = host.preprocess_config("assistant", opts.assistant_max_pixels, min_pixels)
            a_grid = host.families["assistant"].plan(a_frames.shape[1], a_frames.shape[2], len(a_frames), a_cfg)
            a_len = (len(host.prompts["assistant"].input_ids(question, 0)[0]) + len(host.suffix["assistant"])
                     + int(np.prod(host.merged_grid("assistant", a_grid))))
        flops = stage_flops(manifest, grid, kept, len(ids), total, opts, a_grid, a_len, host.families)
        if method.in_llm:  # layers below K prefill every visual token
            layer_k = manifest.graph("primary_llm_lo")["split_layer"]
            flops["prefill"] += layer_k / pm["num_layers"] * (F.llm_flops(pm, len(ids)) - F.llm_flops(pm, len(ids) - total + kept))
        if cfg.encoder_slack is not None and method.compresses:  # each group at its own grid
            merge = pm["merge_size"]
            full = (grid[1] // merge, grid[2] // merge)
            flops["vision"] = sum(F.vision_flops(pm, (1, merge * a, merge * b))
                                  for a, b in plan_group_grids(full, budgets, cfg.encoder_slack).tolist())
        row = {**asdict(cfg), "engine": engine, "visual_tokens": kept, "visual_tokens_total": total, "ttft_s": med["ttft"],
               "e2e_s": med["end_to_end"], "decode_tokens_per_s": med["decode_tokens_per_s"],
               "stages_s": {s: med[s] for s in STAGES}, "flops": flops, "samples": samples[k],
               "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        if device == "cuda":
            row["peak_gpu_mb"] = peak[k]
        results[k] = row
        log(f"  {cfg.name}: e2e {med['end_to_end']:.3f}s, ttft {med['ttft']:.3f}s, {kept}/{total} visual tokens")
    measured = [row for row in results if "skipped" not in row]
    best = max((f / row["stages_s"][s] for row in measured for s, f in row["flops"].items()
                if s in ("vision", "prefill", "assistant") and row["stages_s"][s] > 0
                and row.get("variant", "fp32") == "fp32"), default=float("nan"))
    for row in measured:
        floor = sum(row["flops"].values()) / best
        row["floor_s"] = floor
        row["over_floor"] = row["e2e_s"] / floor
    return {"machine": machine_info(threads), "model": manifest.data["preset"], "assistant": manifest.data.get("assistant_preset"),
            "frames": frames, "runs": runs, "warmup": warmup, "max_new_tokens": max_new_tokens, "device": device,
            "runtime_backend": runtime_backend, "attn": attn, "interleaved": interleave,
            "llm_attention": manifest.graph("primary_llm").get("attention", "plain") if runtime_backend != "torch" else "torch",
            "best_throughput_flops_per_s": best, "model_config": manifest.data["models"], "configs": results}
