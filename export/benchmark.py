"""Side-by-side latency of PyTorch eager and the compiled runtime on one model and video, in one
process: per-stage medians after warm-up, peak memory, FLOPs floor, projections. Not a test."""
from __future__ import annotations

import json
import math
import os
import platform
import resource
import time
from dataclasses import asdict, dataclass, replace

import numpy as np

from runtime import flops as F
from runtime.encoder_plan import group_grid, plan_group_grids
from runtime.errors import ManifestError
from runtime.manifest import load_manifest
from runtime.memory_plan import REAL_MODELS
from runtime.pipeline import REDUCED_PRIOR, Options, Pipeline, load_pipeline, prior_setting
from runtime.preprocess import plan_grid, preprocess_video
from runtime.video import sample_video

RUNTIME_BACKENDS = ("auto", "onnxruntime", "tensorrt", "torch")
STAGES = ("decode_video", "preprocess", "assistant", "vision", "compress", "prefill", "decode")


@dataclass(frozen=True)
class Config:
    name: str
    backend: str  # eager | runtime
    method: str
    retention: float
    assistant: bool
    assistant_reduced: bool = False  # half the frames, a quarter of the pixels for the prior
    dycoke_kv: bool = False  # DyCoke's decode-time KV pruning (split LLM graphs, plain attention)
    attn: str | None = None  # eager rows: transformers attention for this row (None: the run's, sdpa by default)
    variant: str = "fp32"  # runtime rows: which artifact folder (fp32, or a quantized one from `variants`)
    encoder_slack: float | None = None  # budget-aware encoder resolution (runtime/encoder_plan.py)
    assistant_scale: tuple[int, int] | None = None  # (frames divisor, pixels divisor) of the prior; overrides _reduced


def default_configs() -> list[Config]:
    return [
        Config("eager full", "eager", "none", 1.0, False),
        Config("eager full, eager attention", "eager", "none", 1.0, False, attn="eager"),
        Config("eager DyToK+VisionZip 25%", "eager", "visionzip", 0.25, True),
        Config("runtime full", "runtime", "none", 1.0, False),
        Config("runtime DyToK+VisionZip 50%", "runtime", "visionzip", 0.5, True),
        Config("runtime DyToK+VisionZip 25%", "runtime", "visionzip", 0.25, True),
        Config("runtime DyToK+VisionZip 10%", "runtime", "visionzip", 0.1, True),
        Config("runtime DyToK+uniform 25%", "runtime", "uniform", 0.25, True),
        Config("runtime DyToK+DyCoke 25%", "runtime", "dycoke", 0.25, True),
        Config("runtime DyToK+DynTok 25%", "runtime", "dyntok", 0.25, True),
        Config("runtime DyToK+VisionZip 25%, assistant reduced", "runtime", "visionzip", 0.25, True, True),
        Config("runtime VisionZip 25%, no assistant", "runtime", "visionzip", 0.25, False),
        *compression_in_llm_configs(),
    ]


def compression_in_llm_configs() -> list[Config]:
    """FastV, DyCoke's KV step and EVS (issue #13): need a folder exported with --fastv-layer K
    (FastV, DyCoke KV) and plain attention (DyCoke KV); otherwise their rows say why they skipped."""
    return [
        Config("runtime DyToK+FastV 25%", "runtime", "fastv", 0.25, True),
        Config("runtime FastV 25%, no assistant", "runtime", "fastv", 0.25, False),
        Config("runtime DyToK+EVS 25%", "runtime", "evs", 0.25, True),
        Config("runtime EVS 25%, no assistant", "runtime", "evs", 0.25, False),
        Config("runtime DyToK+DyCoke 25% + DyCoke KV", "runtime", "dycoke", 0.25, True, dycoke_kv=True),
    ]


