"""Quantize exported graphs with ONNX Runtime's quantizers (CPU), into a new artifact folder.

- ``int8``: static QDQ, int8 activations (calibrated on the recorded feeds) and per-channel
  int8 weights, for the MatMul/Gemm nodes. Runs on ORT CPU and is the explicit-quantization
  form TensorRT consumes.
- ``int4``: weight-only, block-wise (``MatMulNBits``, block 128, symmetric) for the LLM's
  weight matmuls; activations stay fp32. ORT CPU/CUDA only (a contrib op, not for TensorRT).
- ``fp8``: static QDQ in float8 e4m3 (opset 19+), for TensorRT on Ada/Hopper; ORT's CPU has no
  fp8 MatMul, so it is built here and measured on the GPU.
- ``dynamic-int8``: the CPU speed form. Per-channel signed int8 weights, activations quantized
  per call (``quantize_dynamic`` -> ``MatMulInteger`` / ``DynamicQuantizeMatMul``), no
  calibration. Weight ``Gemm`` nodes become ``MatMul`` + ``Add`` first (ORT's dynamic quantizer
  mis-shapes ``transB`` Gemms). Not for TensorRT.

``int4`` applies to vision graphs too (their Gemms are rewritten to MatMul first).

The output folder is a complete artifact folder: graphs replaced, tokenizer and embeddings
hard-linked, the manifest's hashes updated and a ``quantization`` record added.
"""
from __future__ import annotations

import os
import tempfile

import numpy as np

from runtime.errors import ManifestError
from runtime.manifest import Manifest, load_manifest, loadable, write_derived_folder

from .dataset import CalibrationSet, common_shape_files

MODES = ("int8", "int4", "fp8", "dynamic-int8")
DEFAULT_ROLES = {"int8": ("primary_vision", "primary_llm"), "int4": ("primary_llm",), "fp8": ("primary_vision", "primary_llm"),
                 "dynamic-int8": ("primary_vision", "primary_llm", "assistant_vision", "assistant_prior")}
NO_CALIBRATION = ("int4", "dynamic-int8")


class FeedsReader:
    """onnxruntime.quantization.CalibrationDataReader over one role's recorded feeds."""

    def __init__(self, calib: CalibrationSet, role: str, input_names: list[str], one_shape: bool = False):
        from onnxruntime.quantization import CalibrationDataReader  # noqa: F401  (the protocol this follows)

        # ORT's fp8 (Distribution) calibrator stacks samples, so it needs them all of one shape
        self.files = common_shape_files(calib, role)[0] if one_shape else calib.files(role, "calib")
        if not self.files:
            raise ManifestError(f"calibration set {calib.folder!r} has no samples for {role!r}")
        self.names = input_names
        self.position = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.position >= len(self.files):
            return None
        with np.load(self.files[self.position], allow_pickle=False) as z:
            feeds = {n: z[n] for n in self.names}
        self.position += 1
        return feeds

    def rewind(self) -> None:
        self.position = 0


def quantize_static_graph(src: str, dst: str, reader: FeedsReader, fp8: bool = False) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    kind = QuantType.QFLOAT8E4M3FN if fp8 else QuantType.QInt8
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(dst))) as scratch:
        quantize_static(loadable(src, scratch), dst, reader, quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=["MatMul", "Gemm"], per_channel=not fp8, activation_type=kind,
                        weight_type=kind, use_external_data_format=True,
                        calibrate_method=CalibrationMethod.Distribution if fp8 else CalibrationMethod.MinMax,  # ORT: fp8 needs it
                        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                                       "MatMulConstBOnly": True})  # activation x activation matmuls (attention) stay fp32


