"""Grouped-query attention with M-RoPE as one op: a torch reference in eager mode, exported as
ONNX Runtime's ``com.microsoft.GroupQueryAttention`` (CPU and CUDA providers; not TensorRT).

The contrib op applies rotary itself from cos/sin caches indexed by absolute position. M-RoPE
positions are not the token index, so the graph builds, per call, caches whose rows
``past .. past+new-1`` hold the new tokens' own M-RoPE cos/sin (rows before are zeros and are
never read). The cache layout (rotated keys, ``[B, kv_heads, T, d]``) is the plain graph's, so
the pipeline does not change.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .vision import apply_rope


def causal_bias(n_new: int, n_past: int, attention_mask: Tensor, dtype: torch.dtype) -> Tensor:
    """Additive score bias (B, 1, S, P+S): new tokens see the past and themselves causally, and
    no key that ``attention_mask`` (B, P+S) zeroes. 0 where allowed, the dtype's minimum elsewhere."""
    device = attention_mask.device
    key_pos = torch.arange(attention_mask.shape[1], device=device)
    query_pos = torch.arange(n_new, device=device) + n_past
    allowed = (key_pos[None, :] <= query_pos[:, None])[None, None] & (attention_mask[:, None, None, :] > 0)
    return torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(~allowed, torch.finfo(dtype).min)


def expand_kv(x: Tensor, heads: int) -> Tensor:
    """(B, KV, P, d) -> (B, H, P, d): each KV head serves heads // kv_heads query heads."""
    b, kv, p, d = x.shape
    return x[:, :, None].expand(b, kv, heads // kv, p, d).reshape(b, heads, p, d)


def grouped_attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor) -> Tensor:
    """q (B, H, S, d), k/v (B, KV, T, d), bias broadcastable to (B, H, S, T) -> (B, S, H*d);
    softmax in fp32."""
    heads, d = q.shape[1], q.shape[-1]
    scores = torch.matmul(q, expand_kv(k, heads).transpose(-1, -2)) * d ** -0.5 + bias
    probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)
    return torch.matmul(probs, expand_kv(v, heads)).transpose(1, 2).reshape(q.shape[0], q.shape[2], -1)


def key_mask(attention_mask: Tensor | None) -> Tensor | None:
    """attention_mask (B, T) of 0/1 -> bool (B, 1, 1, T) (True: attend), or None when it keeps every
    key (the common case, which lets SDPA skip the mask). One host sync per graph call."""
    if attention_mask is None or bool((attention_mask > 0).all()):
        return None
    return (attention_mask > 0)[:, None, None, :]


def causal_mask(n_new: int, n_total: int, device, keys: Tensor | None = None) -> Tensor:
    """bool (1 or B, 1, S, T): query i (absolute position T - S + i) sees keys <= its position,
    and only the keys ``keys`` (from ``key_mask``) keeps. S x T booleans, built once per call."""
    allowed = torch.arange(n_total, device=device)[None, :] <= torch.arange(n_total - n_new, n_total, device=device)[:, None]
    allowed = allowed[None, None]
    return allowed if keys is None else allowed & keys