def variant_configs(variant: str, slack: float = 1.0, prior: tuple[int, int] = REDUCED_PRIOR) -> list[Config]:
    """Rows for one quantized CPU folder: full tokens, and DyToK+VisionZip with the cheap prior
    (``prior`` = frames, pixels divisors) and budget-aware encoder resolution at ``slack``; DyToK
    with uniform selection inside each group (no merged tokens) and DyToK+DynTok at 25% and 10%
    with both."""
    tag = f"prior 1/{prior[0]} frames 1/{prior[1]} px"
    return [
        Config(f"runtime full [{variant}]", "runtime", "none", 1.0, False, variant=variant),
        Config(f"runtime DyToK+VisionZip 25%, {tag} [{variant}]", "runtime", "visionzip", 0.25, True,
               variant=variant, assistant_scale=prior),
        Config(f"runtime DyToK+VisionZip 25%, {tag}, encoder slack {slack:g} [{variant}]", "runtime", "visionzip", 0.25,
               True, variant=variant, encoder_slack=slack, assistant_scale=prior),
        Config(f"runtime DyToK+VisionZip 10%, {tag}, encoder slack {slack:g} [{variant}]", "runtime", "visionzip", 0.1,
               True, variant=variant, encoder_slack=slack, assistant_scale=prior),
        Config(f"runtime VisionZip 25%, no assistant, encoder slack {slack:g} [{variant}]", "runtime", "visionzip", 0.25,
               False, variant=variant, encoder_slack=slack),
        *[Config(f"runtime DyToK+uniform {round(100 * r)}%, {tag}, encoder slack {slack:g} [{variant}]", "runtime",
                 "uniform", r, True, variant=variant, encoder_slack=slack, assistant_scale=prior) for r in (0.25, 0.1)],
        *[Config(f"runtime DyToK+DynTok {round(100 * r)}%, {tag}, encoder slack {slack:g} [{variant}]", "runtime",
                 "dyntok", r, True, variant=variant, encoder_slack=slack, assistant_scale=prior) for r in (0.25, 0.1)],
    ]


# the CPU speed forms of calibration/ort_quant.py and the graphs each quantizes for the benchmark
VARIANT_ROLES = {"dynamic-int8": ("primary_vision", "primary_llm", "assistant_vision", "assistant_prior"),
                 "int4": ("primary_vision", "primary_llm", "assistant_vision", "assistant_prior")}


def quantized_folder(folder: str, mode: str, log=print) -> str:
    """``<folder>-<mode>``: the artifact folder quantized by ``mode`` (made if missing or stale)."""
    from calibration.ort_quant import quantize_artifacts

    if mode not in VARIANT_ROLES:
        raise ManifestError(f"variant {mode!r}: expected one of {sorted(VARIANT_ROLES)}")
    out = f"{folder.rstrip('/')}-{mode}"
    try:
        q = load_manifest(out, verify_hashes=False)
        if q.data.get("quantization", {}).get("from") == os.path.abspath(folder):
            return out
    except (ManifestError, OSError):
        pass
    log(f"quantizing {folder} -> {out} ({mode})")
    quantize_artifacts(folder, out, mode, roles=VARIANT_ROLES[mode], log=log)
    return out


def prior_scale(cfg: Config | dict) -> tuple[int, int]:
    """(frames divisor, pixels divisor) of the assistant's prior for a row (a Config or its dict)."""
    get = cfg.get if isinstance(cfg, dict) else lambda k: getattr(cfg, k)
    return tuple(get("assistant_scale") or (REDUCED_PRIOR if get("assistant_reduced") else (1, 1)))


def accuracy_key(method: str, retention: float, assistant, variant: str = "fp32", encoder_slack=None) -> tuple:
    """What joins a speed row with an accuracy row: method, retention, prior setting
    ("none" or "frames/F pixels/P"), weights variant and encoder slack."""
    return (method, round(float(retention), 4), str(assistant), variant or "fp32",
            None if encoder_slack is None else round(float(encoder_slack), 4))


def row_accuracy_key(row: dict) -> tuple:
    if not row["assistant"] or row["method"] == "none":
        prior = "none"
    else:
        prior = prior_setting(prior_scale(row))
    return accuracy_key(row["method"], 1.0 if row["method"] == "none" else row["retention"], prior,
                        row.get("variant", "fp32"), row.get("encoder_slack"))


def accuracy_table(accuracy_rows: list[dict]) -> dict[tuple, dict]:
    """Accuracy rows keyed by ``accuracy_key``. Rows carry method, retention, assistant ("none",
    "full", "reduced" or "frames/F pixels/P" as scripts/evaluate.py writes them, or true/false),
    and optionally variant and encoder_slack."""
    table = {}
    for a in accuracy_rows:
        assistant = a.get("assistant", "none")
        assistant = {"full": True, "reduced": prior_setting(REDUCED_PRIOR)}.get(assistant, assistant)  # evaluate.py's names
        if assistant is True:
            assistant = prior_setting((1, 1))
        elif assistant is False or a.get("method") == "none":
            assistant = "none"
        retention = 1.0 if a.get("method") == "none" else a["retention"]
        table[accuracy_key(a["method"], retention, assistant, a.get("variant", "fp32"), a.get("encoder_slack"))] = a
    return table


