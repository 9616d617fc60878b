"""Calibration set from video, ORT int8 (QDQ) and int4 (MatMulNBits) quantization, accuracy metrics."""
import os

import numpy as np
import onnx
import pytest

from calibration.accuracy import accuracy_report, kl_divergence, top1_agreement
from calibration.dataset import CalibrationSet, CollectOptions, clip_indices, collect, common_shape_files
from calibration.ort_quant import graph_bytes, quantize_artifacts
from runtime.compare import cosine
from runtime.engines.ort import OrtEngine
from runtime.engines.trt_lint import lint_model
from runtime.errors import ManifestError, VideoError
from runtime.manifest import load_manifest
from runtime.options import Options
from runtime.pipeline import load_pipeline
from runtime.video import write_test_video


def test_metrics_by_hand():
    a = np.array([[1.0, 0.0], [1.0, 1.0], [3.0, 4.0]])
    b = np.array([[0.0, 2.0], [2.0, 2.0], [-3.0, -4.0]])
    np.testing.assert_allclose(cosine(a, b, axis=-1), [0.0, 1.0, -1.0], atol=1e-12)
    np.testing.assert_allclose(cosine(np.zeros((2, 2)), np.array([[0.0, 0.0], [1.0, 0.0]]), axis=-1), [1.0, 0.0])
    assert cosine(a, a) == pytest.approx(1.0) and cosine(np.zeros(3), np.zeros(3)) == 1.0 and cosine(np.zeros(3), np.ones(3)) == 0.0
    p = np.log(np.array([[0.5, 0.5]]))
    q = np.log(np.array([[0.9, 0.1]]))
    # KL(p||q) = 0.5 ln(0.5/0.9) + 0.5 ln(0.5/0.1)
    np.testing.assert_allclose(kl_divergence(p, q), [0.5 * np.log(0.5 / 0.9) + 0.5 * np.log(5.0)], rtol=1e-12)
    np.testing.assert_allclose(kl_divergence(q, q), [0.0], atol=1e-12)
    assert top1_agreement(np.array([[0, 1.0], [2.0, 0]]), np.array([[0, 3.0], [0, 1.0]])) == 0.5


def test_clips_are_consecutive_spans():
    spans = clip_indices(100, 2, 4)
    assert spans[0].min() == 0 and spans[0].max() < 50 <= spans[1].min() and spans[1].max() == 99
    assert all(len(s) == 4 and np.all(np.diff(s) > 0) for s in spans)


@pytest.fixture(scope="module")
def calib(tiny_artifacts, tmp_path_factory):
    root = tmp_path_factory.mktemp("calib")
    videos = root / "videos"
    videos.mkdir()
    for k in range(4):
        write_test_video(str(videos / f"v{k}.mp4"), num_frames=36 + 12 * k)
    (videos / "notes.txt").write_text("not a video")
    out = str(root / "set")
    collect(load_pipeline(tiny_artifacts), str(videos), out, CollectOptions(clips=2, frames=4, holdout=2, decode_steps=3))
    return CalibrationSet(out)


def test_collected_set_records_every_graph_with_held_out_videos(calib):
    index = calib.index
    assert [v["split"] for v in index["videos"]] == ["calib", "heldout", "calib", "heldout"]
    for role in ("primary_vision", "primary_llm", "assistant_vision", "assistant_prior"):
        assert len(calib.files(role, "calib")) >= 4 and calib.files(role, "heldout")
    llm = list(calib.feeds("primary_llm"))
    assert len(llm) == 4 * 3  # 4 calibration clips x (prefill + 2 decode steps)
    pasts = [f["past_key_0"].shape[2] for f in llm]
    assert pasts[0] == 0 and pasts[1] == llm[0]["inputs_embeds"].shape[1] and pasts[2] == pasts[1] + 1
    files, shapes = common_shape_files(calib, "primary_vision")
    assert files and shapes["pixel_values"][1] == 1176


