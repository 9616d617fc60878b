"""fp16 / bf16 graphs that do not overflow: the precision lives in the graph, with fp32 islands.

TensorRT 11 builds strongly typed networks only (no FP16/BF16 builder flags), so half precision
must be written into the ONNX graph. A plain fp16 cast breaks Qwen2.5-VL: the RMSNorm variance
``mean(x^2)`` exceeds 65504 as soon as |x| > 256, and the SwiGLU product ``silu(gate) * up``
overflows likewise, which turns whole rows into inf/0. So these nodes stay fp32 ("islands"):

- RMSNorm: ``Pow``, the ``ReduceMean`` of the variance, its ``+ eps``, ``Sqrt``, ``Reciprocal`` (or
  ``Div``) and the ``x * rsqrt`` product; this covers every block's norms and the final norm;
- every ``ReduceMean`` / ``ReduceSum`` (the prior's head means, the importance and metric sums);
- ``Softmax`` and the score + mask ``Add`` feeding it;
- the SwiGLU ``Sigmoid``, ``silu`` and ``silu * up`` product; in fp16 also the down projection
  that consumes the product (and its bias ``Add``), because casting the fp32 product back to fp16
  before that matmul would overflow all the same. bf16 has fp32's range, so there the down
  projection runs in bf16 and costs no fp32 weights;
- the rotary angles (every float ancestor of ``Cos``/``Sin``): position x inv_freq reaches the
  context length, and fp16 has a unit of 1.0 above 2048, i.e. a one-radian error.

The conversion is NVIDIA ModelOpt's AutoCast (``convert_to_mixed_precision``) with these nodes
excluded by name and its data-range rule off (our graphs take index inputs that random feeds
would break). Graph inputs and outputs keep their fp32 types, so the manifest's I/O tables and
the runtime do not change. ModelOpt's ``[onnx]`` extra pins onnx ~1.21 and onnxruntime-gpu, which
cannot live beside our onnx 1.23.2 and CPU onnxruntime, so the ``half`` extra installs ModelOpt's
core plus the four packages AutoCast imports (onnx-graphsurgeon, onnxslim, lief; torch comes from
``export``).
"""
from __future__ import annotations

import os
import re
import tempfile
from collections import defaultdict

import numpy as np

from runtime.errors import ManifestError
from runtime.manifest import Manifest, load_manifest, loadable, write_derived_folder

HALF = ("fp16", "bf16")
_ALWAYS_FP32 = ("Pow", "ReduceMean", "ReduceSum", "Sqrt", "Reciprocal", "Softmax")
_MATMUL = ("MatMul", "Gemm")


def island_nodes(model, precision: str) -> list[str]:
    """Names of the nodes kept in fp32 when ``model`` goes to ``precision`` (module docstring)."""
    if precision not in HALF:
        raise ValueError(f"precision {precision!r}: expected one of {HALF}")
    nodes = list(model.graph.node)
    producer = {out: n for n in nodes for out in n.output}
    consumers = defaultdict(list)
    for n in nodes:
        for i in n.input:
            consumers[i].append(n)
    initializers = {t.name for t in model.graph.initializer}
    made_by = lambda name, *ops: name in producer and producer[name].op_type in ops  # noqa: E731
    keep: dict[str, None] = {}  # ordered set

    def silu_of(name: str):
        """The ``x * sigmoid(x)`` node producing ``name``, with its Sigmoid, or None."""
        m = producer.get(name)
        if m is None or m.op_type != "Mul" or len(m.input) != 2:
            return None
        for a, b in (m.input, m.input[::-1]):
            if made_by(b, "Sigmoid") and producer[b].input[0] == a:
                return m, producer[b]
        return None

    for n in nodes:
        if n.op_type in _ALWAYS_FP32:
            keep[n.name] = None
        if n.op_type == "Add" and any(made_by(i, "ReduceMean") for i in n.input):
            keep[n.name] = None  # var + eps
        if n.op_type == "Mul" and any(made_by(i, "Reciprocal") for i in n.input):
            keep[n.name] = None  # x * rsqrt(var + eps)
        if n.op_type == "Div" and len(n.input) == 2 and made_by(n.input[1], "Sqrt"):
            keep[n.name] = None  # x / sqrt(var + eps)
        if n.op_type == "Softmax" and made_by(n.input[0], "Add"):
            keep[producer[n.input[0]].name] = None  # scores + mask
        if n.op_type == "Mul" and len(n.input) == 2:
            silu = next((s for s in map(silu_of, n.input) if s), None)
            if silu and n.name != silu[0].name:  # silu(gate) * up
                keep.update(dict.fromkeys([silu[1].name, silu[0].name, n.name]))
                if precision == "fp16":
                    for down in consumers[n.output[0]]:
                        if down.op_type in _MATMUL:
                            keep[down.name] = None
                            for bias in consumers[down.output[0]]:
                                if bias.op_type == "Add" and any(i in initializers for i in bias.input):
                                    keep[bias.name] = None
    # rotary angles: every float ancestor of Cos/Sin (Shape only reads a shape: never cast for it)
    stack = [n for n in nodes if n.op_type in ("Cos", "Sin")]
    seen = set()
    while stack:
        n = stack.pop()
        if n.name in seen or n.op_type == "Shape":
            continue
        seen.add(n.name)
        keep[n.name] = None
        stack.extend(producer[i] for i in n.input if i in producer)
    return list(keep)


