"""Half precision that does not overflow: the exported tiny graphs, with weights and inputs scaled so
that the RMSNorm variance and the SwiGLU product exceed fp16's range (>= 1e5 in fp32), fail in
plain fp16 and pass with the fp32 islands (finite, cosine >= 0.999 vs fp32). fp32 runs on ONNX
Runtime CPU; the fp16 graphs on ONNX's NumPy reference evaluator, which keeps fp16 arithmetic."""
import os

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("modelopt.onnx.autocast", reason="the 'half' extra (NVIDIA ModelOpt AutoCast) is not installed")

import onnxruntime as ort  # noqa: E402
from onnx import numpy_helper  # noqa: E402

from export.half import convert_artifacts, convert_model, island_nodes, save_model  # noqa: E402
from runtime.compare import cosine  # noqa: E402
from export.validate import manifest_spec, validation_feeds  # noqa: E402
from runtime.manifest import load_manifest  # noqa: E402

SCALE_IN = 400.0  # input scale: mean(x^2) ~ 1.6e5 in the first RMSNorm
SCALE_MLP = 2500.0  # gate/up weight scale: silu(gate) * up ~ 1e5..1e6; the down projection is scaled back


def _swiglu(model):
    """(gate MatMul, up MatMul, product Mul, down MatMul) per MLP, found from the graph's structure:
    product = Mul(Mul(g, Sigmoid(g)), u); written here independently of export/half.py."""
    nodes = list(model.graph.node)
    prod = {o: n for n in nodes for o in n.output}
    users = {}
    for n in nodes:
        for i in n.input:
            users.setdefault(i, []).append(n)
    found = []
    for n in nodes:
        if n.op_type != "Mul":
            continue
        for s, u in (n.input, n.input[::-1]):
            m = prod.get(s)
            if m is None or m.op_type != "Mul":
                continue
            sig = [prod.get(i) for i in m.input if prod.get(i) is not None and prod[i].op_type == "Sigmoid"]
            if sig and sig[0].input[0] in m.input and u in prod:
                gate, up = prod[sig[0].input[0]], prod[u]
                down = next(d for d in users[n.output[0]] if d.op_type in ("MatMul", "Gemm"))
                found.append((gate, up, n, down))
                break
    return found


def _scaled_graph(src: str, dst: str) -> list[str]:
    """Copy ``src`` with every SwiGLU's gate/up weights x SCALE_MLP and down weights / SCALE_MLP^2;
    returns the tensors to watch (variances and SwiGLU products)."""
    from runtime.manifest import loadable

    model = onnx.load(loadable(src, os.path.dirname(dst)))  # other tests hard-link the session's graphs
    inits = {t.name: t for t in model.graph.initializer}

    def scale(node, factor):
        for name in node.input[1:]:  # weight (and Gemm bias)
            if name in inits:
                t = inits[name]
                t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * np.float32(factor), name))

    mlps = _swiglu(model)
    assert mlps, "no SwiGLU found in the graph"
    for gate, up, _, down in mlps:
        scale(gate, SCALE_MLP), scale(up, SCALE_MLP), scale(down, 1 / SCALE_MLP ** 2)
    watch = [n.output[0] for n in model.graph.node if n.op_type == "ReduceMean" and "pow" in n.input[0]]
    watch += [product.output[0] for _, _, product, _ in mlps]
    save_model(model, dst)
    return watch


def _run(path, feeds, names):
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(names, feeds)


def _emulate(path, feeds, names):
    """Half-precision graphs on ONNX's NumPy reference evaluator: every op's output is rounded to
    its declared type, so fp16 overflows where TensorRT's would. (ONNX Runtime CPU is no test of
    this: it runs nodes without fp16 kernels in fp32 and drops the casts between them.)"""
    from onnx.reference import ReferenceEvaluator
    return [np.asarray(v, np.float32) for v in ReferenceEvaluator(path).run(names, feeds)]


