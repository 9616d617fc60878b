"""Analytic FLOPs of each pipeline stage, from a manifest's model constants and token counts.

A multiply-add counts 2 FLOPs; norms, rotary, softmax and activations are ignored (<1%).

Vision encoder over N patches (d = ViT width, i = its MLP width, D = LLM width, p = 3*2*14*14):
    patch embed  2*N*p*d
    per block    2*N*d*3d (qkv) + 2*N*d*d (proj) + 4*d*sum_s(L_s^2) (scores + weighted sum over
                 each attention segment s of L_s patches: windows, or whole temporal groups in
                 the full-attention blocks) + 2*N*3*d*i (gated MLP: gate, up, down)
    merger       2*(N/4)*(4d)^2 + 2*(N/4)*4d*D
LLM, L new tokens after P cached (H heads, KV heads of width h, GQA, I = MLP width, V = vocab):
    per layer    2*L*D*(2*H*h + 2*KV*h) (q, o, k, v) + 4*H*h*(L*P + L*(L+1)/2) (causal scores +
                 weighted sum) + 2*L*3*D*I (SwiGLU: gate, up, down)
    head         2*D*V (last position only)
Keyframe prior: the assistant's LLM layers below the deepest selected one in full, plus, in that
layer, q of the last token and k over the prompt: 2*L*D*(2*KV*h) + 2*D*H*h.
"""
from __future__ import annotations

import numpy as np

from .vision_inputs import VisionGeometry, window_unit_order


def vision_flops(m: dict, grid_thw: tuple[int, int, int]) -> float:
    t, h, w = grid_thw
    n = t * h * w
    d, i, out = m["vision_hidden_size"], m["vision_intermediate_size"], m["hidden_size"]
    patch = 3 * m["temporal_patch_size"] * m["patch_size"] ** 2
    _, window_units = window_unit_order(grid_thw, VisionGeometry(m["patch_size"], m["merge_size"], m["window_size"]))
    unit = m["merge_size"] ** 2
    window_sq = float(np.sum((window_units * unit) ** 2))
    full_sq = float(t * (h * w) ** 2)
    full = set(m["fullatt_block_indexes"])
    total = 2.0 * n * patch * d
    for b in range(m["vision_depth"]):
        total += 2.0 * n * d * 4 * d + 4.0 * d * (full_sq if b in full else window_sq) + 2.0 * n * 3 * d * i
    total += 2.0 * (n / unit) * (unit * d) ** 2 + 2.0 * (n / unit) * unit * d * out
    return total


def _layer_flops(m: dict, new: int, past: int) -> float:
    dm, hd, heads, kv, inter = m["hidden_size"], m["head_dim"], m["num_heads"], m["num_kv_heads"], m["intermediate_size"]
    proj = 2.0 * new * dm * (2 * heads * hd + 2 * kv * hd)
    attn = 4.0 * heads * hd * (new * past + new * (new + 1) / 2)
    return proj + attn + 2.0 * new * 3 * dm * inter


def llm_flops(m: dict, new: int, past: int = 0) -> float:
    """One LLM call: ``new`` tokens after ``past`` cached ones, last-position logits."""
    return m["num_layers"] * _layer_flops(m, new, past) + 2.0 * m["hidden_size"] * m["vocab_size"]


def decode_flops(m: dict, prompt: int, tokens: int) -> float:
    """``tokens`` decode steps after a prompt of ``prompt`` tokens."""
    return sum(llm_flops(m, 1, prompt + k) for k in range(tokens))


def prior_flops(m: dict, length: int) -> float:
    deepest = max(m["prior_layers"])
    dm, hd, heads, kv = m["hidden_size"], m["head_dim"], m["num_heads"], m["num_kv_heads"]
    return deepest * _layer_flops(m, length, 0) + 2.0 * length * dm * 2 * kv * hd + 2.0 * dm * heads * hd
