"""The benchmark code runs on the tiny preset (one run, no timing assertions): the report has
every configuration with its medians, a FLOPs floor, and the plot and projection render."""
import json
import os

import pytest

pytest.importorskip("torch")
from bench import configs as BC  # noqa: E402
from bench import projection as PJ  # noqa: E402
from bench import report as BP  # noqa: E402
from bench import run as BR  # noqa: E402
from bench import accuracy as BA  # noqa: E402
from runtime.fileio import write_json  # noqa: E402
from runtime import flops as F  # noqa: E402


def test_benchmark_report_on_tiny(tiny_split, video_path, tmp_path):
    """Every default row runs, those needing the split LLM (FastV, DyCoke KV) included."""
    report = BR.run_benchmark(tiny_split, video_path, "What moves?", frames=8, runs=1, warmup=0, max_new_tokens=3,
                             max_pixels=64 * 784, min_pixels=16 * 784, log=lambda *_: None)
    names = [c["name"] for c in report["configs"]]
    assert names == [c.name for c in BC.default_configs()]
    for row in report["configs"]:
        for key in ("name", "backend", "method", "retention", "assistant", "ttft_s", "e2e_s", "decode_tokens_per_s"):
            assert key in row
        assert row["backend"] in ("eager", "runtime") and row["e2e_s"] > 0 and row["floor_s"] > 0
        assert len(row["samples"]) == 1
        if row["method"] == "none":
            assert row["visual_tokens"] == row["visual_tokens_total"]
        else:
            assert row["visual_tokens"] < row["visual_tokens_total"]
    write_json(str(tmp_path / "r.json"), report)
    assert json.load(open(tmp_path / "r.json"))["machine"]["torch"]
    BP.plot(report, str(tmp_path / "r.png"))
    assert os.path.getsize(tmp_path / "r.png") > 10_000
    assert "PROJECTION" in PJ.project_7b(report) and "B.markdown_table" not in BP.markdown_table(report)


def test_flops_against_hand_counts():
    m = dict(hidden_size=8, head_dim=2, num_heads=4, num_kv_heads=2, intermediate_size=16, num_layers=1, vocab_size=10)
    # per layer, 3 new tokens, 2 cached: q,o 2*3*8*8*2 + k,v 2*3*8*4*2 = 768 + 384; scores+sum 4*4*2*(3*2+6) = 384;
    # MLP 2*3*3*8*16 = 2304; head 2*8*10 = 160
    assert F.llm_flops(m, 3, 2) == 768 + 384 + 384 + 2304 + 160
    v = dict(vision_hidden_size=4, vision_intermediate_size=8, vision_depth=1, fullatt_block_indexes=[0], hidden_size=8,
             patch_size=14, temporal_patch_size=2, merge_size=2, window_size=112)
    n = 16  # grid (1, 4, 4): one group of 16 patches, full attention
    want = 2 * n * 1176 * 4 + 2 * n * 4 * 16 + 4 * 4 * 16 ** 2 + 2 * n * 3 * 4 * 8 + 2 * 4 * 16 ** 2 + 2 * 4 * 16 * 8
    assert F.vision_flops(v, (1, 4, 4)) == want


def test_siglip_flops_against_hand_counts():
    from runtime.families import REGISTRY
    v = dict(vision_hidden_size=4, vision_intermediate_size=8, vision_depth=1, hidden_size=8, patch_size=14,
             tokens_per_frame=4)
    n = 2 * 9  # grid (2, 3, 3): two frames of 9 patches, full attention within each frame
    # patch embed 2*n*588*4; layer: q,k,v,out 2*n*4*16 + scores and sum 4*4*2*81 + fc1, fc2 2*n*2*4*8;
    # projector 2*n*4*8 + 2*n*8*8; pooling 2*2*4*9*8
    want = 2 * n * 588 * 4 + 2 * n * 4 * 16 + 4 * 4 * 2 * 81 + 2 * n * 2 * 4 * 8 + 2 * n * 4 * 8 + 2 * n * 8 * 8 + 2 * 2 * 4 * 9 * 8
    assert REGISTRY["llava_onevision"].vision_flops(v, (2, 3, 3)) == want


