"""The GPU suite (``scripts/gpu_bench.py``, ``make gpu-bench``): on one device, in one process,
(1) the fast PyTorch path against its reference path, (2) the device's matmul rate and copy
bandwidth, (3) the real-size pair (Qwen2.5-VL-7B + 3B, random bf16 weights drawn on the device)
at each frame count: transformers sdpa at full tokens, the runtime at full tokens, DyToK+VisionZip
25% with the full, the reduced (also with budget-aware encoder resolution) and the primary's own
prior, DyToK+FastV, DART in the LLM, VisionZip and EVS without an assistant, each stage against
its floor. Each row is guarded; a failed row says why.
``--device cpu --model small`` runs the same suite on the CPU (CI runs it on ``tiny``)."""
from __future__ import annotations

import datetime
import os
import re
import time

from runtime.fileio import write_atomic, write_json
from runtime.manifest import load_manifest
from runtime.memory_plan import folder_precision

from .configs import Config
from .floors import STAGE_KINDS, stage_floors
from .host import describe, machine_info
from .report import terminal_table
from .run import why

FRAMES = (32, 96)
RETENTION = 0.25


def suite_configs(retention: float = RETENTION) -> list[Config]:
    pct = f"{retention:.0%}"
    return [
        Config("eager full", "eager", "none", 1.0, False),
        Config("runtime full", "runtime", "none", 1.0, False),
        Config(f"runtime DyToK+VisionZip {pct}, full prior", "runtime", "visionzip", retention, True),
        Config(f"runtime DyToK+VisionZip {pct}, reduced prior", "runtime", "visionzip", retention, True, True),
        Config(f"runtime DyToK+VisionZip {pct}, reduced prior, encoder slack 2", "runtime", "visionzip", retention,
               True, True, encoder_slack=2.0),
        Config(f"runtime DyToK-self {pct} (the primary's own prior)", "runtime", "self", retention, False),
        Config(f"runtime DyToK+FastV {pct}", "runtime", "fastv", retention, True),
        Config(f"runtime DART {pct} in the LLM, no assistant", "runtime", "dart", retention, False),
        Config(f"runtime VisionZip {pct}, no assistant", "runtime", "visionzip", retention, False),
        Config(f"runtime EVS {pct}, no assistant", "runtime", "evs", retention, False),
    ]


def run_suite(device: str, model: str, frames=FRAMES, runs: int = 3, warmup: int = 1, max_new_tokens: int = 16,
              max_pixels: int | None = 200704, out_dir: str = "docs/gpu", work: str = "artifacts", log=print,
              dtype: str | None = None) -> dict:
    """The whole suite; writes ``<out_dir>/<device name>-<date>.json`` and ``.md``. Returns the record.
    ``dtype``: the pair's weights (default bf16 on CUDA, fp32 on the CPU; bf16 on the CPU runs the
    GPU's numerics paths where no GPU is at hand)."""
    import torch

    from export.eager_baseline import measure_rates
    from export.exporter import export_artifacts
    from export.fast_parity import fast_path_parity
    from runtime.video import write_test_video

    from .run import run_benchmark

    t_start = time.perf_counter()
    host = machine_info()
    name = torch.cuda.get_device_name(0) if device == "cuda" else (host.get("cpu_model") or "cpu")
    log(f"device {device}: {name} | {describe(host)} | python {host['python']}, torch {host['torch']} "
        f"(CUDA {host.get('cuda')}), transformers {host['transformers']}, onnxruntime {host['onnxruntime']}")
    record = {"device": device, "device_name": name, "model": model, "host": host,
              "date": datetime.date.today().isoformat(), "runs": runs, "warmup": warmup, "frames": list(frames)}
    log("1. fast path against the reference path (tiny, fp32)")
    try:
        record["parity"] = fast_path_parity(device, os.path.join(work, "parity"), log)
    except Exception as e:  # noqa: BLE001 - the timing rows still run; the record says the check failed
        record["parity"] = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        log(f"  parity: failed to run ({type(e).__name__}: {e})")
    dtype = getattr(torch, dtype) if dtype else (torch.bfloat16 if device == "cuda" else torch.float32)
    dtype_name = str(dtype).removeprefix("torch.")
    record["dtype"] = dtype_name
    stem = os.path.join(out_dir, f"{re.sub(r'[^A-Za-z0-9]+', '-', name).strip('-').lower()}-{record['date']}")

    def save():  # after every phase: a later failure (a device error, an out-of-memory) keeps what ran
        record["wall_s"] = round(time.perf_counter() - t_start, 1)
        write_json(stem + ".json", record)
        write_atomic(stem + ".md", markdown(record).encode())

    log("2. device rates")
    try:
        record["rates"] = measure_rates(device, dtype, size=8192 if device == "cuda" else 1024,
                                        copy_mb=2048 if device == "cuda" else 256)
        log(f"  matmul {record['rates']['matmul_flops_per_s'] / 1e12:.1f} TFLOP/s ({record['rates']['matmul_dtype']}), "
            f"copy {record['rates']['copy_bytes_per_s'] / 1e9:.0f} GB/s")
    except Exception as e:  # noqa: BLE001 - the rows still run, without floors
        record["rates"] = {"error": _why(e)}
        log(f"  rates: {record['rates']['error']}")
    save()
    log(f"3. {model} on {device}")
    folder = os.path.join(work, f"{model}-{device}-{dtype_name}")
    t0 = time.perf_counter()
    try:
        if not os.path.isfile(os.path.join(folder, "manifest.json")):
            export_artifacts(model, folder, validate=False, torch_only=True, dtype=dtype_name,
                             fastv_layer="default", device=device, log=lambda *_: None)
    except Exception as e:  # noqa: BLE001 - nothing below can run; the record says why
        record["export_error"] = _why(e)
        log(f"  export: {record['export_error']}")
        save()
        log(f"wrote {stem}.json and {stem}.md in {record['wall_s']} s")
        return record
    record["export_s"] = round(time.perf_counter() - t0, 1)
    log(f"  folder {folder} ready in {record['export_s']} s")
    video = write_test_video(os.path.join(work, "gpu_bench.mp4"), num_frames=max(frames) * 2, size=(448, 336), fps=24.0)
    manifest = load_manifest(folder)
    precision, primary = folder_precision(manifest), manifest.model("primary")
    record["runs_by_frames"] = {}
    rates = record["rates"]
    for n in frames:
        log(f"  {n} frames")
        try:
            report = run_benchmark(folder, video, "What happens in the video?", n, runs, warmup, max_new_tokens,
                                   max_pixels, None, None, device, suite_configs(), runtime_backend="torch", log=log)
        except Exception as e:  # noqa: BLE001 - the other frame counts still run
            record["runs_by_frames"][str(n)] = {"error": _why(e)}
            log(f"  {n} frames: {record['runs_by_frames'][str(n)]['error']}")
            _free(device)
            save()
            continue
        for row in report["configs"]:
            if "skipped" not in row and "error" not in rates:
                row["floors"] = stage_floors(row, primary, precision, rates["matmul_flops_per_s"],
                                             rates["copy_bytes_per_s"])
        record["runs_by_frames"][str(n)] = report
        _free(device)
        save()
    log(f"wrote {stem}.json and {stem}.md in {record['wall_s']} s")
    return record


