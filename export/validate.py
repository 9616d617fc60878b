"""Check an exported graph against its torch module at shapes it was NOT exported with, and report
every output's error at once."""
from __future__ import annotations

import numpy as np

from runtime.compare import compare_outputs
from runtime.vision_inputs import vision_feeds

from . import specs

TOLERANCE = 1e-4  # fp32, ONNX Runtime CPU vs torch eager


class ParityError(AssertionError):
    pass


def validation_feeds(spec: specs.GraphSpec, role: str) -> list[dict]:
    rng = np.random.default_rng(1)
    shape = {t.name: t.shape for t in spec.inputs}
    if role.endswith("vision") and len(shape["pixel_values"]) == 4:  # LLaVA-OV: whole frames [n_frames, 3, S, S]
        _, channels, height, width = shape["pixel_values"]
        return [{"pixel_values": rng.normal(size=(frames, channels, height, width)).astype(np.float32)} for frames in (1, 3)]
    if role.endswith("vision"):
        dim = shape["pixel_values"][1]
        return [{"pixel_values": rng.normal(size=(int(np.prod(g)), dim)).astype(np.float32), **vision_feeds(g)}
                for g in [(1, 4, 4), (3, 10, 6)]]
    first = spec.inputs[0].name  # inputs_embeds, or hidden_states for an upper LLM segment
    hidden = shape[first][2]
    if role == "assistant_prior":
        feeds = []
        for n, v, past in [(5, 2, 0), (23, 16, 0), (6, 9, 11)]:  # one-shot, and a later chunk over a past
            f = {"inputs_embeds": rng.normal(size=(1, n, hidden)).astype(np.float32),
                 "position_ids": np.tile(np.arange(past, past + n), (3, 1, 1)), "visual_index": np.arange(1, v + 1)}
            if "attention_mask" in shape:
                f["attention_mask"] = np.ones((1, past + n), np.int64)
                for t in spec.inputs[4:]:
                    f[t.name] = rng.normal(size=(1, t.shape[1], past, t.shape[3])).astype(np.float32)
            elif past:
                continue
            feeds.append(f)
        return feeds
    feeds = []
    for seq, past in [(9, 0), (1, 9)]:
        f = {first: rng.normal(size=(1, seq, hidden)).astype(np.float32),
             "position_ids": np.tile(np.arange(past, past + seq), (3, 1, 1)),
             "attention_mask": np.ones((1, past + seq), np.int64)}
        for t in spec.inputs[3:]:
            f[t.name] = rng.normal(size=(1, t.shape[1], past, t.shape[3])).astype(np.float32)
        feeds.append(f)
    return feeds


def validate_graph(module, path: str, spec: specs.GraphSpec, role: str) -> None:
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [t.name for t in spec.outputs]
    failures = []
    for feeds in validation_feeds(spec, role):
        got = dict(zip(names, session.run(names, feeds)))
        with torch.no_grad():
            want = module(*[torch.from_numpy(feeds[t.name]) for t in spec.inputs])
        want = want if isinstance(want, tuple) else (want,)
        report = compare_outputs(got, {n: w.numpy() for n, w in zip(names, want)}, atol=TOLERANCE)
        if not report:
            failures.append(str(report))
    if failures:
        raise ParityError(f"{role}: ONNX graph disagrees with the torch module:\n" + "\n".join(failures))


HALF_COSINE = 0.999  # least cosine vs fp32 that an fp16/bf16 graph must reach on the validation feeds
REFERENCE_MAX_BYTES = 256 << 20  # graphs ONNX Runtime CPU cannot run are emulated in NumPy up to this size


def manifest_spec(manifest, role: str) -> specs.GraphSpec:
    """A graph's spec rebuilt from the manifest's I/O table (for graphs validated after export)."""
    entry = manifest.graph(role)
    tensors = lambda side: tuple(specs.Tensor(t["name"], t["dtype"], tuple(t["shape"])) for t in entry[side])  # noqa: E731
    return specs.GraphSpec(role, tensors("inputs"), tensors("outputs"))


def half_precision_report(manifest, role: str, fp32_path: str, half_path: str) -> dict:
    """Run the fp32 graph of ``role`` (ONNX Runtime CPU) and its fp16/bf16 conversion on the
    validation feeds (shapes other than the export's) and report, per output, the least cosine over
    the feeds and whether every value is finite.

    The half graph runs on ONNX's NumPy reference evaluator, which rounds every op's output to its
    declared type (ml_dtypes for bf16), so fp16 overflows where TensorRT's would. ONNX Runtime's CPU
    provider is no such check: it runs nodes without fp16 kernels in fp32 and drops the casts between
    them (a plain-fp16 graph that gives zeros in NumPy scored cosine 1.0 there), and it has few bf16
    kernels. Graphs above ``REFERENCE_MAX_BYTES`` are too slow for NumPy and are reported as not
    measured (check them on the GPU), never as a pass."""
    import os

    import onnxruntime as ort

    from runtime.compare import cosine

    size = sum(os.path.getsize(p) for p in (half_path, half_path + ".data") if os.path.isfile(p))
    if size > REFERENCE_MAX_BYTES:
        return {"measured": False, "ok": None, "summary": f"cosine not measured: {size / 2**20:.0f} MB is too large for "
                                                          f"the NumPy reference; compare on the GPU"}
    from onnx.reference import ReferenceEvaluator

    spec = manifest_spec(manifest, role)
    names = [t.name for t in spec.outputs]
    ref = ort.InferenceSession(fp32_path, providers=["CPUExecutionProvider"])
    half = ReferenceEvaluator(half_path)
    cos, finite = {n: 1.0 for n in names}, {n: True for n in names}
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is what is being measured
        for feeds in validation_feeds(spec, role):
            want = dict(zip(names, ref.run(names, feeds)))
            got = {n: np.asarray(v, np.float32) for n, v in zip(names, half.run(names, feeds))}
            for n in names:
                if want[n].size:
                    cos[n] = min(cos[n], cosine(got[n], want[n]))
                finite[n] = finite[n] and bool(np.isfinite(got[n]).all())
    worst = min(cos, key=cos.get)
    ok = all(finite.values()) and cos[worst] >= HALF_COSINE
    return {"measured": True, "engine": "onnx-reference", "cosine": cos, "finite": finite, "ok": ok,
            "summary": f"least cosine vs fp32 {cos[worst]:.6f} ({worst}; NumPy reference), "
                       f"{'all finite' if all(finite.values()) else 'NON-FINITE values'}"}
