"""LLaVA-OneVision vision graph: the SigLIP tower up to the feature layer, the multi-modal projector
and the video pooling, with VisionZip's signals. One frame is one temporal group.

Input ``pixel_values`` [F, 3, S, S] float32 (S = ``image_size``, 384 for the released tower).
Each frame's G x G patch grid (G = S / patch_size = 27) is pooled to P x P (P = ceil(G / 2) = 14),
so ``n_tokens`` = F * P * P (196 per frame). Outputs, frames in time order and each frame's pooled
grid in raster order:

- ``tokens`` [n_tokens, D]: transformers' ``get_video_features`` without its trailing
  ``image_newline`` row (the manifest carries that embedding as a file): the hidden state of
  ``vision_feature_layer`` (the layer's output, before any post-layernorm; -1 = the last layer),
  the projector (linear, GELU, linear), then each frame's G x G grid resized to P x P by bilinear
  interpolation (``interpolate(mode="bilinear")``: align_corners False, no antialias).
- ``importance`` [n_tokens]: VisionZip's ``s`` for SigLIP (spec §2.2(b)) from the layer that
  produces that hidden state: the attention each patch receives, mean over heads and over all
  G * G query rows of the layer's softmax; then, as a 1-channel G x G map, the same bilinear
  resize as the tokens (spec §1.5, ``pooling=True``).
- ``metric`` [n_tokens, key_dim]: that layer's keys (``k_proj`` output with its bias; SigLIP has no
  RoPE), mean over heads; then its key_dim channels resized the same way.

The bilinear resize is linear in its input, so it is one MatMul by a constant [P*P, G*G] matrix
built from torch's own ``interpolate`` applied to the unit basis: the same weights as transformers,
and no ONNX Resize op (whose coordinate modes differ between runtimes).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from runtime.errors import DyTokError


def pooling_matrix(grid: int, pooled: int) -> torch.Tensor:
    """[pooled^2, grid^2] weights of the bilinear resize grid x grid -> pooled x pooled (raster order)."""
    basis = torch.eye(grid * grid, dtype=torch.float32).view(grid * grid, 1, grid, grid)
    out = nn.functional.interpolate(basis, size=(pooled, pooled), mode="bilinear")  # (G*G, 1, P, P)
    return out.reshape(grid * grid, pooled * pooled).T.contiguous()


def feature_depth(num_layers: int, feature_layer) -> int:
    """Encoder layers to run so that their output is ``hidden_states[feature_layer]`` (index 0 is
    the embeddings, index k the output of layer k - 1)."""
    if isinstance(feature_layer, bool) or not isinstance(feature_layer, int):
        raise DyTokError(f"vision_feature_layer {feature_layer!r}: only a single layer index is supported "
                         f"(a list concatenates layers, which VisionZip's one-layer signals do not define)")
    depth = num_layers + 1 + feature_layer if feature_layer < 0 else feature_layer
    if not 1 <= depth <= num_layers:
        raise DyTokError(f"vision_feature_layer {feature_layer}: must select the output of one of the "
                         f"{num_layers} SigLIP layers (1..{num_layers} or -{num_layers}..-1)")
    return depth


class LlavaVisionEncoder(nn.Module):
    """``model``: a ``LlavaOnevisionForConditionalGeneration``. See the module docstring."""

    def __init__(self, model: nn.Module):
        super().__init__()
        cfg = model.config
        if cfg.vision_feature_select_strategy != "full":
            raise DyTokError(f"vision_feature_select_strategy {cfg.vision_feature_select_strategy!r}: LLaVA-OV video "
                             f"features need 'full' (SigLIP has no CLS token; 'default' drops a patch)")
        tower = model.model.vision_tower
        vcfg = tower.config
        self.embeddings = tower.embeddings
        self.layers = tower.encoder.layers[: feature_depth(vcfg.num_hidden_layers, cfg.vision_feature_layer)]
        self.projector = model.model.multi_modal_projector
        self.heads = vcfg.num_attention_heads
        self.head_dim = vcfg.hidden_size // vcfg.num_attention_heads
        grid = vcfg.image_size // vcfg.patch_size
        self.register_buffer("pool", pooling_matrix(grid, math.ceil(grid / 2)), persistent=False)

    def forward(self, pixel_values):
        x = self.embeddings(pixel_values)  # (F, G*G, E): patch conv + position embedding
        f, n, _ = x.shape
        importance = metric = None
        for i, layer in enumerate(self.layers):
            attn = layer.self_attn
            h = layer.layer_norm1(x)
            q, k, v = (proj(h).view(f, n, self.heads, self.head_dim).transpose(1, 2)
                       for proj in (attn.q_proj, attn.k_proj, attn.v_proj))  # (F, H, N, d)
            probs = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * attn.scale, dim=-1, dtype=torch.float32).to(q.dtype)
            if i == len(self.layers) - 1:
                importance = probs.mean(dim=(1, 2))  # (F, N): received, mean over heads and query rows
                metric = k.mean(dim=1)  # (F, N, d)
            out = torch.matmul(probs, v).transpose(1, 2).reshape(f, n, -1)
            x = x + attn.out_proj(out)
            x = x + layer.mlp(layer.layer_norm2(x))
        pool = self.pool.to(x.dtype)
        tokens = torch.matmul(pool, self.projector(x))  # (F, P*P, D)
        importance = torch.matmul(pool, importance[..., None])[..., 0]
        metric = torch.matmul(pool, metric)
        return tokens.reshape(-1, tokens.shape[-1]), importance.reshape(-1), metric.reshape(-1, metric.shape[-1])