def _why(e: BaseException) -> str:
    return f"failed: {why(e)}"


def _free(device: str) -> None:
    """Hand the previous frame count's models and caches back before the next one loads its own."""
    import gc

    import torch
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def markdown(record: dict) -> str:
    """The suite's tables: parity, rates, and per frame count every row with each stage over its floor."""
    rates = record["rates"]
    parity = record["parity"]
    lines = [f"# {record['model']} ({record.get('dtype', '')}) on {record['device_name']} ({record['device']}), "
             f"{record['date']}", "",
             f"Host: {describe(record['host'])}; torch {record['host']['torch']}, transformers "
             f"{record['host']['transformers']}. Medians of {record['runs']} runs after {record['warmup']} warm-up.", "",
             f"Parity (fast path vs reference, tiny fp32): {'ok' if parity.get('ok') else 'FAILED'}"
             + (f"; prior max abs diff {parity['prior_max_abs_diff']:.1e}" if "prior_max_abs_diff" in parity else "")
             + (f"; {parity['error']}" if "error" in parity else ""), "",
             (f"Measured: matmul {rates['matmul_flops_per_s'] / 1e12:.1f} TFLOP/s ({rates['matmul_dtype']}), copy "
              f"{rates['copy_bytes_per_s'] / 1e9:.0f} GB/s; floors = max(FLOPs / matmul rate, bytes / copy bandwidth)."
              if "error" not in rates else f"Device rates: {rates['error']} (no floors)."), ""]
    if "export_error" in record:
        lines += [f"Export of {record['model']}: {record['export_error']}", ""]
    for n, report in record.get("runs_by_frames", {}).items():
        if "error" in report:
            lines += [f"## {n} frames", "", report["error"], ""]
            continue
        lines += [f"## {n} frames", "", "```", terminal_table(report), "```", "",
                  "| configuration | TFLOP | e2e s | " + " | ".join(f"{s} s (x floor)" for s in STAGE_KINDS)
                  + " |", "|---|---|---|---|---|---|---|"]
        for row in report["configs"]:
            if "floors" not in row:
                continue
            cells = [f"{sum(row['flops'].values()) / 1e12:.3g}", f"{row['e2e_s']:.3f}"]
            cells += [f"{f['seconds']:.3f} ({f['over_floor']:.1f}x)" if (f := row["floors"].get(s)) else "–"
                      for s in STAGE_KINDS]
            lines.append(f"| {row['name']} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)
