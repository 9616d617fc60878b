"""Check, without TensorRT, that an ONNX graph only uses what TensorRT's ONNX parser supports.

The support table (``trt_onnx_support_<version>.json``) is the operator and type columns of
onnx-tensorrt's ``docs/operators.md`` for that release. Checked per node: the default-domain
opset is within the parser's range, the operator is supported, and the type of its data input
is in the operator's type list. Custom domains (``com.microsoft`` contrib ops) are reported:
TensorRT's parser does not know them. Needs the ``onnx`` package, not TensorRT.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

from ..errors import EngineError

HERE = os.path.dirname(__file__)
DEFAULT_VERSION = "10.1"

# ONNX TensorProto element types -> the names used in the support table.
_TYPE_NAMES = {1: "FP32", 2: "UINT8", 3: "INT8", 6: "INT32", 7: "INT64", 9: "BOOL", 10: "FP16", 11: "DOUBLE",
               16: "BF16", 17: "FP8", 18: "FP8", 22: "INT4"}
# Which input carries the data whose type the table lists (others are indices, shapes, conditions).
_DATA_INPUT = {"Where": 1, "Expand": 0, "Reshape": 0, "Gather": 0, "GatherElements": 0, "GatherND": 0,
               "ScatterND": 0, "ScatterElements": 0, "Slice": 0, "Tile": 0, "Pad": 0}


@dataclass(frozen=True)
class Finding:
    graph: str
    node: str
    op_type: str
    problem: str

    def __str__(self) -> str:
        return f"{self.graph}: node {self.node!r} ({self.op_type}): {self.problem}"


def support_table(version: str = DEFAULT_VERSION) -> dict:
    path = os.path.join(HERE, f"trt_onnx_support_{version}.json")
    if not os.path.isfile(path):
        known = sorted(f[len("trt_onnx_support_"):-5] for f in os.listdir(HERE) if f.startswith("trt_onnx_support_"))
        raise EngineError(f"no TensorRT ONNX support table for version {version!r}; known: {known}")
    return json.load(open(path))


def _value_types(model) -> dict[str, int]:
    """Element type of every tensor name, after ONNX shape inference."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    types = {t.name: t.data_type for t in g.initializer}
    for vi in (*g.input, *g.output, *g.value_info):
        types[vi.name] = vi.type.tensor_type.elem_type
    for node in g.node:  # Constant outputs carry their type in the attribute
        if node.op_type == "Constant" and node.attribute and node.attribute[0].t.data_type:
            types[node.output[0]] = node.attribute[0].t.data_type
    return types


def lint_model(model, graph_name: str = "graph", version: str = DEFAULT_VERSION) -> list[Finding]:
    """Every problem TensorRT's ONNX parser of ``version`` would have with ``model`` (an onnx.ModelProto)."""
    table = support_table(version)
    ops = table["operators"]
    lo, hi = table["opset_range"]
    findings = []
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx") and not lo <= imp.version <= hi:
            findings.append(Finding(graph_name, "-", "-", f"opset {imp.version} outside TensorRT {version}'s {lo}..{hi}"))
    if model.functions:
        findings.append(Finding(graph_name, "-", "-", f"{len(model.functions)} local functions (inline them before building)"))
    types = _value_types(model)
    for node in model.graph.node:
        name = node.name or node.output[0]
        if node.domain not in ("", "ai.onnx"):
            findings.append(Finding(graph_name, name, node.op_type, f"custom domain {node.domain!r} has no TensorRT parser support"))
            continue
        entry = ops.get(node.op_type)
        if entry is None or not entry["supported"]:
            findings.append(Finding(graph_name, name, node.op_type, f"not supported by TensorRT {version}'s ONNX parser"))
            continue
        which = _DATA_INPUT.get(node.op_type, 0)
        if entry["types"] and which < len(node.input) and node.input[which]:
            code = types.get(node.input[which])
            kind = _TYPE_NAMES.get(code, f"type {code}")
            if code and kind not in entry["types"]:
                findings.append(Finding(graph_name, name, node.op_type, f"input {node.input[which]!r} is {kind}; "
                                        f"TensorRT {version} supports {', '.join(entry['types'])}"))
    return findings


def lint_file(path: str, version: str = DEFAULT_VERSION) -> list[Finding]:
    import onnx

    model = onnx.load(path, load_external_data=False)  # weights are not needed to check ops and types
    return lint_model(model, os.path.basename(path), version)


def lint_artifacts(manifest, version: str = DEFAULT_VERSION) -> dict[str, list[Finding]]:
    """role -> findings, for every graph of an artifact folder."""
    return {role: lint_file(manifest.onnx_path(role), version) for role in manifest.data["graphs"]}