def join_accuracy(report: dict, accuracy_rows: list[dict]) -> int:
    """Add ``accuracy`` (and its n, interval) to every speed row whose configuration has an
    accuracy row (``accuracy_table``); returns how many joined."""
    table = accuracy_table(accuracy_rows)
    joined = 0
    for row in report["configs"]:
        if "skipped" in row or row["backend"] != "runtime" and row["method"] != "none":
            continue
        hit = table.get(row_accuracy_key(row)) if row["backend"] == "runtime" else \
            table.get(accuracy_key("none", 1.0, "none"))  # eager full tokens: the fp32 full-token accuracy
        if hit:
            row["accuracy"] = {k: hit[k] for k in ("accuracy", "n", "ci_low", "ci_high", "split") if k in hit}
            joined += 1
    return joined


class TransformersFull:
    """The eager full-token baseline on transformers' own model: visual, then prefill and a cached
    decode loop with ``model(...)``; same video, preprocessing and prompt as the pipeline."""

    def __init__(self, model, pipe: Pipeline):
        self.model, self.pipe = model, pipe

    def answer(self, clip, question: str, opts: Options):
        import torch

        m = self.model
        device, dtype = m.device, m.dtype
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)  # stage times need finished kernels
        t = {}
        t0 = time.perf_counter()
        patches = preprocess_video(clip.frames, self.pipe.preprocess_config("primary", opts.max_pixels, opts.min_pixels))
        ids, pos, start, n_vis = self.pipe.sequence("primary", question, patches, 2 / clip.sampled_fps)
        t["decode_video"], t["preprocess"], t["assistant"], t["compress"] = 0.0, time.perf_counter() - t0, 0.0, 0.0
        with torch.no_grad():
            t0 = time.perf_counter()
            pixels = torch.from_numpy(patches.pixel_values).to(device, dtype)
            feats = m.model.visual(pixels, grid_thw=torch.tensor([patches.grid_thw], device=device)).pooler_output
            sync()
            t["vision"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            emb = m.get_input_embeddings()(torch.from_numpy(ids).to(device))[None].clone()
            emb[0, start:start + n_vis] = feats
            out = m(inputs_embeds=emb, position_ids=torch.from_numpy(pos).to(device)[:, None], use_cache=True)
            sync()
            t["prefill"] = time.perf_counter() - t0
            nxt = int(pos.max()) + 1
            t0 = time.perf_counter()
            for step in range(opts.max_new_tokens - 1):
                tok = out.logits[0, -1].argmax().view(1, 1)
                out = m(inputs_embeds=m.get_input_embeddings()(tok), position_ids=torch.full((3, 1, 1), nxt + step, device=device),
                        past_key_values=out.past_key_values, use_cache=True)
            sync()
            t["decode"] = time.perf_counter() - t0
        t["decode_tokens"] = opts.max_new_tokens - 1
        t["end_to_end"] = sum(t[s] for s in STAGES)
        return t, (n_vis, n_vis), patches.grid_thw


def stage_flops(manifest, timings_kind: str, grid, kept: int, prompt_len: int, n_vis: int, opts: Options,
                assistant_grid=None, assistant_len=0) -> dict:
    pm = manifest.model("primary")
    out = {"vision": F.vision_flops(pm, grid),
           "prefill": F.llm_flops(pm, prompt_len - n_vis + kept),
           "decode": F.decode_flops(pm, prompt_len - n_vis + kept, opts.max_new_tokens - 1)}
    if assistant_grid is not None and manifest.has_assistant:
        am = manifest.model("assistant")
        out["assistant"] = F.vision_flops(am, assistant_grid) + F.prior_flops(am, assistant_len)
    return out


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
    import torch

    from .torch_engine import load_models, torch_pipeline

    from runtime.errors import EngineError

    if runtime_backend not in RUNTIME_BACKENDS:
        raise EngineError(f"runtime backend {runtime_backend!r}: expected one of {', '.join(RUNTIME_BACKENDS)}")
    if threads:
        torch.set_num_threads(threads)
    attn = attn or "sdpa"
    manifest = load_manifest(artifacts)
    skipped: dict[str, str] = {}  # backend -> why its rows did not run
    runtime = eager = hf_full = None
    if device == "cuda" and not torch.cuda.is_available():
        skipped["eager"] = "torch sees no CUDA device"
    else:
        models = load_models(manifest, device, attn_implementation=attn)
        eager = torch_pipeline(manifest, models, device)
        hf_full = TransformersFull(models["primary"], eager)
    if runtime_backend == "auto":
        runtime_backend = "torch" if manifest.torch_only else "onnxruntime"
        if device == "cuda" and eager is not None:
            import onnxruntime
            if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
                runtime_backend = "torch"
    if runtime_backend == "torch":
        if eager is None:
            skipped["runtime"] = skipped["eager"]
        runtime = eager  # the same pipeline and engines: the rows differ by compression only
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
    host = runtime or eager
    if host is None:
        raise EngineError(f"no backend can run: {skipped}")
    clip = sample_video(video, num_frames=frames)
    base = Options(num_frames=frames, max_pixels=max_pixels, min_pixels=min_pixels, max_new_tokens=max_new_tokens,
                   ignore_eos=True)
    configs = configs or default_configs()
    results: list[dict | None] = [None] * len(configs)
    plans = {}  # config index -> (opts, row attention)
    for k, cfg in enumerate(configs):
        f_div, p_div = prior_scale(cfg)
        opts = replace(base, method=cfg.method, retention=cfg.retention, assistant=cfg.assistant,
                       assistant_num_frames=frames // f_div if f_div > 1 else None,
                       assistant_max_pixels=(max_pixels or manifest.data["preprocess"]["max_pixels"]) // p_div
                       if p_div > 1 else None, encoder_slack=cfg.encoder_slack, dycoke_kv=cfg.dycoke_kv)
        why = skipped.get(cfg.backend) or (skipped.get(f"variant {cfg.variant}") if cfg.backend == "runtime" else None)
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
    last, peak = {}, {k: 0 for k in plans}
    for i, k in order:
        cfg, (opts, row_attn) = configs[k], plans[k]
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        if cfg.backend == "eager" and cfg.method == "none":
            if row_attn != attn:
                hf_full.model.set_attn_implementation(row_attn)
            try:
                t, visual, grid = hf_full.answer(clip, question, opts)
            finally:
                if row_attn != attn:
                    hf_full.model.set_attn_implementation(attn)
            last[k] = (visual, grid, None, f"transformers[{device}, {str(hf_full.model.dtype).removeprefix('torch.')}, {row_attn}]")
        else:
            pipe = eager if cfg.backend == "eager" else pipes[cfg.variant]
            r = pipe.answer(clip, question, opts)
            t = dict(r.timings)
            last[k] = (r.visual_tokens, r.grid_thw, r.budgets, pipe.engines["primary_llm"].name)
        if device == "cuda":
            peak[k] = max(peak[k], torch.cuda.max_memory_allocated() / 2 ** 20)
        if i >= warmup:
            samples[k].append(t)
    for k, (opts, _) in plans.items():
        cfg, (visual, grid, budgets, engine) = configs[k], last[k]
        f_div, _ = prior_scale(cfg)
        med = {s: float(np.median([x[s] for x in samples[k]])) for s in (*STAGES, "end_to_end")}
        med["ttft"] = sum(med[s] for s in STAGES if s != "decode")
        med["decode_tokens_per_s"] = float(np.median([x["decode_tokens"] / x["decode"] for x in samples[k]]))
        kept, total = visual
        ids, _ = host.prompt.input_ids(question, total)
        a_grid, a_len = None, 0
        if cfg.assistant and cfg.method != "none":
            a_frames = clip.frames[: frames // f_div]
            a_cfg = host.preprocess_config("assistant", opts.assistant_max_pixels, min_pixels)
            a_grid = plan_grid(a_frames.shape[1], a_frames.shape[2], len(a_frames), a_cfg)
            a_len = len(ids) - total + a_grid[0] * a_grid[1] * a_grid[2] // 4
        flops = stage_flops(manifest, cfg.backend, grid, kept, len(ids), total, opts, a_grid, a_len)
        if cfg.method == "fastv":  # layers below K prefill every visual token
            pm, layer_k = manifest.model("primary"), manifest.graph("primary_llm_lo")["split_layer"]
            flops["prefill"] += layer_k / pm["num_layers"] * (F.llm_flops(pm, len(ids)) - F.llm_flops(pm, len(ids) - total + kept))
        if cfg.encoder_slack is not None and cfg.method != "none":  # each group at its own grid
            full = (grid[1] // 2, grid[2] // 2)
            flops["vision"] = sum(F.vision_flops(manifest.model("primary"), (1, 2 * a, 2 * b))
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
    best = max(f / row["stages_s"][s] for row in measured for s, f in row["flops"].items()
               if s in ("vision", "prefill", "assistant") and row["stages_s"][s] > 0 and row.get("variant", "fp32") == "fp32")
    for row in measured:
        floor = sum(row["flops"].values()) / best
        row["floor_s"] = floor
        row["over_floor"] = row["e2e_s"] / floor
    return {"machine": machine_info(), "model": manifest.data["preset"], "assistant": manifest.data.get("assistant_preset"),
            "frames": frames, "runs": runs, "warmup": warmup, "max_new_tokens": max_new_tokens, "device": device,
            "runtime_backend": runtime_backend, "attn": attn, "interleaved": interleave,
            "llm_attention": manifest.graph("primary_llm").get("attention", "plain") if runtime_backend != "torch" else "torch",
            "best_throughput_flops_per_s": best, "model_config": manifest.data["models"], "configs": results}


def _split_unavailable(manifest, opts) -> str | None:
    from runtime import llm_split
    from runtime.errors import DyTokError
    try:
        llm_split.check(manifest, opts)
    except DyTokError as e:
        return str(e)
    return None


def machine_info() -> dict:
    import onnxruntime
    import torch
    import transformers
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "onnxruntime": onnxruntime.__version__,
            "torch_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def markdown_table(report: dict) -> str:
    rows = report["configs"]
    measured = [r for r in rows if "skipped" not in r]
    base = next((r for r in measured if r["backend"] == "eager" and r["method"] == "none"), measured[0])
    gpu = any("peak_gpu_mb" in r for r in measured)
    acc = any("accuracy" in r for r in measured)
    head = ["configuration", "engine", "visual tokens", "TTFT s", "end-to-end s", "speed-up vs eager full", "TTFT speed-up",
            "decode tok/s", "assistant s", "vision s", "prefill s", "time / FLOPs floor"] + (["peak GPU MB"] if gpu else []) \
        + (["needle accuracy % [95% CI] (n)"] if acc else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['name']} | skipped: {r['skipped']} |" + " |" * (len(head) - 2))
            continue
        s = r["stages_s"]
        cells = [r["name"], r.get("engine", ""), f"{r['visual_tokens']}/{r['visual_tokens_total']}", f"{r['ttft_s']:.3f}",
                 f"{r['e2e_s']:.3f}", f"{base['e2e_s'] / r['e2e_s']:.2f}x", f"{base['ttft_s'] / r['ttft_s']:.2f}x",
                 f"{r['decode_tokens_per_s']:.1f}",
                 f"{s['assistant']:.3f}", f"{s['vision']:.3f}", f"{s['prefill']:.3f}", f"{r['over_floor']:.2f}"]
        if gpu:
            cells.append(f"{r.get('peak_gpu_mb', 0):.0f}")
        if acc:
            a = r.get("accuracy")
            cells.append("" if not a else f"{100 * a['accuracy']:.1f}" + (
                f" [{100 * a['ci_low']:.1f}, {100 * a['ci_high']:.1f}]" if "ci_low" in a else "") + (f" ({a['n']})" if "n" in a else ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(report: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["configs"] if "skipped" not in r]
    fig, ax = plt.subplots(figsize=(11, 0.5 * len(rows) + 1.5))
    left = np.zeros(len(rows))
    for stage in STAGES:
        vals = np.array([r["stages_s"][stage] for r in rows])
        ax.barh(range(len(rows)), vals, left=left, label=stage)
        left += vals
    ax.set_yticks(range(len(rows)), [r["name"] for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel("seconds (median per stage)")
    ax.set_title(f"{report['model']} on {report['machine']['processor']}, {report['frames']} frames, "
                 f"{report['max_new_tokens']} new tokens")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# The real checkpoints' configs; the prior reads the 3B assistant's last third (layers 24..35).
REAL = {"7b": REAL_MODELS["qwen2.5-vl-7b"], "3b": dict(REAL_MODELS["qwen2.5-vl-3b"], prior_layers=list(range(24, 36)))}
# The projection's prior shapes, (frames divisor, pixels divisor), and encoder slacks (None: off).
PROJECT_PRIORS = ((1, 1), (2, 1), (1, 4), (2, 4))
PROJECT_SLACKS = (None, 2.0, 1.5, 1.0)


def stage_rates(report: dict, variant: str = "fp32") -> dict[str, float]:
    """FLOP/s per stage kind: the best measured throughput among the runtime rows of ``variant``."""
    rows = [r for r in report["configs"] if r["backend"] == "runtime" and "skipped" not in r
            and r.get("variant", "fp32") == variant]
    if not rows:
        raise ManifestError(f"no measured runtime rows of variant {variant!r} to project from")
    rate = {}
    for kind in ("vision", "prefill", "decode", "assistant"):
        vals = [r["flops"][kind] / r["stages_s"][kind] for r in rows if kind in r["flops"] and r["stages_s"][kind] > 0]
        rate[kind] = max(vals) if vals else report["best_throughput_flops_per_s"]
    return rate


def projection_grid(frames: int = 32, side: int = 448) -> tuple[tuple[int, int, int], int]:
    """The 7B's patch grid (groups, rows, cols) for ``frames`` square frames of ``side`` pixels,
    and its merged visual tokens."""
    g = side // 14
    grid = (frames // 2, g, g)
    return grid, grid[0] * g * g // 4


def projected_stages(rate: dict[str, float], prior: tuple[int, int] | None, slack: float | None, retention: float,
                     frames: int = 32, side: int = 448, text_tokens: int = 40, new_tokens: int = 64,
                     free_prior: bool = False) -> dict[str, float]:
    """Seconds per stage of Qwen2.5-VL-7B (+ the 3B assistant's prior at 1/F of the frames and 1/P
    of the pixels, ``prior`` = (F, P), or no assistant: None) at ``retention`` (1.0: no
    compression), from FLOPs over ``rate``. ``slack``: budget-aware encoder resolution, assuming
    uniform budgets (each group at the smallest grid covering retention x slack of its tokens;
    skewed budgets cost at most that). ``free_prior``: the prior's cost set to 0 (a bound)."""
    grid, total = projection_grid(frames, side)
    g = grid[1]
    kept = total if retention >= 1 else int(total * retention)
    pm, am = REAL["7b"], REAL["3b"]
    a = 0.0
    if prior is not None and not free_prior:
        f_div, p_div = prior
        side_p = max(2, round(g / math.sqrt(p_div) / 2) * 2)  # patches per side at 1/P of the pixels, even
        a_grid = (max(grid[0] // f_div, 1), side_p, side_p)
        a = (F.vision_flops(am, a_grid) + F.prior_flops(am, a_grid[0] * side_p * side_p // 4 + text_tokens)) / rate["assistant"]
    if slack is None or retention >= 1:
        v = F.vision_flops(pm, grid) / rate["vision"]
    else:
        rows, cols = group_grid((g // 2, g // 2), math.ceil(total // grid[0] * retention * slack))
        v = grid[0] * F.vision_flops(pm, (1, 2 * rows, 2 * cols)) / rate["vision"]
    return {"assistant": a, "vision": v, "prefill": F.llm_flops(pm, kept + text_tokens) / rate["prefill"],
            "decode": F.decode_flops(pm, kept + text_tokens, new_tokens) / rate["decode"]}


def project_7b(report: dict, frames: int = 32, side: int = 448, text_tokens: int = 40, new_tokens: int = 64,
               variant: str = "fp32", retention: float = 0.25, accuracy_rows: list[dict] | None = None,
               margin: float = 0.02) -> str:
    """FLOPs-based PROJECTION for Qwen2.5-VL-7B with a 3B assistant (a Markdown table), from the
    best measured throughput per stage kind of the runtime rows of ``variant``. Not a measurement.

    Rows: no compression; VisionZip at ``retention`` without the assistant; DyToK+VisionZip with
    each prior shape of PROJECT_PRIORS at each encoder slack of PROJECT_SLACKS; and the bound of a
    prior that costs nothing. With ``accuracy_rows`` (scripts/evaluate.py rows of the needle pair)
    each row carries the accuracy of the same method, retention, prior shape, weights and slack,
    and whether it is within ``margin`` of full tokens (what counts toward a target)."""
    try:
        rate = stage_rates(report, variant)
    except ManifestError as e:
        return f"PROJECTION: {e}"
    table = accuracy_table(accuracy_rows or [])
    full_acc = table.get(accuracy_key("none", 1.0, "none", variant))
    _, total = projection_grid(frames, side)
    scenarios = [("no compression (full tokens)", None, None, 1.0, False)]
    scenarios += [(f"VisionZip {retention:.0%}, no assistant", None, s, retention, False) for s in (None, 1.0)]
    scenarios += [(f"DyToK+VisionZip {retention:.0%}", p, s, retention, False) for s in PROJECT_SLACKS for p in PROJECT_PRIORS]
    scenarios += [(f"DyToK+VisionZip {retention:.0%}, prior free (bound)", (1, 1), s, retention, True) for s in PROJECT_SLACKS]
    base = sum(projected_stages(rate, None, None, 1.0, frames, side, text_tokens, new_tokens).values())
    lines = [f"PROJECTION [{variant}] (FLOPs / measured runtime throughput; not measured): Qwen2.5-VL-7B + 3B assistant "
             f"(prior layers {min(REAL['3b']['prior_layers'])}-{max(REAL['3b']['prior_layers'])}), {frames} frames at {side}x{side} ({total} visual tokens), {new_tokens} new tokens. "
             "Accuracy: the needle pair, same method, retention, prior shape, weights and slack"
             + (f"; counts = within {100 * margin:.0f} points of full tokens ({100 * full_acc['accuracy']:.1f}%)" if full_acc else ""),
             "| scenario | prior frames, pixels | encoder slack | assistant s | vision s | prefill s | decode s | total s "
             "| vs no compression | needle accuracy % (n) | counts |", "|" + "---|" * 11]
    best = None
    for name, prior, slack, r, free in scenarios:
        st = projected_stages(rate, prior, slack, r, frames, side, text_tokens, new_tokens, free)
        tot = sum(st.values())
        if r >= 1:
            key = accuracy_key("none", 1.0, "none", variant)
        else:
            key = accuracy_key("visionzip", r, "none" if prior is None else prior_setting(prior), variant, slack)
        acc = None if free else table.get(key)
        counts = "" if acc is None or full_acc is None else ("yes" if acc["accuracy"] >= full_acc["accuracy"] - margin - 1e-9 else "no")
        if counts == "yes" and r < 1 and (best is None or tot < best[1]):
            best = (name, tot, prior, slack)
        shape = "–" if prior is None else (f"1/{prior[0]}, 1/{prior[1]}" if not free else "any (cost 0)")
        lines.append(f"| {name} | {shape} | {'off' if slack is None else f'{slack:g}'} | {st['assistant']:.1f} | "
                     f"{st['vision']:.1f} | {st['prefill']:.1f} | {st['decode']:.1f} | {tot:.1f} | {base / tot:.2f}x | "
                     + ("" if acc is None else f"{100 * acc['accuracy']:.1f} ({acc.get('n', '')})") + f" | {counts} |")
    default = sum(projected_stages(rate, (1, 1), Options.encoder_slack, Options.retention, frames, side, text_tokens,
                                   new_tokens).values())
    lines.append(f"default configuration (Options: DyToK+VisionZip {Options.retention:.0%}, full-resolution prior, "
                 f"encoder slack {'off' if Options.encoder_slack is None else Options.encoder_slack}): {base / default:.2f}x"
                 + (f"; fastest that counts: {best[0]}, prior 1/{best[2][0]} frames 1/{best[2][1]} px, slack "
                    f"{'off' if best[3] is None else f'{best[3]:g}'}: {base / best[1]:.2f}x" if best and best[2] else "")
                 + f"; 2.5x needs at most {base / 2.5:.1f} s")
    return "\n".join(lines)


def write_json(report: dict, path: str) -> None:
    with open(path, "w") as f:
        json.dump(report, f, indent=1)