@pytest.mark.parametrize("role", ["primary_llm", "primary_vision"])
def test_fp32_islands_survive_what_breaks_plain_fp16(tiny_artifacts, tmp_path, role):
    manifest = load_manifest(tiny_artifacts)
    fp32 = str(tmp_path / "fp32.onnx")
    watch = _scaled_graph(manifest.onnx_path(role), fp32)
    spec = manifest_spec(manifest, role)
    names = [t.name for t in spec.outputs]
    big = "inputs_embeds" if role.endswith("llm") else "pixel_values"
    feeds = validation_feeds(spec, role)[1]  # the larger of the two validation shapes
    feeds = {**feeds, big: feeds[big] * np.float32(SCALE_IN if role.endswith("llm") else SCALE_IN * 2)}

    # the premise: in fp32 the watched activations exceed fp16's range (65504)
    probe = onnx.load(fp32)
    probe.graph.output.extend(onnx.helper.make_tensor_value_info(w, onnx.TensorProto.FLOAT, None) for w in watch)
    onnx.save(probe, str(tmp_path / "probe.onnx"))
    peak = max(float(np.abs(v).max()) for v in _run(str(tmp_path / "probe.onnx"), feeds, watch))
    assert peak >= 1e5, peak
    want = _run(fp32, feeds, names)

    results = {}
    for label, islands in (("naive", False), ("islands", True)):
        model, kept = convert_model(fp32, "fp16", islands=islands)
        path = str(tmp_path / f"{label}.onnx")
        save_model(model, path)
        got = _emulate(path, feeds, names)
        finite = all(np.isfinite(g).all() for g in got)
        cos = min(cosine(g, w) if finite else float("nan") for g, w in zip(got, want) if w.size)
        results[label] = (finite, cos, len(kept))
    print(f"{role}: fp32 peak {peak:.3g}; naive fp16 finite={results['naive'][0]} cosine={results['naive'][1]:.6f}; "
          f"islands ({results['islands'][2]} fp32 nodes) finite={results['islands'][0]} cosine={results['islands'][1]:.8f}")
    naive_finite, naive_cos, _ = results["naive"]
    assert not (naive_finite and naive_cos >= 0.999), results  # plain fp16 breaks
    finite, cos, _ = results["islands"]
    assert finite and cos >= 0.999, results


def test_islands_cover_norms_softmax_swiglu_and_rotary(tiny_artifacts):
    model = onnx.load(load_manifest(tiny_artifacts).onnx_path("primary_llm"), load_external_data=False)
    ops = {n.name: n.op_type for n in model.graph.node}
    fp16, bf16 = set(island_nodes(model, "fp16")), set(island_nodes(model, "bf16"))
    layers = len([n for n in model.graph.node if n.op_type == "Softmax"])
    for op in ("Pow", "ReduceMean", "Sqrt", "Reciprocal", "Softmax", "Sigmoid", "Cos", "Sin"):
        assert {n for n, o in ops.items() if o == op} <= fp16, op
    assert sum(ops[n] == "ReduceMean" for n in fp16) == 2 * layers + 1  # two norms per layer + the final norm
    downs = {d.name for *_, d in _swiglu(model)}
    assert len(downs) == layers and downs <= fp16 and not downs & bf16  # fp16 only: bf16 has the range
    assert not any(ops[n] == "MatMul" and n not in downs for n in fp16)  # no other weight matmul stays fp32


@pytest.mark.parametrize("precision, elem", [("fp16", onnx.TensorProto.FLOAT16), ("bf16", onnx.TensorProto.BFLOAT16)])
def test_convert_artifacts_writes_a_valid_folder_with_cosines(tiny_artifacts, tmp_path, precision, elem):
    from runtime.engines.trt_build import graph_precision

    src = load_manifest(tiny_artifacts)
    data = src.path(src.graph("assistant_prior")["data_file"])
    os.link(data, tmp_path / "hardlink")  # as calibrate.py quantize leaves it; onnx refuses such files without a copy
    assert os.stat(data).st_nlink > 1
    m = convert_artifacts(tiny_artifacts, str(tmp_path / precision), precision, roles=("assistant_prior",), log=lambda *_: None)
    record = m.data["half_precision"]
    assert record["precision"] == precision and record["roles"] == ["assistant_prior"]
    rep = record["validation"]["assistant_prior"]
    assert rep["measured"] and rep["ok"] and rep["cosine"]["attention"] >= 0.999 and rep["engine"] == "onnx-reference"
    model = onnx.load(m.onnx_path("assistant_prior"))
    assert [i.type.tensor_type.elem_type for i in model.graph.input][0] == onnx.TensorProto.FLOAT  # fp32 I/O kept
    weights = [t for t in model.graph.initializer if t.dims and np.prod(t.dims) >= 64 * 64]
    kept = [t for t in weights if t.data_type != elem]
    assert weights and all(t.data_type == onnx.TensorProto.FLOAT for t in kept)
    # every weight matrix halved, except in fp16 the MLP down projections (fp32 islands)
    assert len(kept) == (len(_swiglu(model)) if precision == "fp16" else 0), [t.name for t in kept]
    assert graph_precision(m, "assistant_prior") == precision and graph_precision(m, "primary_llm") == "fp32"
    assert "engines" not in m.data and m.data["graphs"]["primary_llm"] == load_manifest(tiny_artifacts).graph("primary_llm")
    with pytest.raises(Exception, match="already converted"):
        convert_artifacts(m.folder, str(tmp_path / "again"), precision, log=lambda *_: None)
