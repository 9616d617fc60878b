"""The primary LLM split at layer K into two graphs, ``primary_llm_lo`` (layers < K) and
``primary_llm_hi`` (layers >= K), exported beside the one-graph ``primary_llm`` on request
(``export.py --fastv-layer K``). FastV and DART prune visual tokens between them at prefill and
DyCoke's decode-time KV step masks the KV rows of the upper segment; see ``runtime/llm_split.py``.
With the split the folder also gets the LLM's final RMSNorm (``final_norm_file``): DART reads
layer K-1's output after that norm, and the lower graph returns it before (the graphs stay as
they are)."""
from __future__ import annotations

import os

import numpy as np

from runtime.errors import DyTokError
from runtime.manifest import sha256_file

from . import specs

ROLES = ("primary_llm_lo", "primary_llm_hi")
DEFAULT_LAYER = 3  # FastV's HF demo K and DyCoke's L (spec §3.1, §4.1)


def resolve_split_layer(layer, num_layers: int) -> int:
    """``"default"`` -> min(3, depth - 1); an int must leave at least one layer on each side."""
    if layer == "default":
        return min(DEFAULT_LAYER, num_layers - 1)
    try:
        layer = int(layer)
    except (TypeError, ValueError):
        raise DyTokError(f"--fastv-layer {layer!r}: expected an integer or 'default'") from None
    if not 1 <= layer <= num_layers - 1:
        raise DyTokError(f"--fastv-layer {layer}: must be within 1..{num_layers - 1} for a {num_layers}-layer LLM "
                         f"(layers below it see every token, layers from it on the kept ones)")
    return layer


def segment_specs(consts: dict, layer: int) -> list[specs.GraphSpec]:
    c = consts
    bounds = [(0, layer), (layer, c["num_layers"])]
    return [specs.llm_segment_spec(role, c["hidden_size"], a, b, c["num_layers"], c["num_kv_heads"], c["head_dim"],
                                   c["vocab_size"]) for role, (a, b) in zip(ROLES, bounds)]


def example_feeds(spec: specs.GraphSpec, seq: int = 7, past: int = 5) -> dict:
    rng = np.random.default_rng(0)
    first = spec.inputs[0]
    feeds = {first.name: rng.normal(size=(1, seq, first.shape[2])).astype(np.float32),
             "position_ids": np.tile(np.arange(past, past + seq), (3, 1, 1)).astype(np.int64),
             "attention_mask": np.ones((1, past + seq), np.int64)}
    for t in spec.inputs[3:]:
        feeds[t.name] = rng.normal(size=(1, t.shape[1], past, t.shape[3])).astype(np.float32)
    return feeds


def final_norm_file(model, which: str, folder: str) -> dict:
    """Write the LLM's final RMSNorm weight [D] (float32) to ``folder`` -> its manifest entry
    ``{"final_norm": {file, sha256, shape, dtype, eps}}`` (``runtime.manifest``'s optional model file)."""
    norm = model.model.language_model.norm
    name = f"{which}_final_norm.npy"
    weight = norm.weight.detach().float().cpu().numpy()
    np.save(os.path.join(folder, name), weight)
    return {"final_norm": {"file": name, "sha256": sha256_file(os.path.join(folder, name)), "shape": list(weight.shape),
                           "dtype": "float32", "eps": float(norm.variance_epsilon)}}


def emit_split(emit, model, consts: dict, key_parts: dict, layer, attention: str, translation, folder: str) -> int:
    """Export both segments through the exporter's ``emit`` and write the final norm into ``folder``
    (added to ``consts``, the primary's manifest entry); returns the split layer."""
    from .graphs.llm import LanguageModelSegment

    layer = resolve_split_layer(layer, consts["num_layers"])
    consts.update(final_norm_file(model, "primary", folder))
    for spec, (a, b) in zip(segment_specs(consts, layer), [(0, layer), (layer, consts["num_layers"])]):
        extra = {"attention": attention, "split_layer": layer}
        emit(spec.role, LanguageModelSegment(model, a, b, attention).eval(), spec, example_feeds(spec),
             {**key_parts, "attention": attention, "segment": [a, b]}, translation, extra)
    return layer