def convert_model(src: str, precision: str, islands: bool = True):
    """``src`` (an fp32 ONNX file, external data beside it) converted to ``precision`` with AutoCast;
    ``islands=False`` gives the naive all-half graph (for comparison only). Returns (model, islands)."""
    import onnx

    try:
        from modelopt.onnx.autocast import convert_to_mixed_precision
        from modelopt.onnx.autocast.logging_config import configure_logging
    except ImportError as e:
        raise ManifestError(f"half-precision conversion needs NVIDIA ModelOpt's AutoCast (pip install -e '.[half]'): {e}") from None
    configure_logging("WARNING")
    keep = island_nodes(onnx.load(src, load_external_data=False), precision) if islands else []
    with tempfile.TemporaryDirectory() as scratch:
        model = convert_to_mixed_precision(
            loadable(src, scratch), precision, nodes_to_exclude=[f"^{re.escape(n)}$" for n in keep], data_max=np.inf,
            init_max=np.finfo(np.float16).max if precision == "fp16" else np.inf, keep_io_types=True, opset=18)
    return model, keep


def save_model(model, dst: str) -> None:
    """Save with external weights in ``<dst>.data`` (what the manifest and TensorRT's parser expect)."""
    import onnx

    onnx.save_model(model, dst, save_as_external_data=True, all_tensors_to_one_file=True,
                    location=os.path.basename(dst) + ".data", size_threshold=1024)


def convert_artifacts(artifacts: str, out: str, precision: str = "bf16", roles: tuple[str, ...] | None = None,
                      islands: bool = True, log=print) -> Manifest:
    """Write ``out``: ``artifacts`` with its graphs in ``precision`` (fp32 islands), other files
    hard-linked, hashes updated, a ``half_precision`` record (with the cosine of every output
    against the fp32 graph where ONNX Runtime CPU runs it) and no engine records."""
    from .validate import HALF_COSINE, ParityError, half_precision_report

    if precision not in HALF:
        raise ManifestError(f"precision {precision!r}: expected one of {HALF}")
    manifest = load_manifest(artifacts)
    manifest.require_onnx("half-precision conversion")
    if manifest.data.get("quantization") or manifest.data.get("half_precision"):
        raise ManifestError(f"{artifacts} is already converted ({manifest.data.get('quantization') and 'quantized' or 'half precision'}); "
                            f"convert the fp32 export")
    roles = roles or tuple(manifest.data["graphs"])
    missing = [r for r in roles if r not in manifest.data["graphs"]]
    if missing:
        raise ManifestError(f"{artifacts}: no graphs {missing} to convert")
    report: dict = {}

    def convert(role: str, src: str, dst: str) -> None:
        model, keep = convert_model(src, precision, islands)
        save_model(model, dst)
        del model
        import onnx

        onnx.checker.check_model(dst, full_check=True)  # types and shapes, as export checks its graphs
        report[role] = {"fp32_nodes": len(keep), **half_precision_report(manifest, role, src, dst)}
        log(f"{role}: {precision}, {len(keep)} nodes kept fp32; " + report[role]["summary"])
        if islands and report[role]["measured"] and not report[role]["ok"]:
            raise ParityError(f"{role} in {precision}: {report[role]['summary']}; needs cosine >= {HALF_COSINE} "
                              f"and finite outputs (try bf16, or keep more nodes in fp32)")

    return write_derived_folder(manifest, out, roles, convert, f"{precision}{'' if islands else '-naive'}", (
        "half_precision", {"precision": precision, "roles": list(roles), "islands": islands,
                           "tool": "modelopt.onnx.autocast", "validation": report, "from": os.path.abspath(artifacts)}))
