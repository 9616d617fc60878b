"""scripts/gpu_bench.py --device cpu: the GPU suite runs end to end on the CPU (tiny, one run, in
bf16 as on a GPU, so that a path NumPy cannot take in bf16 fails here and not on a lent GPU):
the fast path's parity with the reference path, the rates, every row measured or failing with its
reason, each stage against its floor, the JSON and Markdown written."""
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("torch")
from bench.gpu_suite import suite_configs  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_gpu_suite_on_the_cpu(tmp_path):
    out = subprocess.run([sys.executable, "scripts/gpu_bench.py", "--device", "cpu", "--model", "tiny", "--frames", "4",
                          "--runs", "1", "--warmup", "0", "--max-new-tokens", "3", "--max-pixels", "100352",
                          "--dtype", "bfloat16", "--out", str(tmp_path / "gpu"), "--work", str(tmp_path / "work")],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert out.stdout.splitlines()[0].startswith("device cpu: ") and "torch " in out.stdout.splitlines()[0]
    [json_file] = [f for f in os.listdir(tmp_path / "gpu") if f.endswith(".json")]
    record = json.load(open(tmp_path / "gpu" / json_file))
    assert record["parity"]["ok"] and record["parity"]["prior_max_abs_diff"] <= 1e-4 and record["parity"]["preprocess_equal"]
    assert all(c["tokens_equal"] for c in record["parity"]["cases"].values())
    assert record["rates"]["matmul_flops_per_s"] > 0 and record["rates"]["copy_bytes_per_s"] > 0
    assert record["dtype"] == "bfloat16"
    rows = record["runs_by_frames"]["4"]["configs"]
    assert len(rows) == len(suite_configs()) and all("skipped" not in r or r["skipped"] for r in rows)
    measured = [r for r in rows if "skipped" not in r]
    assert len(measured) == len(rows), [r.get("skipped") for r in rows]  # every row, the in-LLM ones on the split LLM
    for r in measured:
        assert {"vision", "prefill", "decode"} <= set(r["floors"])
        assert all(f["over_floor"] > 0 for f in r["floors"].values())
    md = open(tmp_path / "gpu" / json_file.replace(".json", ".md")).read()
    assert "Parity (fast path vs reference, tiny fp32): ok" in md and "## 4 frames" in md and "(bfloat16)" in md
    table = [line.split(" | ") for line in md.splitlines() if line.startswith("| runtime")]
    assert len(table) == len(rows) - 1 and all(float(cells[1]) > 0 for cells in table)  # each row's TFLOP


def test_torch_prior_benchmark_runs_on_tiny():
    """scripts/bench_torch_prior.py (plain vs SDPA per stage) end to end on tiny: every stage's
    row, the formulations within 1e-4 of each other, the decode tokens identical; --versus-dtype
    adds the plain-fp32-against-SDPA-bf16 prior row (bf16 rounding: within 0.05)."""
    out = subprocess.run([sys.executable, "scripts/bench_torch_prior.py", "--model", "tiny", "--frames", "4", "--runs", "1",
                          "--warmup", "0", "--max-pixels", "50176", "--min-pixels", "3136", "--new-tokens", "2",
                          "--versus-dtype", "bfloat16"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    rows = [line.split("|")[1:-1] for line in out.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    stages = [r for r in rows if len(r) == 5 and r[0].strip() != "stage"]
    assert {"assistant ViT", "assistant prior", "primary ViT", "LLM prefill"} <= {r[0].split(" (")[0].strip() for r in stages}
    [versus] = [r for r in stages if "vs sdpa bfloat16" in r[0]]
    assert float(versus[4]) <= 0.05
    assert all(float(r[4]) <= 1e-4 for r in stages if r is not versus)
    decode = [r for r in rows if len(r) == 3 and r[0].strip() != "LLM decode"]
    assert len(decode) == 3 and all(r[2].strip() == "yes" for r in decode)


def test_gpu_suite_keeps_what_ran_after_a_failure(tmp_path, monkeypatch):
    """A phase that fails (the device rates, one frame count, the export) is recorded with its reason,
    the other phases still run, and the JSON and Markdown are written after each phase."""
    import bench.gpu_suite as suite
    import bench.run
    import export.eager_baseline
    import export.exporter
    import export.fast_parity
    import runtime.video

    def no_rates(*a, **k):
        raise RuntimeError("CUDA error: out of memory\nmore")

    def bench_one(folder, video, question, n, *a, **k):
        if n == 8:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return {"configs": [{"name": "runtime full", "skipped": "no"}]}

    monkeypatch.setattr(export.fast_parity, "fast_path_parity", lambda *a: {"ok": True})
    monkeypatch.setattr(export.eager_baseline, "measure_rates", no_rates)
    monkeypatch.setattr(export.exporter, "export_artifacts", lambda *a, **k: None)
    monkeypatch.setattr(runtime.video, "write_test_video", lambda path, **k: path)
    folder = type("M", (), {"model": lambda self, role: None, "data": {"torch_dtype": "float32"}, "torch_only": True})
    monkeypatch.setattr(suite, "load_manifest", lambda path: folder())
    monkeypatch.setattr(bench.run, "run_benchmark", bench_one)
    monkeypatch.setattr(suite, "terminal_table", lambda report: "table")
    record = suite.run_suite("cpu", "tiny", frames=(4, 8), out_dir=str(tmp_path), work=str(tmp_path / "w"),
                             log=lambda *_: None, dtype="float32")
    assert record["rates"]["error"] == "failed: RuntimeError: CUDA error: out of memory"
    assert "error" in record["runs_by_frames"]["8"] and "configs" in record["runs_by_frames"]["4"]
    [md] = [f for f in os.listdir(tmp_path) if f.endswith(".md")]
    text = open(tmp_path / md).read()
    assert "Device rates: failed: RuntimeError" in text and "illegal memory access" in text and "## 4 frames" in text

    def no_export(*a, **k):
        raise ValueError("disk full")

    monkeypatch.setattr(export.exporter, "export_artifacts", no_export)
    record = suite.run_suite("cpu", "tiny", frames=(4,), out_dir=str(tmp_path / "b"), work=str(tmp_path / "w2"),
                             log=lambda *_: None, dtype="float32")
    assert record["export_error"] == "failed: ValueError: disk full" and "runs_by_frames" not in record
    [md] = [f for f in os.listdir(tmp_path / "b") if f.endswith(".md")]
    assert "Export of tiny: failed: ValueError: disk full" in open(tmp_path / "b" / md).read()
