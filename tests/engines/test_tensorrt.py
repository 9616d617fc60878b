"""TensorRT backend: record checks and precision rules on CPU; engines only with TensorRT and a GPU."""
import importlib.util

import numpy as np
import pytest

from runtime.engines.cuda_mem import GpuInfo
from runtime.engines.tensorrt import check_engine_record
from runtime.engines.trt_build import build_settings, check_precision
from runtime.errors import EngineError

GRAPH = {"sha256": "abc"}
ORIN = GpuInfo("Orin", "8.7", 16 << 30)
RECORD = {"onnx_sha256": "abc", "tensorrt": "10.3.0", "gpu": "Orin", "compute_capability": "8.7"}


def test_matching_record_is_accepted():
    check_engine_record(RECORD, "primary_llm", GRAPH, "10.3.0", ORIN, "art")


@pytest.mark.parametrize("change, message", [
    ({"onnx_sha256": "other"}, "another export"),
    ({"tensorrt": "10.1.0"}, "TensorRT 10.1.0, this is 10.3.0"),
    ({"gpu": "NVIDIA H200", "compute_capability": "9.0"}, "built for NVIDIA H200"),
])
def test_mismatched_engine_says_to_rebuild(change, message):
    with pytest.raises(EngineError, match=message) as e:
        check_engine_record({**RECORD, **change}, "primary_llm", GRAPH, "10.3.0", ORIN, "art")
    assert "scripts/build_engines.py --artifacts art" in str(e.value)


def test_missing_engine_says_to_build():
    with pytest.raises(EngineError, match="no TensorRT engine for 'primary_vision'"):
        check_engine_record(None, "primary_vision", GRAPH, "10.3.0", ORIN, "art")


def test_version_compatible_engines_run_on_later_tensorrt_and_the_lean_runtime():
    vc = {**RECORD, "version_compatible": True}
    check_engine_record(vc, "primary_llm", GRAPH, "10.3.0", ORIN, "art", "lean")
    check_engine_record(vc, "primary_llm", GRAPH, "11.4.0.106", ORIN, "art", "lean")  # 10.x -> 11.x: TensorRT's rule
    with pytest.raises(EngineError, match="newer than this 10.1.0"):
        check_engine_record(vc, "primary_llm", GRAPH, "10.1.0", ORIN, "art")
    with pytest.raises(EngineError, match="lean runtime runs only version-compatible engines") as e:
        check_engine_record(RECORD, "primary_llm", GRAPH, "10.3.0", ORIN, "art", "lean")
    assert e.value.args[0].endswith("--version-compatible")
    with pytest.raises(EngineError, match="built with TensorRT 10.3.0, this is 10.3.1"):
        check_engine_record(RECORD, "primary_llm", GRAPH, "10.3.1", ORIN, "art")  # not version-compatible: exact


@pytest.mark.parametrize("version", ["10.3.0", "11.4.0.106"])
def test_builds_are_strongly_typed_with_the_precision_of_the_graph(version):
    for graph in ("fp32", "fp16", "bf16", "int8", "fp8"):
        s = build_settings(version, graph)
        assert s.strongly_typed and s.builder_flags == () and not s.calibrate and s.precision == graph
        assert build_settings(version, graph, graph).precision == graph
    assert build_settings(version, "bf16", version_compatible=True).builder_flags == ("VERSION_COMPATIBLE",)
    with pytest.raises(EngineError, match="convert them first: python scripts/convert_precision.py --precision fp16"):
        build_settings(version, "fp32", "fp16")
    with pytest.raises(EngineError, match="calibrate.py quantize --mode int8"):
        build_settings(version, "fp32", "int8")
    with pytest.raises(EngineError, match="MatMulNBits"):
        build_settings(version, "int4")


def test_weak_typing_only_on_tensorrt_10_and_only_on_request():
    s = build_settings("10.3.0", "fp32", "fp16", weak_typing=True)
    assert not s.strongly_typed and s.builder_flags == ("FP16",) and "overflow" in s.warnings[0]
    s = build_settings("10.3.0", "fp32", "int8", weak_typing=True, version_compatible=True)
    assert s.calibrate and s.builder_flags == ("INT8", "FP16", "VERSION_COMPATIBLE") and s.precision == "int8"
    with pytest.raises(EngineError, match="TensorRT 11.4.0 has no weak typing"):
        build_settings("11.4.0", "fp32", "fp16", weak_typing=True)
    with pytest.raises(EngineError, match="applies builder flags to an fp32 graph"):
        build_settings("10.3.0", "bf16", "fp16", weak_typing=True)
    with pytest.raises(EngineError, match="fp8"):
        build_settings("10.3.0", "fp32", "fp8", weak_typing=True)


