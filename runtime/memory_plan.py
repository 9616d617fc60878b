"""Device memory plan for a model, precision and video length, computed from the config.

weights: parameter counts of the ViT (patch embedding, blocks, merger) and the LLM (embeddings,
  attention with biased q/k/v and GQA, SwiGLU MLP, norms, untied head), at the precision's bytes
  per parameter. int4/int8/fp8 quantize the linear layers only: embeddings and norms stay fp16;
  int4 leaves the ViT in fp16 (weight-only int4 targets the LLM's matmuls) and adds one fp16
  scale per 128-weight block.
kv: 2 (K, V) x layers x kv_heads x head_dim x context x bytes, twice: the TensorRT backend
  keeps two preallocated sets at the profile maximum (present of step n is past of step n+1).
activations: the larger of the ViT peak (per chunk of temporal groups: hidden states, qkv, the
  SwiGLU intermediate, and fp32 attention scores of the full-attention blocks, heads x L^2 per
  group) and the LLM prefill peak (hidden, SwiGLU intermediate, fp32 scores heads x S^2 for one
  layer). Unfused upper bounds: TensorRT's fused attention needs less.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

GB = 1e9
# Public config.json figures of the released checkpoints.
QWEN25_VL_VIT = dict(vision_hidden_size=1280, vision_intermediate_size=3420, vision_depth=32, vision_heads=16,
                     fullatt_block_indexes=[7, 15, 23, 31], patch_size=14, temporal_patch_size=2, merge_size=2,
                     window_size=112, max_pixels=768 * 28 * 28, min_pixels=128 * 28 * 28)
REAL_MODELS = {
    "qwen2.5-vl-3b": dict(QWEN25_VL_VIT, hidden_size=2048, num_layers=36, num_heads=16, num_kv_heads=2, head_dim=128,
                          intermediate_size=11008, vocab_size=151936, tie_word_embeddings=True, context_length=128000),
    "qwen2.5-vl-7b": dict(QWEN25_VL_VIT, hidden_size=3584, num_layers=28, num_heads=28, num_kv_heads=4, head_dim=128,
                          intermediate_size=18944, vocab_size=152064, tie_word_embeddings=False, context_length=128000),
    "qwen2.5-vl-32b": dict(QWEN25_VL_VIT, hidden_size=5120, num_layers=64, num_heads=40, num_kv_heads=8, head_dim=128,
                           intermediate_size=27648, vocab_size=152064, tie_word_embeddings=False, context_length=128000),
    "qwen2.5-vl-72b": dict(QWEN25_VL_VIT, hidden_size=8192, num_layers=80, num_heads=64, num_kv_heads=8, head_dim=128,
                           intermediate_size=29568, vocab_size=152064, tie_word_embeddings=False, context_length=128000),
}
# Memory the model may use: total minus what JetPack's OS, CUDA context and TensorRT libraries
# hold (an assumption, measured on no device here; override with --reserve-gb).
DEVICES = {
    "orin-nano-8gb": dict(memory_gb=8, reserve_gb=2.5, compute_capability="8.7", shared=True),
    "orin-nx-16gb": dict(memory_gb=16, reserve_gb=3.0, compute_capability="8.7", shared=True),
    "agx-orin-64gb": dict(memory_gb=64, reserve_gb=4.0, compute_capability="8.7", shared=True),
    "thor-128gb": dict(memory_gb=128, reserve_gb=6.0, compute_capability="11.0", shared=True),
    "h200": dict(memory_gb=141, reserve_gb=2.0, compute_capability="9.0", shared=False),
}
BYTES = {"fp32": 4.0, "fp16": 2.0, "bf16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5}


def vit_params(m: dict) -> int:
    e, i, depth = m["vision_hidden_size"], m["vision_intermediate_size"], m["vision_depth"]
    patch = 3 * m["temporal_patch_size"] * m["patch_size"] ** 2 * e  # Conv3d, no bias
    block = (e * 3 * e + 3 * e) + (e * e + e) + (3 * e * i + 2 * i + e) + 2 * e  # qkv, proj, SwiGLU (biased), 2 RMSNorm
    merged = e * m["merge_size"] ** 2
    merger = e + (merged * merged + merged) + (merged * m["hidden_size"] + m["hidden_size"])  # ln_q, 2 linears
    return patch + depth * block + merger


def llm_linear_params(m: dict) -> int:
    """Weights of the LLM's matmuls (what quantization touches), biases included."""
    h, kv = m["hidden_size"], m["num_kv_heads"] * m["head_dim"]
    attn = (h * h + h) + 2 * (h * kv + kv) + h * h  # q, k, v with bias; o without
    return m["num_layers"] * (attn + 3 * h * m["intermediate_size"])


