"""Each graph declared once: I/O names, dtypes and symbolic dims. The same declaration drives
``torch.onnx.export`` (dynamic shapes), the manifest's I/O table and engine profiles."""
from __future__ import annotations

from dataclasses import dataclass

from runtime.specs_kv import kv_input_names

OPSET = 18  # TensorRT 10.x (JetPack 6) parses up to opset 20; dynamo exports 18 cleanly


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str  # numpy dtype name
    shape: tuple  # ints or symbolic dim names


@dataclass(frozen=True)
class GraphSpec:
    role: str
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]

    def io_table(self) -> dict:
        as_dict = lambda t: {"name": t.name, "dtype": t.dtype, "shape": list(t.shape)}  # noqa: E731
        return {"inputs": [as_dict(t) for t in self.inputs], "outputs": [as_dict(t) for t in self.outputs]}


def vision_spec(role: str, patch_dim: int, out_dim: int, key_dim: int) -> GraphSpec:
    i64 = "int64"
    return GraphSpec(role, (
        Tensor("pixel_values", "float32", ("n_patches", patch_dim)),
        Tensor("patch_order", i64, ("n_patches",)),
        Tensor("rotary_hw", i64, ("n_patches", 2)),
        Tensor("window_index", i64, ("n_windows", "window_len")),
        Tensor("window_valid", "bool", ("n_windows", "window_len")),
        Tensor("window_inverse", i64, ("n_patches",)),
        Tensor("full_index", i64, ("n_groups", "group_len")),
        Tensor("full_valid", "bool", ("n_groups", "group_len")),
        Tensor("full_inverse", i64, ("n_patches",)),
        Tensor("unit_inverse", i64, ("n_tokens",)),
    ), (
        Tensor("tokens", "float32", ("n_tokens", out_dim)),
        Tensor("importance", "float32", ("n_tokens",)),
        Tensor("metric", "float32", ("n_tokens", key_dim)),
    ))


def llava_vision_spec(role: str, image_size: int, out_dim: int, key_dim: int) -> GraphSpec:
    """LLaVA-OneVision's vision graph (``graphs.llava_vision``): whole frames in, pooled tokens out
    (n_tokens = n_frames * tokens per frame, 196 for 384-pixel frames)."""
    return GraphSpec(role, (
        Tensor("pixel_values", "float32", ("n_frames", 3, image_size, image_size)),
    ), (
        Tensor("tokens", "float32", ("n_tokens", out_dim)),
        Tensor("importance", "float32", ("n_tokens",)),
        Tensor("metric", "float32", ("n_tokens", key_dim)),
    ))


def llm_spec(hidden: int, num_layers: int, kv_heads: int, head_dim: int, vocab: int) -> GraphSpec:
    past = tuple(Tensor(n, "float32", (1, kv_heads, "past_len", head_dim)) for n in kv_input_names(num_layers, "past"))
    present = tuple(Tensor(n, "float32", (1, kv_heads, "total_len", head_dim)) for n in kv_input_names(num_layers, "present"))
    return GraphSpec("primary_llm", (
        Tensor("inputs_embeds", "float32", (1, "seq_len", hidden)),
        Tensor("position_ids", "int64", (3, 1, "seq_len")),
        Tensor("attention_mask", "int64", (1, "total_len")),
        *past,
    ), (Tensor("logits", "float32", (1, vocab)), *present))


def prior_spec(hidden: int, num_selected: int, kv: tuple[int, int, int] | None = None) -> GraphSpec:
    """The assistant's prior graph. ``kv = (cached layers, kv_heads, head_dim)`` adds the KV-cache
    inputs and outputs of chunked prefill (layers 0..deepest selected); None: the one-shot form."""
    cache_in, cache_out = (), ()
    if kv is not None:
        layers, kv_heads, head_dim = kv
        cache_in = (Tensor("attention_mask", "int64", (1, "total_len")),
                    *(Tensor(n, "float32", (1, kv_heads, "past_len", head_dim)) for n in kv_input_names(layers, "past")))
        cache_out = tuple(Tensor(n, "float32", (1, kv_heads, "total_len", head_dim)) for n in kv_input_names(layers, "present"))
    return GraphSpec("assistant_prior", (
        Tensor("inputs_embeds", "float32", (1, "seq_len", hidden)),
        Tensor("position_ids", "int64", (3, 1, "seq_len")),
        Tensor("visual_index", "int64", ("n_visual",)),
        *cache_in,
    ), (Tensor("attention", "float32", (num_selected, "n_visual")), *cache_out))


def llm_segment_spec(role: str, hidden: int, start: int, stop: int, num_layers: int, kv_heads: int, head_dim: int,
                     vocab: int) -> GraphSpec:
    """Layers [start, stop) of the primary LLM (``graphs.llm.LanguageModelSegment``); KV names keep
    their global layer index. The first segment takes ``inputs_embeds``, a later one ``hidden_states``;
    the last returns ``logits``, an earlier one ``hidden_states`` and the last row's ``attention``."""
    past = tuple(Tensor(n, "float32", (1, kv_heads, "past_len", head_dim)) for n in kv_input_names(stop, "past", start))
    present = tuple(Tensor(n, "float32", (1, kv_heads, "total_len", head_dim)) for n in kv_input_names(stop, "present", start))
    first = "inputs_embeds" if start == 0 else "hidden_states"
    outputs = ((Tensor("logits", "float32", (1, vocab)),) if stop == num_layers else
               (Tensor("hidden_states", "float32", (1, "seq_len", hidden)), Tensor("attention", "float32", ("total_len",))))
    return GraphSpec(role, (
        Tensor(first, "float32", (1, "seq_len", hidden)),
        Tensor("position_ids", "int64", (3, 1, "seq_len")),
        Tensor("attention_mask", "int64", (1, "total_len")),
        *past,
    ), (*outputs, *present))