def test_precision_needs_a_capable_gpu():
    check_precision("fp16", ORIN)
    check_precision("bf16", ORIN)
    with pytest.raises(EngineError, match="fp8 needs compute capability 8.9"):
        check_precision("fp8", ORIN)
    check_precision("fp8", GpuInfo("NVIDIA H200", "9.0", 141 << 30))
    with pytest.raises(EngineError, match="precision 'int2'"):
        check_precision("int2", ORIN)


def _gpu_reason():
    if importlib.util.find_spec("tensorrt") is None:
        return "TensorRT is not installed (NVIDIA's index or JetPack only; CI never installs it)"
    try:
        from runtime.engines.cuda_mem import gpu_info
        gpu_info()
    except Exception as e:  # no cuda-python, no driver or no device
        return f"no usable GPU: {e}"
    return None


@pytest.mark.skipif(_gpu_reason() is not None, reason=str(_gpu_reason()))
def test_tensorrt_engines_answer_like_onnx_runtime(tiny_artifacts, tmp_path, video_path):
    import shutil

    from runtime.engines.trt_build import BuildOptions, build_engines
    from runtime.manifest import load_manifest
    from runtime.options import Options
    from runtime.pipeline import load_pipeline

    folder = str(tmp_path / "tiny")
    shutil.copytree(tiny_artifacts, folder)
    build_engines(load_manifest(folder), BuildOptions(precision="fp32", workspace_gb=1.0))
    opts = Options(num_frames=8, max_new_tokens=8)
    trt = load_pipeline(folder, backend="tensorrt").answer(video_path, "What moves?", opts)
    ort = load_pipeline(folder).answer(video_path, "What moves?", opts)
    assert trt.token_ids == ort.token_ids
    np.testing.assert_array_equal(trt.budgets, ort.budgets)


@pytest.mark.skipif("TensorrtExecutionProvider" not in __import__("onnxruntime").get_available_providers(),
                    reason="onnxruntime has no TensorRT execution provider here (needs onnxruntime-gpu + TensorRT)")
def test_ort_tensorrt_provider_answers_like_cpu(tiny_artifacts, tmp_path, video_path):
    from runtime.options import Options
    from runtime.pipeline import load_pipeline

    opts = Options(num_frames=8, max_new_tokens=8)
    gpu = load_pipeline(tiny_artifacts, ("tensorrt", "cuda"), trt_cache=str(tmp_path)).answer(video_path, "What moves?", opts)
    cpu = load_pipeline(tiny_artifacts).answer(video_path, "What moves?", opts)
    assert gpu.token_ids == cpu.token_ids


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_scripts_without_tensorrt_lint_and_fail_in_one_line(tiny_artifacts, video_path):
    import subprocess
    import sys

    run = lambda *a: subprocess.run([sys.executable, *a], capture_output=True, text=True)  # noqa: E731
    lint = run("scripts/build_engines.py", "--artifacts", tiny_artifacts, "--lint")
    assert lint.returncode == 0 and "0 TensorRT 10.1 parser problems in 4 graphs" in lint.stdout
    shown = run("scripts/build_engines.py", "--artifacts", tiny_artifacts, "--show-profiles", "--max-frames", "8")
    assert shown.returncode == 0 and "primary_llm [decode]" in shown.stdout
    not_installed = "error: TensorRT is not installed: install it from NVIDIA's index or JetPack (docs/tensorrt-jetson.md); CI never installs it"
    r = run("scripts/build_engines.py", "--artifacts", tiny_artifacts)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [not_installed]
    r = run("scripts/infer.py", "--artifacts", tiny_artifacts, "--video", video_path, "--question", "hi", "--backend", "tensorrt")
    lean = importlib.util.find_spec("tensorrt_lean_bindings") or importlib.util.find_spec("tensorrt_lean")
    # with only the lean runtime (the trt-lean extra) the backend loads and asks for engines
    want = (f"error: no TensorRT engine for 'primary_vision' in {tiny_artifacts}; rebuild with: python "
            f"scripts/build_engines.py --artifacts {tiny_artifacts}") if lean else not_installed
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [want]
