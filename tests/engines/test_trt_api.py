"""The native TensorRT backend against the REAL TensorRT runtime API, without a GPU.

TensorRT's lean runtime installs from the package index (the ``trt-lean`` extra:
tensorrt-lean-cu12-bindings + tensorrt-lean-cu12-libs 11.4) and imports without a GPU. Every
TensorRT call and property that ``runtime/engines/tensorrt.py`` uses is read from its source (AST)
and looked up in those bindings: attributes must exist, properties must be properties, and calls
must match the arity of one of the pybind11 overloads (from their signatures).

NOT checkable here: the builder side (``trt_build.py``: Builder, OnnxParser, IBuilderConfig,
optimization profiles, timing cache). The lean runtime has no builder, and the full TensorRT
cannot be installed from this index. Only its BuilderFlag enum is present, which confirms that
TensorRT 11 has no precision flags and has VERSION_COMPATIBLE.
"""
import ast
import os
import re

import numpy as np
import pytest

trt = pytest.importorskip("tensorrt_lean_bindings",
                          reason="TensorRT's lean runtime is not installed (pip install -e '.[trt-lean]'; x86_64 Linux wheels)")

from runtime.engines import tensorrt as backend  # noqa: E402
from runtime.engines.trt_build import build_settings  # noqa: E402

SOURCE = os.path.join(os.path.dirname(backend.__file__), "tensorrt.py")
RECEIVERS = {"runtime": trt.Runtime, "engine": trt.ICudaEngine, "context": trt.IExecutionContext}


def _uses(source: str):
    """(class or module, attribute, n positional args or None if not called, line) for every
    TensorRT attribute the backend touches: ``trt.X``, ``trt.X.Y`` and ``self.runtime/engine/context.X``."""
    tree = ast.parse(source)
    calls = {id(n.func): len(n.args) + len(n.keywords) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        owner = node.value
        if isinstance(owner, ast.Name) and owner.id == "trt":
            found.append((trt, node.attr, calls.get(id(node)), node.lineno))
        elif isinstance(owner, ast.Attribute) and isinstance(owner.value, ast.Name):
            if owner.value.id == "trt":
                found.append((getattr(trt, owner.attr), node.attr, calls.get(id(node)), node.lineno))
            elif owner.value.id == "self" and owner.attr in RECEIVERS:
                found.append((RECEIVERS[owner.attr], node.attr, calls.get(id(node)), node.lineno))
    return found


def _split_params(text: str) -> list[str]:
    """Top-level comma split of a signature's parameter list (types may hold brackets)."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += ch in "[(<{"
        depth -= ch in "])>}"
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return [p for p in out + [cur.strip()] if p]


def _arities(func, name: str) -> list[tuple[int, int]]:
    """(required, total) argument counts, without self, of every overload in a pybind11 docstring."""
    found = []
    for sig in re.findall(rf"^(?:\d+\. )?{re.escape(name)}\((.*)\) ->", func.__doc__ or "", re.M):
        params = [p for p in _split_params(sig) if not p.startswith("self")]
        found.append((sum("=" not in p for p in params), len(params)))
    return found


def _check(source: str) -> tuple[list[str], set[str]]:
    """(problems, what was verified) for the TensorRT uses in ``source``."""
    problems, checked = [], set()
    for owner, attr, nargs, line in _uses(source):
        where = f"line {line}: {getattr(owner, '__name__', owner)}.{attr}"
        if not hasattr(owner, attr):
            problems.append(f"{where} does not exist in TensorRT {trt.__version__}")
            continue
        value = getattr(owner, attr)
        if nargs is None:
            checked.add(f"{getattr(owner, '__name__', '?')}.{attr}")
            continue
        if isinstance(value, property):
            problems.append(f"{where} is a property, called as a method")
            continue
        func = value.__init__ if isinstance(value, type) else value
        arities = _arities(func, "__init__" if isinstance(value, type) else attr)
        if arities and not any(lo <= nargs <= hi for lo, hi in arities):  # plain Python functions expose none
            problems.append(f"{where} called with {nargs} args; overloads take {arities}")
        checked.add(f"{getattr(owner, '__name__', '?')}.{attr}({nargs})")
    return problems, checked


def test_the_check_catches_missing_names_wrong_arity_and_properties():
    bad = ("def f(self, trt):\n    self.context.execute_async_v2(1, 2)\n    self.context.set_input_shape('x')\n"
           "    self.engine.num_io_tensors()\n    trt.BuilderFlag.FP16\n")
    problems, _ = _check(bad)
    assert len(problems) == 4, problems


def test_backend_uses_only_what_the_real_runtime_has():
    assert len(_uses(open(SOURCE).read())) >= 20  # the scan sees the backend's calls
    problems, checked = _check(open(SOURCE).read())
    assert not problems, problems
    print("verified against", trt.__version__, sorted(checked))
    for name in ("engine_host_code_allowed",):  # assigned, not read: must be a writable property
        prop = getattr(trt.Runtime, name)
        assert isinstance(prop, property) and prop.fset is not None


def test_properties_are_properties():
    for cls, attr in ((trt.ICudaEngine, "num_io_tensors"), (trt.Runtime, "engine_host_code_allowed")):
        assert isinstance(getattr(cls, attr), property)


def test_io_dtypes_map_to_numpy():
    """The backend sizes buffers with ``np.dtype(trt.nptype(...))``: every I/O type our graphs have
    (fp32 I/O is kept in half-precision graphs) maps; bf16 I/O would not, hence fp32 I/O."""
    want = {trt.DataType.FLOAT: np.float32, trt.DataType.HALF: np.float16, trt.DataType.INT32: np.int32,
            trt.DataType.INT64: np.int64, trt.DataType.BOOL: np.bool_}
    for dt, np_type in want.items():
        assert np.dtype(trt.nptype(dt)) == np.dtype(np_type)
    with pytest.raises(TypeError):
        trt.nptype(trt.DataType.BF16)


def test_backend_picks_the_lean_runtime_when_only_it_is_installed():
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("the full TensorRT is installed here; it is picked first")
    module, kind = backend.import_tensorrt()
    assert kind == "lean" and module.__version__ == trt.__version__


def test_tensorrt_11_has_no_weak_typing_flags():
    """TensorRT 11 removed the precision builder flags: the builder must not need them."""
    members = set(trt.BuilderFlag.__members__)
    assert not members & {"FP16", "BF16", "INT8", "FP8", "INT4", "FP4", "OBEY_PRECISION_CONSTRAINTS",
                          "PREFER_PRECISION_CONSTRAINTS"}
    for graph in ("fp32", "fp16", "bf16", "int8", "fp8"):
        s = build_settings(trt.__version__, graph, version_compatible=True)
        assert s.strongly_typed and set(s.builder_flags) <= members, s
    assert not hasattr(trt, "Builder") and not hasattr(trt, "OnnxParser")  # builder side: not checkable here
