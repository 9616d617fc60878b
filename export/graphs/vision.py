"""Qwen2.5-VL vision encoder as an export-friendly module (one graph for every video size).

The host supplies every grid-dependent index (``runtime.vision_inputs.vision_feeds``); the graph
holds only gathers, matmuls and softmax. Attention runs per segment (window or temporal group)
on a padded ``[segments, max_len]`` layout, so memory never grows with the whole video squared.

Outputs, per merged (LLM) token in raster order: the merger output, and VisionZip's signals from
the last full-attention block: ``importance`` (attention received within its temporal group,
mean over heads and query rows, averaged over the 2x2 merge unit) and ``metric`` (head-mean
keys before RoPE, averaged over the unit; pre-RoPE so similarity is about content, as with
SigLIP's position-free keys).

``attention="sdpa"`` (PyTorch backend only): every block but the last full-attention one (whose
probabilities ``importance`` needs) through torch's scaled_dot_product_attention, per segment.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

VISION_INPUTS = ("pixel_values", "patch_order", "rotary_hw", "window_index", "window_valid", "window_inverse",
                 "full_index", "full_valid", "full_inverse", "unit_inverse")


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding, rotate-half form; cos/sin broadcast over x (..., L, d)."""
    return x * cos + rotate_half(x) * sin


def rms_norm(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    variance = x.float().pow(2).mean(-1, keepdim=True)
    return norm.weight * (x.float() * torch.rsqrt(variance + norm.variance_epsilon)).to(x.dtype)


def key_bias(valid: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[S, L] validity -> additive score bias [S, 1, 1, L] (0 or the dtype's minimum).

    Built once per graph call and shared by every block: a broadcast Add is far cheaper in ONNX
    Runtime than a Where per block (the profile showed Where at 20-27% of the ViT's time)."""
    return torch.zeros(valid.shape, dtype=dtype, device=valid.device).masked_fill(~valid, torch.finfo(dtype).min)[:, None, None, :]


def segment_attention(q, k, v, index, valid, bias, inverse, want_received: bool = False):
    """Attention inside segments. q, k, v [N, H, d]; index/valid [S, L]; bias from ``key_bias``;
    inverse [N] into S*L. Returns out [N, H, d] and, if asked, attention received per patch [N]
    (mean over heads and valid rows)."""
    n, heads, dim = q.shape
    s, length = index.shape
    qs, ks, vs = (x[index.reshape(-1)].reshape(s, length, heads, dim).transpose(1, 2) for x in (q, k, v))  # (S, H, L, d)
    scores = torch.matmul(qs, ks.transpose(-1, -2)) * dim ** -0.5  # (S, H, L, L)
    scores = scores + bias
    probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)
    out = torch.matmul(probs, vs).transpose(1, 2).reshape(s * length, heads, dim)[inverse]
    if not want_received:
        return out, None
    rows = valid[:, None, :, None].to(probs.dtype)  # only real query rows count
    received = (probs * rows).sum(dim=2).mean(dim=1) / valid.sum(dim=1, keepdim=True).to(probs.dtype)  # (S, L)
    return out, received.reshape(-1)[inverse]


def segment_sdpa(q, k, v, index, keys, inverse):
    """``segment_attention`` through SDPA (no received attention). ``keys``: bool [S, 1, 1, L] of
    the valid keys, or None when every segment is full (SDPA's unmasked kernels)."""
    n, heads, dim = q.shape
    s, length = index.shape
    qs, ks, vs = (x[index.reshape(-1)].reshape(s, length, heads, dim).transpose(1, 2) for x in (q, k, v))  # (S, H, L, d)
    out = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=keys)
    return out.transpose(1, 2).reshape(s * length, heads, dim)[inverse]


class VisionEncoder(nn.Module):
    """``attention``: "plain" (explicit softmax: the exported form) or "sdpa" (see the module doc)."""

    def __init__(self, visual: nn.Module, attention: str = "plain"):
        super().__init__()
        if attention not in ("plain", "sdpa"):
            raise ValueError(f"vision attention {attention!r}: expected plain or sdpa")
        self.sdpa = attention == "sdpa"
        cfg = visual.config
        self.visual = visual
        self.heads = cfg.num_heads
        self.unit = cfg.spatial_merge_size ** 2
        self.full_blocks = set(cfg.fullatt_block_indexes)
        self.last_full = max(cfg.fullatt_block_indexes)
        self.register_buffer("inv_freq", visual.rotary_pos_emb.inv_freq.detach().clone(), persistent=False)

    def forward(self, pixel_values, patch_order, rotary_hw, window_index, window_valid, window_inverse,
                full_index, full_valid, full_inverse, unit_inverse):
        vis = self.visual
        weight = vis.patch_embed.proj.weight  # (E, C, tp, p, p): the Conv3d is a matmul on flat patches
        x = pixel_values.to(weight.dtype) @ weight.reshape(weight.shape[0], -1).T  # (N, 1176) -> (N, E)
        x = x[patch_order]  # window order
        freqs = rotary_hw[..., None].float() * self.inv_freq  # (N, 2, d/4)
        freqs = torch.cat([freqs[:, 0], freqs[:, 1]], dim=-1)
        cos, sin = torch.cat([freqs, freqs], -1).cos()[:, None], torch.cat([freqs, freqs], -1).sin()[:, None]
        n = x.shape[0]
        window_bias, full_bias = key_bias(window_valid, x.dtype), key_bias(full_valid, x.dtype)
        if self.sdpa:  # bool key masks, None where no segment is padded (one host sync per call)
            window_keys, full_keys = (None if bool(valid.all()) else valid[:, None, None, :]
                                      for valid in (window_valid, full_valid))
        importance = metric = None
        for i, block in enumerate(vis.blocks):
            h = rms_norm(block.norm1, x)
            qkv = block.attn.qkv(h).reshape(n, 3, self.heads, -1)  # (N, 3, H, d)
            q, k, v = qkv.unbind(1)
            q_rot = apply_rope(q.float(), cos, sin).to(q.dtype)
            k_rot = apply_rope(k.float(), cos, sin).to(k.dtype)
            full = i in self.full_blocks
            layout = ((full_index, full_valid, full_bias, full_inverse) if full
                      else (window_index, window_valid, window_bias, window_inverse))
            if self.sdpa and i != self.last_full:
                attn, received = segment_sdpa(q_rot, k_rot, v, layout[0], full_keys if full else window_keys,
                                              layout[3]), None
            else:
                attn, received = segment_attention(q_rot, k_rot, v, *layout, want_received=i == self.last_full)
            if received is not None:
                importance = received.reshape(-1, self.unit).mean(1)[unit_inverse]  # (N,) -> (units,)
                metric = k.mean(1).reshape(-1, self.unit, k.shape[-1]).mean(1)[unit_inverse]  # (units, d)
            x = x + block.attn.proj(attn.reshape(n, -1))
            x = x + block.mlp(rms_norm(block.norm2, x))
        merger = vis.merger
        tokens = merger.mlp(rms_norm(merger.ln_q, x).reshape(-1, merger.hidden_size))[unit_inverse]  # (units, D)
        return tokens, importance, metric