def test_benchmark_on_llava_tiny(llava_tiny, video_path):
    """The LLaVA-OV rows: transformers' own model as the eager baseline (get_video_features, 1-D
    positions), runtime rows, and the reduced-pixel prior skipped with the reason."""
    names = ("eager full", "runtime full", "runtime DyToK+VisionZip 25%", "runtime DyToK+VisionZip 25%, assistant reduced")
    configs = [c for c in BC.default_configs() if c.name in names]
    report = BR.run_benchmark(llava_tiny, video_path, "What moves?", frames=3, runs=1, warmup=0, max_new_tokens=3,
                             max_pixels=64 * 784, configs=configs, log=lambda *_: None)
    rows = {r["name"]: r for r in report["configs"]}
    assert "fixed size" in rows["runtime DyToK+VisionZip 25%, assistant reduced"]["skipped"]
    assert rows["eager full"]["visual_tokens"] == rows["runtime full"]["visual_tokens"] == 3 * 196
    assert rows["runtime DyToK+VisionZip 25%"]["visual_tokens"] == 3 * 49
    assert rows["eager full"]["engine"].startswith("transformers[cpu")
    for name in names[:3]:
        assert rows[name]["flops"]["vision"] > 0 and rows[name]["floor_s"] > 0


def test_missing_backends_are_reported_not_crashed(tiny_artifacts, video_path):
    """On a machine without CUDA, --device cuda leaves no backend: each reason is named."""
    import torch

    from runtime.errors import EngineError
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(EngineError) as err:
        BR.run_benchmark(tiny_artifacts, video_path, "q", frames=4, runs=1, warmup=0, device="cuda", log=lambda *_: None)
    assert "CUDAExecutionProvider" in str(err.value) and "no CUDA device" in str(err.value)


def test_rows_needing_the_split_llm_are_skipped_with_the_reason(tiny_artifacts, video_path):
    configs = BC.compression_in_llm_configs() + BC.vidcom2_dart_configs()
    report = BR.run_benchmark(tiny_artifacts, video_path, "q", frames=4, runs=1, warmup=0, max_new_tokens=2,
                             max_pixels=32 * 784, min_pixels=16 * 784, configs=configs, log=lambda *_: None)
    rows = {r["name"]: r for r in report["configs"]}
    assert "--fastv-layer" in rows["runtime DyToK+FastV 25%"]["skipped"]
    assert "--fastv-layer" in rows["runtime DyToK+DyCoke 25% + DyCoke KV"]["skipped"]
    assert "skipped" not in rows["runtime EVS 25%, no assistant"]
    assert "--fastv-layer" in rows["runtime DART 25%, no assistant"]["skipped"]
    for name in ("runtime DyToK+VidCom2 25%", "runtime DART-embed 25%, no assistant"):
        assert "skipped" not in rows[name]


def test_skipped_rows_render():
    report = {"configs": [{"name": "a", "backend": "eager", "method": "none", "skipped": "no GPU"},
                          {"name": "b", "backend": "runtime", "method": "none", "e2e_s": 1.0, "ttft_s": 0.5,
                           "decode_tokens_per_s": 3.0, "visual_tokens": 4, "visual_tokens_total": 4, "over_floor": 1.2,
                           "stages_s": {s: 0.1 for s in BP.STAGES}}]}
    table = BP.markdown_table(report)
    assert "| a | skipped: no GPU |" in table and "| b |  | 4/4 |" in table


def test_runtime_rows_on_torch_engines_in_bf16(tmp_path, video_path):
    """What a GPU without onnxruntime-gpu runs: a torch-only bf16 folder, runtime rows on the
    PyTorch engine backend (here on the CPU), each row naming its engine."""
    from export.exporter import export_artifacts

    folder = export_artifacts("tiny", str(tmp_path / "tiny-bf16"), torch_only=True, dtype="bfloat16", log=lambda *_: None)
    configs = [c for c in BC.default_configs() if c.name in ("eager full", "runtime DyToK+VisionZip 25%")]
    report = BR.run_benchmark(folder, video_path, "What moves?", frames=4, runs=1, warmup=0, max_new_tokens=2,
                             max_pixels=32 * 784, min_pixels=16 * 784, configs=configs, log=lambda *_: None)
    assert report["runtime_backend"] == "torch" and report["attn"] == "sdpa"
    engines = {r["name"]: r["engine"] for r in report["configs"]}
    assert engines == {"eager full": "transformers[cpu, bfloat16, sdpa]",
                       "runtime DyToK+VisionZip 25%": "torch[cpu, bfloat16]"}
    assert "| runtime DyToK+VisionZip 25% | torch[cpu, bfloat16] |" in BP.markdown_table(report)


