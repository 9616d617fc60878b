"""The benchmark code runs on the tiny preset (one run, no timing assertions): the report has
every configuration with its medians, a FLOPs floor, and the plot and projection render."""
import json
import os

import pytest

pytest.importorskip("torch")
from export import benchmark as B  # noqa: E402
from runtime import flops as F  # noqa: E402


def test_benchmark_report_on_tiny(tiny_split, video_path, tmp_path):
    """Every default row runs, those needing the split LLM (FastV, DyCoke KV) included."""
    report = B.run_benchmark(tiny_split, video_path, "What moves?", frames=8, runs=1, warmup=0, max_new_tokens=3,
                             max_pixels=64 * 784, min_pixels=16 * 784, log=lambda *_: None)
    names = [c["name"] for c in report["configs"]]
    assert names == [c.name for c in B.default_configs()]
    for row in report["configs"]:
        for key in ("name", "backend", "method", "retention", "assistant", "ttft_s", "e2e_s", "decode_tokens_per_s"):
            assert key in row
        assert row["backend"] in ("eager", "runtime") and row["e2e_s"] > 0 and row["floor_s"] > 0
        assert len(row["samples"]) == 1
        if row["method"] == "none":
            assert row["visual_tokens"] == row["visual_tokens_total"]
        else:
            assert row["visual_tokens"] < row["visual_tokens_total"]
    B.write_json(report, str(tmp_path / "r.json"))
    assert json.load(open(tmp_path / "r.json"))["machine"]["torch"]
    B.plot(report, str(tmp_path / "r.png"))
    assert os.path.getsize(tmp_path / "r.png") > 10_000
    assert "PROJECTION" in B.project_7b(report) and "B.markdown_table" not in B.markdown_table(report)


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


def test_missing_backends_are_reported_not_crashed(tiny_artifacts, video_path):
    """On a machine without CUDA, --device cuda leaves no backend: each reason is named."""
    import torch

    from runtime.errors import EngineError
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(EngineError) as err:
        B.run_benchmark(tiny_artifacts, video_path, "q", frames=4, runs=1, warmup=0, device="cuda", log=lambda *_: None)
    assert "CUDAExecutionProvider" in str(err.value) and "no CUDA device" in str(err.value)


def test_rows_needing_the_split_llm_are_skipped_with_the_reason(tiny_artifacts, video_path):
    configs = B.compression_in_llm_configs()
    report = B.run_benchmark(tiny_artifacts, video_path, "q", frames=4, runs=1, warmup=0, max_new_tokens=2,
                             max_pixels=32 * 784, min_pixels=16 * 784, configs=configs, log=lambda *_: None)
    rows = {r["name"]: r for r in report["configs"]}
    assert "--fastv-layer" in rows["runtime DyToK+FastV 25%"]["skipped"]
    assert "--fastv-layer" in rows["runtime DyToK+DyCoke 25% + DyCoke KV"]["skipped"]
    assert "skipped" not in rows["runtime EVS 25%, no assistant"]


def test_skipped_rows_render():
    report = {"configs": [{"name": "a", "backend": "eager", "method": "none", "skipped": "no GPU"},
                          {"name": "b", "backend": "runtime", "method": "none", "e2e_s": 1.0, "ttft_s": 0.5,
                           "decode_tokens_per_s": 3.0, "visual_tokens": 4, "visual_tokens_total": 4, "over_floor": 1.2,
                           "stages_s": {s: 0.1 for s in B.STAGES}}]}
    table = B.markdown_table(report)
    assert "| a | skipped: no GPU |" in table and "| b |  | 4/4 |" in table


def test_runtime_rows_on_torch_engines_in_bf16(tmp_path, video_path):
    """What a GPU without onnxruntime-gpu runs: a torch-only bf16 folder, runtime rows on the
    PyTorch engine backend (here on the CPU), each row naming its engine."""
    from export.exporter import export_artifacts

    folder = export_artifacts("tiny", str(tmp_path / "tiny-bf16"), torch_only=True, dtype="bfloat16", log=lambda *_: None)
    configs = [c for c in B.default_configs() if c.name in ("eager full", "runtime DyToK+VisionZip 25%")]
    report = B.run_benchmark(folder, video_path, "What moves?", frames=4, runs=1, warmup=0, max_new_tokens=2,
                             max_pixels=32 * 784, min_pixels=16 * 784, configs=configs, log=lambda *_: None)
    assert report["runtime_backend"] == "torch" and report["attn"] == "sdpa"
    engines = {r["name"]: r["engine"] for r in report["configs"]}
    assert engines == {"eager full": "transformers[cpu, bfloat16, sdpa]",
                       "runtime DyToK+VisionZip 25%": "torch[cpu, bfloat16]"}
    assert "| runtime DyToK+VisionZip 25% | torch[cpu, bfloat16] |" in B.markdown_table(report)


def test_tensorrt_runtime_rows_are_skipped_with_the_reason(tiny_artifacts, video_path):
    """Without TensorRT (always, here) the runtime rows say why; the eager rows still run."""
    pytest.importorskip("torch")
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    configs = [c for c in B.default_configs() if c.name in ("eager full", "runtime full")]
    report = B.run_benchmark(tiny_artifacts, video_path, "q", frames=4, runs=1, warmup=0, max_new_tokens=2,
                             max_pixels=32 * 784, min_pixels=16 * 784, configs=configs, runtime_backend="tensorrt",
                             log=lambda *_: None)
    rows = {r["name"]: r for r in report["configs"]}
    # with only TensorRT's lean runtime installed (the trt-lean extra), the backend loads and asks for engines
    import importlib.util
    why = "no TensorRT engine for" if importlib.util.find_spec("tensorrt_lean_bindings") else "TensorRT is not installed"
    assert why in rows["runtime full"]["skipped"] and rows["eager full"]["e2e_s"] > 0
    assert f"| runtime full | skipped: {why}" in B.markdown_table(report)


def test_variant_rows_and_accuracy_join(tiny_artifacts, video_path, tmp_path):
    """Rows on a dynamic-int8 copy and with budget-aware encoding run; accuracy rows join by
    configuration, and eager full tokens takes the fp32 full-token accuracy."""
    from calibration.ort_quant import quantize_artifacts
    folder = str(tmp_path / "dyn8")
    quantize_artifacts(tiny_artifacts, folder, "dynamic-int8", log=lambda *_: None)
    configs = [B.default_configs()[0], *B.variant_configs("dynamic-int8", 1.0, (2, 4))[:3],
               B.Config("runtime x [int4]", "runtime", "none", 1.0, False, variant="int4")]
    report = B.run_benchmark(tiny_artifacts, video_path, "What moves?", frames=8, runs=1, warmup=0, max_new_tokens=3,
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
    assert B.join_accuracy(report, acc) == 2
    assert rows[0]["accuracy"]["accuracy"] == 0.9 and rows[3]["accuracy"]["accuracy"] == 0.8
    assert "accuracy" not in rows[1] and "80.0 [75.0, 85.0] (300)" in B.markdown_table(report)