def gemm_to_matmul(model) -> int:
    """Rewrite every ``Gemm`` whose B is an initializer (alpha = beta = 1, no transA) as
    ``MatMul`` (+ ``Add`` of C), transposing B for ``transB``; clears stale ``value_info``.
    In place; returns the number rewritten. Exact up to float summation order."""
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    nodes, count = [], 0
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if (node.op_type != "Gemm" or node.input[1] not in inits or attrs.get("transA", 0)
                or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0):
            nodes.append(node)
            continue
        b = numpy_helper.to_array(inits[node.input[1]])
        if attrs.get("transB", 0):
            b = np.ascontiguousarray(b.T)
        weight = numpy_helper.from_array(b, node.input[1] + "_mm")
        graph.initializer.append(weight)
        has_c = len(node.input) > 2 and node.input[2]
        mm_out = node.output[0] + "_mm" if has_c else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], weight.name], [mm_out], name=(node.name or "gemm") + "_mm"))
        if has_c:
            nodes.append(helper.make_node("Add", [mm_out, node.input[2]], [node.output[0]], name=(node.name or "gemm") + "_bias"))
        count += 1
    if count:
        del graph.node[:]
        graph.node.extend(nodes)
        used = {n for node in graph.node for n in node.input}
        keep = [i for i in graph.initializer if i.name in used]
        del graph.initializer[:]
        graph.initializer.extend(keep)
        del graph.value_info[:]
        onnx.checker.check_model(model) if model.ByteSize() < 2 ** 31 else None
    return count


def load_graph(src: str):
    """``onnx.load`` with external data, from a private copy when the files are hard-linked."""
    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        return onnx.load(loadable(src, tmp))


def quantize_dynamic_graph(src: str, dst: str) -> None:
    """Dynamic int8 (per-channel signed weights) on the weight MatMuls; works in a temp folder,
    because ``quantize_dynamic`` writes helper files beside its input."""
    import logging

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().setLevel(logging.WARNING)
    model = load_graph(src)
    gemm_to_matmul(model)
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(dst))) as work:
        mid = os.path.join(work, "in.onnx")
        onnx.save(model, mid, save_as_external_data=True, location="in.onnx.data")
        del model
        quantize_dynamic(mid, dst, op_types_to_quantize=["MatMul"], per_channel=True, weight_type=QuantType.QInt8,
                         use_external_data_format=True, extra_options={"MatMulConstBOnly": True})


def quantize_int4_graph(src: str, dst: str, block_size: int = 128) -> None:
    import logging

    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)  # a line per node

    config = DefaultWeightOnlyQuantConfig(block_size=block_size, is_symmetric=True, accuracy_level=4)
    model = load_graph(src)
    gemm_to_matmul(model)  # vision graphs: their linear layers are Gemms
    quantizer = MatMulNBitsQuantizer(model, block_size=block_size, is_symmetric=True, accuracy_level=4,
                                     algo_config=config)
    quantizer.process()
    quantizer.model.save_model_to_file(dst, use_external_data_format=True)


def quantize_artifacts(artifacts: str, out: str, mode: str, calibration: str | None = None,
                       roles: tuple[str, ...] | None = None, block_size: int = 128, log=print) -> Manifest:
    """Write ``out``: the artifact folder ``artifacts`` with ``roles`` quantized by ``mode``."""
    if mode not in MODES:
        raise ManifestError(f"quantization mode {mode!r}: expected one of {MODES}")
    manifest = load_manifest(artifacts)
    manifest.require_onnx("quantization")
    roles = roles or DEFAULT_ROLES[mode]
    missing = [r for r in roles if r not in manifest.data["graphs"]]
    if missing:
        raise ManifestError(f"{artifacts}: no graphs {missing} to quantize")
    if mode not in NO_CALIBRATION and calibration is None:
        raise ManifestError(f"{mode} needs a calibration set (scripts/calibrate.py collect)")
    calib = CalibrationSet(calibration) if mode not in NO_CALIBRATION else None

    def convert(role: str, src: str, dst: str) -> None:
        log(f"quantizing {role} ({mode})")
        if mode == "int4":
            quantize_int4_graph(src, dst, block_size)
        elif mode == "dynamic-int8":
            quantize_dynamic_graph(src, dst)
        else:
            inputs = [i["name"] for i in manifest.graph(role)["inputs"]]
            quantize_static_graph(src, dst, FeedsReader(calib, role, inputs, one_shape=mode == "fp8"), fp8=mode == "fp8")

    return write_derived_folder(manifest, out, roles, convert, mode, (
        "quantization", {"mode": mode, "roles": list(roles), "block_size": block_size if mode == "int4" else None,
                         "calibration": os.path.abspath(calibration) if calibration else None,
                         "from": os.path.abspath(artifacts)}))


def graph_bytes(manifest: Manifest, role: str) -> int:
    entry = manifest.graph(role)
    return sum(os.path.getsize(manifest.path(f)) for f in (entry["file"], entry.get("data_file")) if f)