def test_collect_rejects_missing_or_empty_folders(tiny_artifacts, tmp_path):
    with pytest.raises(VideoError, match="does not exist"):
        collect(load_pipeline(tiny_artifacts), str(tmp_path / "nope"), str(tmp_path / "out"))
    with pytest.raises(VideoError, match="no videos"):
        collect(load_pipeline(tiny_artifacts), str(tmp_path), str(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "out")


@pytest.fixture(scope="module")
def int8(tiny_artifacts, calib, tmp_path_factory):
    return quantize_artifacts(tiny_artifacts, str(tmp_path_factory.mktemp("q") / "int8"), "int8", calib.folder, log=lambda s: None)


@pytest.fixture(scope="module")
def int4(tiny_artifacts, tmp_path_factory):
    return quantize_artifacts(tiny_artifacts, str(tmp_path_factory.mktemp("q") / "int4"), "int4", block_size=16,
                              log=lambda s: None)


def _engines(manifest, roles):
    return {r: OrtEngine(manifest.path(manifest.graph(r)["file"])) for r in roles}


def test_int8_is_qdq_and_close_to_fp32_on_held_out_clips(tiny_artifacts, int8, calib):
    ops = {n.op_type for n in onnx.load(int8.path(int8.graph("primary_llm")["file"]), load_external_data=False).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert int8.data["quantization"]["mode"] == "int8" and "engines" not in int8.data
    roles = ("primary_vision", "primary_llm")
    ref = load_manifest(tiny_artifacts)
    report = accuracy_report(_engines(ref, roles), _engines(int8, roles), calib)
    assert report.samples["primary_llm"] == len(calib.files("primary_llm", "heldout"))
    # random tiny weights; measured cosine ~0.99+ and top-1 agreement high: bounds leave margin, still fail on a broken graph
    assert report.vision_cosine_mean > 0.97
    assert report.top1_agreement >= 0.5 and report.kl_mean < 0.1
    for role in roles:
        assert graph_bytes(int8, role) < graph_bytes(ref, role)


def test_quantized_folders_answer_end_to_end(int8, int4, video_path):
    for m in (int8, int4):
        result = load_pipeline(m.folder).answer(video_path, "What moves?", Options(num_frames=4, max_new_tokens=4))
        assert len(result.token_ids) >= 1


def test_int4_is_weight_only_matmulnbits_and_flagged_for_tensorrt(int4):
    model = onnx.load(int4.path(int4.graph("primary_llm")["file"]), load_external_data=False)
    assert any(n.op_type == "MatMulNBits" for n in model.graph.node)
    assert any("com.microsoft" in f.problem for f in lint_model(model))  # ORT only, as documented


def test_quantize_needs_calibration_and_known_graphs(tiny_artifacts, tmp_path):
    with pytest.raises(ManifestError, match="needs a calibration set"):
        quantize_artifacts(tiny_artifacts, str(tmp_path / "x"), "int8")
    with pytest.raises(ManifestError, match="no graphs"):
        quantize_artifacts(tiny_artifacts, str(tmp_path / "x"), "int4", roles=("nope",))
    assert not os.path.exists(tmp_path / "x")


def test_fp8_is_float8_qdq_that_tensorrt_parses(tiny_artifacts, calib, tmp_path):
    fp8 = quantize_artifacts(tiny_artifacts, str(tmp_path / "fp8"), "fp8", calib.folder, roles=("primary_llm",),
                             log=lambda s: None)
    model = onnx.load(fp8.path(fp8.graph("primary_llm")["file"]), load_external_data=False)
    assert next(o.version for o in model.opset_import if o.domain == "") >= 19  # float8 Q/DQ needs opset 19
    zero_points = {i.name: i.data_type for i in model.graph.initializer}
    q = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert q and all(zero_points[n.input[2]] == onnx.TensorProto.FLOAT8E4M3FN for n in q)
    assert lint_model(model) == []  # TensorRT 10.1's parser takes it (ORT's CPU has no fp8 matmul)


def test_gemm_to_matmul_is_exact():
    """The Gemm rewrite the dynamic and int4 quantizers need (transB weights + bias -> MatMul + Add)."""
    from onnx import TensorProto, helper, numpy_helper

    from calibration.ort_quant import gemm_to_matmul
    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(5, 3)).astype(np.float32), rng.normal(size=5).astype(np.float32)
    graph = helper.make_graph([helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 5])],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    assert gemm_to_matmul(model) == 1 and [n.op_type for n in model.graph.node] == ["MatMul", "Add"]
    import onnxruntime as ort
    x = rng.normal(size=(4, 3)).astype(np.float32)
    y = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_allclose(y, x @ w.T + b, atol=1e-5)


def test_dynamic_int8_and_int4_vision_are_cpu_forms_close_to_fp32(tiny_artifacts, calib, video_path, tmp_path):
    """dynamic-int8 (every graph, no calibration) and int4 on the vision graph: the quantized ops are
    there and held-out outputs stay close (random tiny weights; bounds leave margin)."""
    dyn = quantize_artifacts(tiny_artifacts, str(tmp_path / "dyn8"), "dynamic-int8", log=lambda s: None)
    ops = lambda m, role: {n.op_type for n in onnx.load(m.path(m.graph(role)["file"]), load_external_data=False).graph.node}  # noqa: E731
    for role in ("primary_vision", "primary_llm", "assistant_vision", "assistant_prior"):
        assert ops(dyn, role) & {"MatMulInteger", "DynamicQuantizeMatMul"}, role
    ref = load_manifest(tiny_artifacts)
    roles = ("primary_vision", "primary_llm")
    report = accuracy_report(_engines(ref, roles), _engines(dyn, roles), calib)
    assert report.vision_cosine_mean > 0.97 and report.kl_mean < 0.1
    int4v = quantize_artifacts(tiny_artifacts, str(tmp_path / "int4v"), "int4", roles=("primary_vision",), block_size=16,
                               log=lambda s: None)
    assert "MatMulNBits" in ops(int4v, "primary_vision") and "Gemm" not in ops(int4v, "primary_vision")
    report = accuracy_report(_engines(ref, roles), _engines(int4v, roles), calib)
    assert report.vision_cosine_mean > 0.9
    result = load_pipeline(dyn.folder).answer(video_path, "What moves?", Options(num_frames=4, max_new_tokens=3))
    assert len(result.token_ids) >= 1