def one_query_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
    """Decode step: q (B, H, 1, d), k/v (B, KV, T, d), mask bool broadcastable to (B, 1, 1, T) or
    None -> (B, 1, H*d). Each KV head's query heads are rows of one matmul (no K/V expansion), softmax
    in fp32. Explicit rather than SDPA: one query row gives the fused kernels almost no parallelism,
    and the same ops are captured in a CUDA graph (``export/torch_step.py``)."""
    b, heads, _, d = q.shape
    kv = k.shape[1]
    scores = torch.matmul(q.reshape(b, kv, heads // kv, d), k.transpose(-1, -2)) * d ** -0.5  # (B, KV, G, T)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)
    return torch.matmul(probs, v).reshape(b, 1, heads * d)


def sdpa_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
    """q (B, H, S, d), k/v (B, KV, T, d), rotated -> (B, S, H*d), through
    ``torch.nn.functional.scaled_dot_product_attention`` (no S x T score matrix where a fused
    kernel applies). ``mask`` None: causal with S == T (``is_causal``), or every key when S == 1;
    else bool (.., S, T), True = attend (``causal_mask``)."""
    b, heads, s, d = q.shape
    if s == 1:
        return one_query_attention(q, k, v, mask)
    if mask is None and k.shape[2] != s:
        raise ValueError(f"causal attention without a mask needs as many keys as queries, got {k.shape[2]} and {s}")
    # K/V expanded to every query head: works with every SDPA kernel (flash, memory-efficient, CPU),
    # unlike enable_gqa, which some fall back from to the math kernel and its S x T matrix.
    out = F.scaled_dot_product_attention(q, expand_kv(k, heads), expand_kv(v, heads), attn_mask=mask,
                                         is_causal=mask is None)
    return out.transpose(1, 2).reshape(b, s, heads * d)


@torch.library.custom_op("dytok::group_query_attention", mutates_args=())
def group_query_attention(q: Tensor, k: Tensor, v: Tensor, past_k: Tensor, past_v: Tensor, cos: Tensor, sin: Tensor,
                          attention_mask: Tensor, num_heads: int, kv_heads: int) -> tuple[Tensor, Tensor, Tensor]:
    """q (B, S, H*d), k/v (B, S, KV*d) before RoPE; past (B, KV, P, d); cos/sin (S, d/2) of the new
    tokens; attention_mask (B, P+S), ones then right padding (the contrib op's convention).
    Returns out (B, S, H*d) and present k/v (B, KV, P+S, d), causal over past + new."""
    b, s, _ = q.shape
    p, d = past_k.shape[2], past_k.shape[-1]
    full_cos, full_sin = torch.cat([cos, cos], -1)[None, None], torch.cat([sin, sin], -1)[None, None]  # (1, 1, S, d)
    qh = apply_rope(q.view(b, s, num_heads, d).transpose(1, 2), full_cos, full_sin)
    kh = apply_rope(k.view(b, s, kv_heads, d).transpose(1, 2), full_cos, full_sin)
    present_k = torch.cat([past_k, kh], dim=2)
    present_v = torch.cat([past_v, v.view(b, s, kv_heads, d).transpose(1, 2)], dim=2)
    out = grouped_attention(qh, present_k, present_v, causal_bias(s, p, attention_mask, q.dtype))
    return out, present_k, present_v


@group_query_attention.register_fake
def _(q, k, v, past_k, past_v, cos, sin, attention_mask, num_heads, kv_heads):
    b, s, _ = q.shape
    shape = (b, kv_heads, past_k.shape[2] + s, past_k.shape[3])
    return q.new_empty(q.shape), past_k.new_empty(shape), past_v.new_empty(shape)


def _register_schema() -> None:
    """Teach onnx (hence onnxscript and the checker, in this process) the contrib op's signature:
    the inputs and attributes used here, as ONNX Runtime declares them."""
    import onnx
    from onnx.defs import OpSchema

    if onnx.defs.has("GroupQueryAttention", "com.microsoft"):
        return
    param = OpSchema.FormalParameter
    optional = OpSchema.FormalParameterOption.Optional
    inputs = [param("query", "T"), param("key", "T", param_option=optional), param("value", "T", param_option=optional),
              param("past_key", "T", param_option=optional), param("past_value", "T", param_option=optional),
              param("seqlens_k", "M"), param("total_sequence_length", "M"),
              param("cos_cache", "T", param_option=optional), param("sin_cache", "T", param_option=optional)]
    outputs = [param("output", "T"), param("present_key", "T"), param("present_value", "T")]
    ints = OpSchema.AttrType.INT
    schema = OpSchema(
        "GroupQueryAttention", "com.microsoft", 1, inputs=inputs, outputs=outputs,
        type_constraints=[("T", ["tensor(float)", "tensor(float16)", "tensor(bfloat16)"], ""), ("M", ["tensor(int32)"], "")],
        attributes=[OpSchema.Attribute("num_heads", ints, ""), OpSchema.Attribute("kv_num_heads", ints, ""),
                    OpSchema.Attribute("do_rotary", ints, "", required=False)])
    onnx.defs.register_schema(schema)


def onnx_translation() -> dict:
    """``custom_translation_table`` entry for ``torch.onnx.export``."""
    from onnx import TensorProto
    from onnxscript import opset18 as op
    from onnxscript.values import Opset

    _register_schema()
    msft = Opset("com.microsoft", 1)

    def gqa(q, k, v, past_k, past_v, cos, sin, attention_mask, num_heads: int, kv_heads: int):
        past = op.Shape(past_k, start=2, end=3)  # [1]
        total = op.Shape(attention_mask, start=1, end=2)  # [1]: past + new
        zeros = op.ConstantOfShape(op.Concat(past, op.Shape(cos, start=1, end=2), axis=0))  # (P, d/2), float32
        zeros = op.CastLike(zeros, cos)
        cos_cache, sin_cache = op.Concat(zeros, cos, axis=0), op.Concat(zeros, sin, axis=0)
        valid = op.ReduceSum(attention_mask, op.Constant(value_ints=[1]), keepdims=0)  # [B]
        seqlens_k = op.Cast(op.Sub(valid, op.Constant(value_ints=[1])), to=TensorProto.INT32)  # [B]: valid - 1
        total_len = op.Cast(op.Squeeze(total), to=TensorProto.INT32)  # scalar
        return msft.GroupQueryAttention(q, k, v, past_k, past_v, seqlens_k, total_len, cos_cache, sin_cache,
                                        num_heads=num_heads, kv_num_heads=kv_heads, do_rotary=1)

    return {torch.ops.dytok.group_query_attention.default: gqa}