def llm_other_params(m: dict) -> int:
    """Embeddings, untied head and RMSNorm weights (kept in fp16 by quantization)."""
    h = m["hidden_size"]
    head = 0 if m.get("tie_word_embeddings") else m["vocab_size"] * h
    return m["vocab_size"] * h + head + m["num_layers"] * 2 * h + h


def weight_bytes(m: dict, precision: str, block: int = 128) -> dict[str, float]:
    if precision not in BYTES:
        raise ValueError(f"precision {precision!r}: expected one of {sorted(BYTES)}")
    low = BYTES[precision]
    other = 4.0 if precision == "fp32" else 2.0  # embeddings and norms: fp16 unless fp32
    linear = llm_linear_params(m) * (low + (2.0 / block if precision == "int4" else 0.0))
    vit = vit_params(m) * (2.0 if precision == "int4" else low)
    return {"vision": vit, "llm_linear": linear, "llm_other": llm_other_params(m) * other}


def kv_bytes_per_token(m: dict, precision: str) -> float:
    kv_dtype = 4.0 if precision == "fp32" else 2.0  # the cache stays fp16 under weight quantization
    return 2 * m["num_layers"] * m["num_kv_heads"] * m["head_dim"] * kv_dtype


@dataclass(frozen=True)
class Workload:
    frames: int = 32
    max_pixels: int | None = None  # per frame; None: the model's
    retention: float = 0.25
    text_tokens: int = 128
    new_tokens: int = 256
    vision_chunk: int | None = 2  # temporal groups per ViT call; None: the whole video at once


def visual_tokens(m: dict, w: Workload) -> tuple[int, int, int]:
    """(temporal groups, patches per group, visual tokens) for square-ish frames at the pixel cap."""
    pixels = w.max_pixels or m["max_pixels"]
    patches = pixels // m["patch_size"] ** 2
    patches -= patches % m["merge_size"] ** 2
    groups = math.ceil(w.frames / m["temporal_patch_size"])
    return groups, patches, groups * patches // m["merge_size"] ** 2


def context_length(m: dict, w: Workload) -> int:
    """The LLM profile maximum this workload needs: kept visual tokens + text + new tokens."""
    return math.ceil(visual_tokens(m, w)[2] * w.retention) + w.text_tokens + w.new_tokens


def activation_bytes(m: dict, w: Workload, precision: str) -> dict[str, float]:
    act = 4.0 if precision == "fp32" else 2.0
    groups, per_group, _ = visual_tokens(m, w)
    chunk = min(w.vision_chunk or groups, groups)
    n = chunk * per_group
    e, heads = m["vision_hidden_size"], m["vision_heads"]
    vit = n * (2 * e + 3 * e + 2 * m["vision_intermediate_size"]) * act + chunk * heads * per_group ** 2 * 4.0
    s, h = context_length(m, w) - w.new_tokens, m["hidden_size"]
    llm = s * (2 * h + 2 * m["intermediate_size"]) * act + m["num_heads"] * s * s * 4.0
    return {"vision": vit, "llm_prefill": llm}


def plan(m: dict, precision: str, w: Workload, device: str | None = None, reserve_gb: float | None = None) -> dict:
    weights = weight_bytes(m, precision)
    ctx = context_length(m, w)
    kv = 2 * kv_bytes_per_token(m, precision) * ctx
    acts = activation_bytes(m, w, precision)
    total = sum(weights.values()) + kv + max(acts.values())
    out = {"weights": weights, "kv_cache": kv, "context": ctx, "visual_tokens": visual_tokens(m, w)[2],
           "activations": acts, "total": total}
    if device:
        if device not in DEVICES:
            raise ValueError(f"device {device!r}: expected one of {sorted(DEVICES)}")
        d = DEVICES[device]
        usable = (d["memory_gb"] - (d["reserve_gb"] if reserve_gb is None else reserve_gb)) * GB
        out.update(device=device, usable=usable, fits=total <= usable)
    return out