def test_tensorrt_runtime_rows_are_skipped_with_the_reason(tiny_artifacts, video_path):
    """Without TensorRT (always, here) the runtime rows say why; the eager rows still run."""
    pytest.importorskip("torch")
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    configs = [c for c in BC.default_configs() if c.name in ("eager full", "runtime full")]
    report = BR.run_benchmark(tiny_artifacts, video_path, "q", frames=4, runs=1, warmup=0, max_new_tokens=2,
                             max_pixels=32 * 784, min_pixels=16 * 784, configs=configs, runtime_backend="tensorrt",
                             log=lambda *_: None)
    rows = {r["name"]: r for r in report["configs"]}
    # with only TensorRT's lean runtime installed (the trt-lean extra), the backend loads and asks for engines
    import importlib.util
    why = "no TensorRT engine for" if importlib.util.find_spec("tensorrt_lean_bindings") else "TensorRT is not installed"
    assert why in rows["runtime full"]["skipped"] and rows["eager full"]["e2e_s"] > 0
    assert f"| runtime full | skipped: {why}" in BP.markdown_table(report)


def test_variant_rows_and_accuracy_join(tiny_artifacts, video_path, tmp_path):
    """Rows on a dynamic-int8 copy and with budget-aware encoding run; accuracy rows join by
    configuration, and eager full tokens takes the fp32 full-token accuracy."""
    from calibration.ort_quant import quantize_artifacts
    folder = str(tmp_path / "dyn8")
    quantize_artifacts(tiny_artifacts, folder, "dynamic-int8", log=lambda *_: None)
    configs = [BC.default_configs()[0], *BC.variant_configs("dynamic-int8", 1.0, (2, 4))[:3],
               BC.Config("runtime x [int4]", "runtime", "none", 1.0, False, variant="int4")]
    report = BR.run_benchmark(tiny_artifacts, video_path, "What moves?", frames=8, runs=1, warmup=0, max_new_tokens=3,
                             max_pixels=64 * 784, min_pixels=16 * 784, configs=configs,
                             variants={"dynamic-int8": folder}, log=lambda *_: None)
    rows = report["configs"]
    assert "variant 'int4'" in rows[-1]["skipped"]
    assert all(r["e2e_s"] > 0 for r in rows[:-1])
    slack = rows[3]
    assert slack["visual_tokens"] < slack["visual_tokens_total"] and slack["flops"]["vision"] < rows[2]["flops"]["vision"]
    acc = [{"method": "none", "retention": 1.0, "assistant": "none", "accuracy": 0.9, "n": 300},
           {"method": "visionzip", "retention": 0.25, "assistant": "reduced", "accuracy": 0.7, "n": 300},
           {"method": "visionzip", "retention": 0.25, "assistant": "frames/2 pixels/4", "variant": "dynamic-int8",
            "encoder_slack": 1.0, "accuracy": 0.8, "n": 300, "ci_low": 0.75, "ci_high": 0.85}]
    assert BA.join_accuracy(report, acc) == 2
    assert rows[0]["accuracy"]["accuracy"] == 0.9 and rows[3]["accuracy"]["accuracy"] == 0.8
    assert "accuracy" not in rows[1] and "80.0 [75.0, 85.0] (300)" in BP.markdown_table(report)


def test_projection_rows_accuracy_and_bound():
    """The 7B projection from measured stage throughputs: stage seconds are FLOPs over the best
    rate, the free-prior bound is the fastest at each slack, and a row counts only within 2
    points of full tokens (accuracy joined on method, retention, prior shape and slack)."""
    rate = {"vision": 2e11, "prefill": 2e11, "decode": 2e10, "assistant": 1.6e11}
    row = {"backend": "runtime", "variant": "fp32", "flops": {k: v for k, v in rate.items()},
           "stages_s": {k: 1.0 for k in rate}}
    report = {"configs": [row], "best_throughput_flops_per_s": 2e11}
    full = PJ.projected_stages(rate, None, None, 1.0)
    assert full["assistant"] == 0 and full["vision"] == pytest.approx(F.vision_flops(PJ.REAL["7b"], (16, 32, 32)) / 2e11)
    cheap = PJ.projected_stages(rate, (2, 4), 1.0, 0.25)
    a_grid = (8, 16, 16)
    assert cheap["assistant"] == pytest.approx((F.vision_flops(PJ.REAL["3b"], a_grid) + F.prior_flops(PJ.REAL["3b"], 512 + 40)) / 1.6e11)
    for slack in PJ.PROJECT_SLACKS:
        bound = sum(PJ.projected_stages(rate, (1, 1), slack, 0.25, free_prior=True).values())
        assert all(bound < sum(PJ.projected_stages(rate, p, slack, 0.25).values()) for p in PJ.PROJECT_PRIORS)
    acc = [{"method": "none", "retention": 1.0, "assistant": "none", "accuracy": 0.95, "n": 300},
           {"method": "visionzip", "retention": 0.25, "assistant": "full", "accuracy": 0.93, "n": 300},
           {"method": "visionzip", "retention": 0.25, "assistant": "reduced", "encoder_slack": 1.0, "accuracy": 0.72, "n": 300},
           {"method": "visionzip", "retention": 0.25, "assistant": "frames/1 pixels/4", "encoder_slack": 2.0,
            "accuracy": 0.94, "n": 300}]
    text = PJ.project_7b(report, accuracy_rows=acc)
    lines = {(c[1].strip(), c[2].strip(), c[3].strip()): c for c in (ln.split("|") for ln in text.splitlines()) if len(c) > 11}
    assert lines[("DyToK+VisionZip 25%", "1/1, 1/1", "off")][10:12] == [" 93.0 (300) ", " yes "]
    assert lines[("DyToK+VisionZip 25%", "1/2, 1/4", "1")][10:12] == [" 72.0 (300) ", " no "]
    assert [c.strip() for c in lines[("DyToK+VisionZip 25%", "1/2, 1/1", "1")][10:12]] == ["", ""]  # not measured
    assert lines[("no compression (full tokens)", "–", "off")][9] == " 1.00x "
    fastest = sum(PJ.projected_stages(rate, (1, 4), 2.0, 0.25).values())
    base = sum(full.values())
    assert f"fastest that counts: DyToK+VisionZip 25%, prior 1/1 frames 1/4 px, slack 2: {base / fastest:.2f}x" in text
    assert "PROJECTION: no measured runtime rows" in PJ.project_7b(report, variant="int4")


