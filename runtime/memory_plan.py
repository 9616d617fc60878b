"""Device memory plan for a deployment (primary model + assistant), computed from the configs.

Bytes follow what our graphs hold (docs/tensorrt-jetson.md, docs/calibration.md), per precision (``DTYPES``):
- fp32: the export. fp16 / bf16: ``convert_precision.py`` graphs; every weight in half precision
  except, in fp16, the MLP down projections, which stay fp32 after the fp32 SwiGLU product.
- int8 / fp8: ``calibrate.py quantize`` Q/DQ graphs made from the fp32 export: the matmul weights
  (LM head included) take 1 byte, norms and activations stay fp32. int4 (ONNX Runtime
  ``MatMulNBits``, LLM only) adds one fp16 scale per 128-weight block; its ViT stays fp32.
- KV cache: every graph keeps fp32 inputs and outputs, so the cache is fp32 (4 bytes) whatever
  the weights: 2 (K, V) x layers x kv_heads x head_dim x context x 4, twice, because the TensorRT
  backend keeps two preallocated sets at the profile maximum (present of step n is past of n+1).
- embeddings: the ``*_embeddings.npy`` tables are memory-mapped on the host and only the rows of
  the prompt's tokens are read, so they are listed but not counted.
activations, per engine: the ViT peak (per chunk of temporal groups: hidden states, qkv, the
  SwiGLU intermediate, and fp32 attention scores of the full-attention blocks, heads x L^2 per
  group) and the LLM prefill peak (hidden, SwiGLU intermediate, fp32 scores heads x S^2 for one
  layer). Each TensorRT execution context keeps its own scratch at its profile maximum, so the
  engines' peaks ADD UP. Unfused upper bounds: TensorRT's fused attention needs less.
assistant: its ViT and its prior graph (the LLM cut after the deepest prior layer: no head, no
  final norm, no KV cache), over ALL its visual tokens (it sees the video before compression), at
  its own frame count and pixel cap.
families (a config's ``family``, default Qwen2.5-VL): Qwen2.5-VL's ViT takes 2-frame temporal
  patches at the pixel cap, 2x2-merged into the LLM's tokens, SwiGLU MLPs; LLaVA-OneVision's SigLIP
  takes every frame at 384 x 384 (729 patches, full attention in every layer, no pixel cap), GELU
  MLPs, a 2-layer projector, 196 pooled tokens per frame.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

GB = 1e9
# Memory the model may use: total minus what JetPack's OS, CUDA context and TensorRT libraries
# hold (an assumption, measured on no device here; override with --reserve-gb).
DEVICES = {
    "orin-nano-8gb": dict(memory_gb=8, reserve_gb=2.5, compute_capability="8.7", shared=True),
    "orin-nx-16gb": dict(memory_gb=16, reserve_gb=3.0, compute_capability="8.7", shared=True),
    "agx-orin-64gb": dict(memory_gb=64, reserve_gb=4.0, compute_capability="8.7", shared=True),
    "thor-128gb": dict(memory_gb=128, reserve_gb=6.0, compute_capability="11.0", shared=True),
    "h200": dict(memory_gb=141, reserve_gb=2.0, compute_capability="9.0", shared=False),
}
# Per precision: matmul weights, the ViT's weights, norms, activations, KV cache (bytes), and
# whether the MLP down projections stay fp32 (fp16 islands).
DTYPES = {
    "fp32": dict(linear=4.0, vision=4.0, norms=4.0, act=4.0, kv=4.0, fp32_down=False),
    "fp16": dict(linear=2.0, vision=2.0, norms=2.0, act=2.0, kv=4.0, fp32_down=True),
    "bf16": dict(linear=2.0, vision=2.0, norms=2.0, act=2.0, kv=4.0, fp32_down=False),
    "int8": dict(linear=1.0, vision=1.0, norms=4.0, act=4.0, kv=4.0, fp32_down=False),
    "fp8": dict(linear=1.0, vision=1.0, norms=4.0, act=4.0, kv=4.0, fp32_down=False),
    "int4": dict(linear=0.5 + 2.0 / 128, vision=4.0, norms=4.0, act=4.0, kv=4.0, fp32_down=False),
}


# calibration/ort_quant.py modes and export/half.py precisions -> the memory plan's precisions
FOLDER_PRECISION = {"dynamic-int8": "int8", "int8": "int8", "fp8": "fp8", "int4": "int4", "fp16": "fp16", "bf16": "bf16",
                    "float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def folder_precision(m) -> str:
    """The weights' precision of an artifact folder: quantized, half precision, a --torch-only
    dtype, else the fp32 ONNX export."""
    record = m.data.get("quantization") or {}
    half = m.data.get("half_precision") or {}
    key = record.get("mode") or half.get("precision") or (m.data.get("torch_dtype") if m.torch_only else None)
    return FOLDER_PRECISION.get(key, "fp32")


def is_llava(m: dict) -> bool:
    return m.get("family") == "llava_onevision"


def vit_params(m: dict) -> int:
    e, i, depth = m["vision_hidden_size"], m["vision_intermediate_size"], m["vision_depth"]
    if is_llava(m):  # SigLIP up to the feature layer (no post-norm, no head) and the projector
        patches = (m["image_size"] // m["patch_size"]) ** 2
        embed = 3 * m["patch_size"] ** 2 * e + e + patches * e  # patch conv with bias, position embedding
        block = 4 * (e * e + e) + (e * i + i) + (i * e + e) + 4 * e  # q, k, v, out; fc1, fc2; 2 LayerNorms
        d = m["hidden_size"]
        return embed + depth * block + (e * d + d) + (d * d + d)
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


def vit_down_params(m: dict) -> int:
    e, i = m["vision_hidden_size"], m["vision_intermediate_size"]
    return m["vision_depth"] * (i * e + e)


def llm_down_params(m: dict, layers: int | None = None) -> int:
    return (m["num_layers"] if layers is None else layers) * m["intermediate_size"] * m["hidden_size"]


def _dtypes(precision: str) -> dict:
    if precision not in DTYPES:
        raise ValueError(f"precision {precision!r}: expected one of {sorted(DTYPES)}")
    return DTYPES[precision]


def weight_bytes(m: dict, precision: str, layers: int | None = None, head: bool = True) -> dict[str, float]:
    """Weights in the engines: ``layers`` LLM layers (all by default), with or without the LM head
    (the assistant's prior graph has none, nor a final norm)."""
    d = _dtypes(precision)
    n = m["num_layers"] if layers is None else layers
    h = m["hidden_size"]
    linear = llm_linear_params(m) // m["num_layers"] * n
    head_params = m["vocab_size"] * h if head else 0  # the untied head, or the tied table used as the head
    vit = vit_params(m) * d["vision"]
    llm = (linear + head_params) * d["linear"]
    if d["fp32_down"]:
        vit += vit_down_params(m) * (4.0 - d["vision"])
        llm += llm_down_params(m, n) * (4.0 - d["linear"])
    norms = (n * 2 * h + (h if head else 0)) * d["norms"]
    return {"vision": vit, "llm_linear": llm, "llm_norms": norms}


def embedding_bytes(m: dict) -> float:
    """The fp32 token-embedding table (``*_embeddings.npy``, memory-mapped; not counted in totals)."""
    return m["vocab_size"] * m["hidden_size"] * 4.0


def kv_bytes_per_token(m: dict, precision: str) -> float:
    return 2 * m["num_layers"] * m["num_kv_heads"] * m["head_dim"] * _dtypes(precision)["kv"]


@dataclass(frozen=True)
class Workload:
    frames: int = 32
    max_pixels: int | None = None  # per frame; None: the model's
    retention: float = 0.25
    text_tokens: int = 128
    new_tokens: int = 256
    vision_chunk: int | None = 2  # temporal groups per ViT call; None: the whole video at once
    prefill_chunk: int | None = 2048  # prompt tokens per LLM / prior call (the runtime's default); None: one call


def visual_tokens(m: dict, w: Workload) -> tuple[int, int, int]:
    """(temporal groups, patches per group, visual tokens) for square-ish frames at the pixel cap
    (LLaVA-OV: one group per frame of 384 x 384, whatever ``max_pixels``)."""
    if is_llava(m):
        return w.frames, (m["image_size"] // m["patch_size"]) ** 2, w.frames * m["tokens_per_frame"]
    pixels = w.max_pixels or m["max_pixels"]
    patches = pixels // m["patch_size"] ** 2
    patches -= patches % m["merge_size"] ** 2
    groups = math.ceil(w.frames / m["temporal_patch_size"])
    return groups, patches, groups * patches // m["merge_size"] ** 2


def context_length(m: dict, w: Workload) -> int:
    """The LLM profile maximum this workload needs: kept visual tokens + text + new tokens."""
    return math.ceil(visual_tokens(m, w)[2] * w.retention) + w.text_tokens + w.new_tokens


def vit_activation_bytes(m: dict, w: Workload, precision: str) -> float:
    act = _dtypes(precision)["act"]
    groups, per_group, _ = visual_tokens(m, w)
    chunk = min(w.vision_chunk or groups, groups)
    n = chunk * per_group
    e, heads = m["vision_hidden_size"], m["vision_heads"]
    return n * (2 * e + 3 * e + 2 * m["vision_intermediate_size"]) * act + chunk * heads * per_group ** 2 * 4.0


def prefill_activation_bytes(m: dict, s: int, precision: str, chunk: int | None = None) -> float:
    """One LLM layer over a prompt of ``s`` tokens fed ``chunk`` at a time (None: one call): the
    chunk's hidden states and SwiGLU intermediate, and fp32 scores of the chunk against every
    key so far (``chunk x s``: linear in the prompt; ``s x s`` only in one call)."""
    c = min(chunk or s, s)
    h = m["hidden_size"]
    return c * (2 * h + 2 * m["intermediate_size"]) * _dtypes(precision)["act"] + m["num_heads"] * c * s * 4.0


def activation_bytes(m: dict, w: Workload, precision: str) -> dict[str, float]:
    return {"vision": vit_activation_bytes(m, w, precision),
            "llm_prefill": prefill_activation_bytes(m, context_length(m, w) - w.new_tokens, precision, w.prefill_chunk)}


def _verdict(out: dict, device: str | None, reserve_gb: float | None) -> dict:
    if device:
        if device not in DEVICES:
            raise ValueError(f"device {device!r}: expected one of {sorted(DEVICES)}")
        d = DEVICES[device]
        usable = (d["memory_gb"] - (d["reserve_gb"] if reserve_gb is None else reserve_gb)) * GB
        out.update(device=device, usable=usable, fits=out["total"] <= usable)
    return out


def plan(m: dict, precision: str, w: Workload, device: str | None = None, reserve_gb: float | None = None) -> dict:
    """The primary model alone: weights, two KV sets at the profile maximum, and both engines' peaks."""
    weights = weight_bytes(m, precision)
    ctx = context_length(m, w)
    kv = 2 * kv_bytes_per_token(m, precision) * ctx
    acts = activation_bytes(m, w, precision)
    total = sum(weights.values()) + kv + sum(acts.values())
    out = {"precision": precision, "weights": weights, "kv_cache": kv, "context": ctx,
           "visual_tokens": visual_tokens(m, w)[2], "activations": acts, "embeddings_mapped": embedding_bytes(m),
           "total": total}
    return _verdict(out, device, reserve_gb)


def assistant_plan(m: dict, precision: str, w: Workload, prior_depth: int | None = None, device: str | None = None,
                   reserve_gb: float | None = None) -> dict:
    """The assistant: its ViT and its prior graph over all its visual tokens (retention 1, no decode).
    The prior is prefilled in chunks through the KV cache of the layers it runs (two sets, as the
    primary's), so its scores are ``chunk x s``, never ``s x s`` past one chunk; its deepest layer
    scores only the last query. ``prior_depth``: LLM layers up to the deepest prior layer
    (default: all, as for the default ``last_third`` prior layers)."""
    depth = m["num_layers"] if prior_depth is None else prior_depth
    if not 1 <= depth <= m["num_layers"]:
        raise ValueError(f"prior depth {depth}: expected 1..{m['num_layers']}")
    weights = weight_bytes(m, precision, layers=depth, head=False)
    s = visual_tokens(m, w)[2] + w.text_tokens
    acts = {"vision": vit_activation_bytes(m, w, precision),
            "prior": prefill_activation_bytes(m, s, precision, w.prefill_chunk)}
    kv = 2 * kv_bytes_per_token(m, precision) * depth / m["num_layers"] * s
    out = {"precision": precision, "weights": weights, "kv_cache": kv, "context": s, "visual_tokens": visual_tokens(m, w)[2],
           "activations": acts, "embeddings_mapped": embedding_bytes(m), "prior_depth": depth,
           "total": sum(weights.values()) + kv + sum(acts.values())}
    return _verdict(out, device, reserve_gb)


def plan_deployment(primary: dict, precision: str, w: Workload, assistant: dict | None = None,
                    assistant_precision: str | None = None, assistant_workload: Workload | None = None,
                    prior_depth: int | None = None, device: str | None = None, reserve_gb: float | None = None) -> dict:
    """Everything one deployment keeps resident: the primary's engines and, unless ``assistant`` is
    None, the assistant's, each at its own precision, frames and pixels. The verdict is on the sum."""
    parts = {"primary": plan(primary, precision, w)}
    if assistant is not None:
        parts["assistant"] = assistant_plan(assistant, assistant_precision or precision, assistant_workload or w, prior_depth)
    return _verdict({"parts": parts, "total": sum(p["total"] for p in parts.values())}, device, reserve_gb)
