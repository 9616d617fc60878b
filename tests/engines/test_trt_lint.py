"""The TensorRT ONNX-parser lint (CPU): exported graphs pass, and each kind of problem is caught."""
import onnx
import pytest
from onnx import TensorProto, helper

from runtime.engines.trt_lint import lint_artifacts, lint_model, support_table
from runtime.errors import EngineError
from runtime.manifest import load_manifest


def _model(nodes, inputs, outputs, opset=18, extra_opsets=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs)
    imports = [helper.make_opsetid("", opset), *extra_opsets]
    return helper.make_model(graph, opset_imports=imports, ir_version=10)


def _fp(name, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, [2, 2])


def test_exported_graphs_use_only_parser_supported_ops_and_types(tiny_artifacts):
    findings = lint_artifacts(load_manifest(tiny_artifacts))
    assert set(findings) == {"primary_vision", "primary_llm", "assistant_vision", "assistant_prior"}
    assert all(not f for f in findings.values()), [str(x) for f in findings.values() for x in f]


def test_clean_model_passes():
    m = _model([helper.make_node("MatMul", ["a", "b"], ["c"])], [_fp("a"), _fp("b")], [_fp("c")])
    assert lint_model(m) == []


def test_unsupported_operator_is_reported():
    assert not support_table()["operators"]["Bernoulli"]["supported"]
    m = _model([helper.make_node("Bernoulli", ["a"], ["c"])], [_fp("a")], [_fp("c")])
    (f,) = lint_model(m, "g.onnx")
    assert f.op_type == "Bernoulli" and "not supported" in f.problem


def test_wrong_input_type_is_reported():
    m = _model([helper.make_node("MatMul", ["a", "b"], ["c"])], [_fp("a", TensorProto.INT32), _fp("b", TensorProto.INT32)],
               [_fp("c", TensorProto.INT32)])
    (f,) = lint_model(m)
    assert "INT32" in f.problem and "FP32" in f.problem


def test_contrib_ops_and_new_opsets_are_reported():
    node = helper.make_node("MatMulNBits", ["a", "b"], ["c"], domain="com.microsoft", K=2, N=2, bits=4, block_size=16)
    m = _model([node], [_fp("a"), _fp("b")], [_fp("c")], extra_opsets=[helper.make_opsetid("com.microsoft", 1)])
    assert any("custom domain 'com.microsoft'" in f.problem for f in lint_model(m))
    m = _model([helper.make_node("Relu", ["a"], ["c"])], [_fp("a")], [_fp("c")], opset=21)
    assert any("opset 21" in f.problem for f in lint_model(m))


def test_unknown_parser_version_is_a_clear_error():
    with pytest.raises(EngineError, match="known: \\['10.1'\\]"):
        support_table("7.0")


def test_where_checks_its_data_input_not_the_condition():
    cond = helper.make_tensor_value_info("m", TensorProto.BOOL, [2, 2])
    m = _model([helper.make_node("Where", ["m", "a", "b"], ["c"])], [cond, _fp("a"), _fp("b")], [_fp("c")])
    assert lint_model(m) == []
    onnx.checker.check_model(m)