def test_script_reprints_a_saved_run_with_projection(tmp_path):
    """scripts/benchmark.py --report: a saved run's table and the projection with today's accuracy
    rows, nothing measured; a file that is not a run gets one line and exit code 2."""
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    stages = {"decode_video": 0.0, "preprocess": 0.1, "assistant": 0.0, "vision": 1.0, "compress": 0.0, "prefill": 2.0,
              "decode": 0.5}
    common = {"visual_tokens": 100, "visual_tokens_total": 100, "ttft_s": 3.1, "e2e_s": 3.6, "decode_tokens_per_s": 10.0,
              "stages_s": stages, "over_floor": 1.5, "method": "none", "retention": 1.0, "assistant": False}
    report = {"model": "small", "assistant": "small-assistant", "frames": 16, "runs": 3, "warmup": 1, "max_new_tokens": 16,
              "device": "cpu", "runtime_backend": "onnxruntime", "attn": "sdpa", "llm_attention": "gqa",
              "best_throughput_flops_per_s": 1e11,
              "machine": {"processor": "x86_64", "cpu_count": 2, "torch": "t", "torch_threads": 2, "onnxruntime": "o",
                          "transformers": "tr"},
              "configs": [dict(common, name="eager full", backend="eager", engine="transformers"),
                          dict(common, name="runtime full", backend="runtime", engine="onnxruntime", e2e_s=2.4,
                               flops={"vision": 1e11, "prefill": 2e11, "decode": 1e9})]}
    (tmp_path / "run.json").write_text(json.dumps(report))
    (tmp_path / "acc.json").write_text(json.dumps({"rows": [{"method": "none", "retention": 1.0, "assistant": "none",
                                                             "accuracy": 0.95, "n": 300}]}))
    proc = subprocess.run([sys.executable, os.path.join(root, "scripts", "benchmark.py"), "--report", str(tmp_path / "run.json"),
                           "--accuracy", str(tmp_path / "acc.json"), "--project", "7b", "--format", "markdown"],
                          capture_output=True, text=True, timeout=120, cwd=root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| runtime full | onnxruntime | 100/100 |" in proc.stdout and "1.50x" in proc.stdout
    assert "PROJECTION [fp32]" in proc.stdout and "| no compression (full tokens) | – | off |" in proc.stdout
    assert "95.0 [" not in proc.stdout and "| 95.0 (300) | yes |" in proc.stdout
    assert "joined 2 rows" in proc.stderr
    compact = subprocess.run([sys.executable, os.path.join(root, "scripts", "benchmark.py"), "--report", str(tmp_path / "run.json"),
                              "--accuracy", str(tmp_path / "acc.json")], capture_output=True, text=True, timeout=120, cwd=root)
    row = next(line for line in compact.stdout.splitlines() if line.startswith("runtime full"))
    assert compact.returncode == 0 and "|" not in compact.stdout.split("\n", 1)[1] and row.split()[2:6] == ["100/100", "2.400", "1.50x", "3.100"]
    (tmp_path / "bad.json").write_text("[1, 2]")
    bad = subprocess.run([sys.executable, os.path.join(root, "scripts", "benchmark.py"), "--report", str(tmp_path / "bad.json")],
                         capture_output=True, text=True, timeout=120, cwd=root)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "not a benchmark run" in bad.stderr
