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
    if role.endswith("vision"):
        dim = shape["pixel_values"][1]
        return [{"pixel_values": rng.normal(size=(int(np.prod(g)), dim)).astype(np.float32), **vision_feeds(g)}
                for g in [(1, 4, 4), (3, 10, 6)]]
    first = spec.inputs[0].name  # inputs_embeds, or hidden_states for an upper LLM segment
    hidden = shape[first][2]
    if role == "assistant_prior":
        return [{"inputs_embeds": rng.normal(size=(1, n, hidden)).astype(np.float32),
                 "position_ids": np.tile(np.arange(n), (3, 1, 1)), "visual_index": np.arange(1, v + 1)}
                for n, v in [(5, 2), (23, 16)]]
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
