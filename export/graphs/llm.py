"""Qwen2.5-VL language model graphs: the primary decoder with an explicit KV cache, and the
assistant's keyframe-prior graph (last-token attention over the visual keys, selected layers).

Both take ``inputs_embeds`` (token embeddings are looked up on the host from an exported table)
and 3-D M-RoPE ``position_ids``, so pruned visual tokens keep their original positions.
"""
from __future__ import annotations

import torch
from torch import nn

from .gqa import (causal_bias, causal_mask, expand_kv, group_query_attention, grouped_attention, key_mask,
                  sdpa_attention)
from .vision import apply_rope, rms_norm


def mrope_cos_sin(position_ids: torch.Tensor, inv_freq: torch.Tensor, sections: list[int], dtype: torch.dtype):
    """position_ids (3, B, L) -> cos, sin (B, 1, L, d) in ``dtype``: temporal/height/width bands
    interleaved by section. Angles in fp32 (as transformers), rounded only at the end."""
    freqs = position_ids[..., None].float() * inv_freq  # (3, B, L, d/2)
    bands = torch.split(freqs, sections, dim=-1)
    freqs = torch.cat([band[i % 3] for i, band in enumerate(bands)], dim=-1)  # (B, L, d/2)
    emb = torch.cat([freqs, freqs], dim=-1)[:, None]
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rope_sections(text_config, head_dim: int) -> list[int]:
    """The text config's M-RoPE sections; a config without them (Qwen2, LLaVA-OV's LLM: 1-D RoPE)
    gets one band over the whole head, which reads the first row of ``position_ids`` only."""
    sections = (getattr(text_config, "rope_parameters", None) or {}).get("mrope_section")
    return list(sections) if sections else [head_dim // 2]


ATTENTION = ("plain", "gqa", "sdpa")


def _check_attention(attention: str) -> str:
    if attention not in ATTENTION:
        raise ValueError(f"attention {attention!r}: expected one of {ATTENTION}")
    return attention


def sdpa_mask(n_new: int, n_past: int, attention_mask, device):
    """The SDPA form of ``causal_bias``: None (``is_causal``) for a prompt without past whose mask
    keeps every key, else a bool (.., S, P+S) mask (chunked prefill, decode with masked keys)."""
    keys = key_mask(attention_mask)
    if keys is None and n_past == 0:
        return None
    if n_new == 1:
        return keys  # one query sees the whole past: only masked keys matter
    return causal_mask(n_new, n_past + n_new, device, keys)


class _Decoder(nn.Module):
    def __init__(self, text_model: nn.Module):
        super().__init__()
        cfg = text_model.config
        self.text = text_model
        self.heads = cfg.num_attention_heads
        self.kv_heads = cfg.num_key_value_heads
        self.head_dim = cfg.hidden_size // cfg.num_attention_heads
        self.sections = rope_sections(cfg, self.head_dim)
        self.register_buffer("inv_freq", text_model.rotary_emb.inv_freq.detach().clone(), persistent=False)

    def qkv(self, layer, x, cos, sin):
        """x (B, L, D) -> rotated q (B, H, L, d), rotated k and v (B, KV, L, d)."""
        b, n, _ = x.shape
        attn = layer.self_attn
        q = attn.q_proj(x).view(b, n, self.heads, self.head_dim).transpose(1, 2)
        k = attn.k_proj(x).view(b, n, self.kv_heads, self.head_dim).transpose(1, 2)
        v = attn.v_proj(x).view(b, n, self.kv_heads, self.head_dim).transpose(1, 2)
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

    def qkv_for_prior(self, layer, x, cos, sin):
        """The deepest prior layer: rotated q of the LAST token only (B, H, 1, d); rotated k and v of
        every token (the visual keys, and the cache of a chunked call)."""
        b, n, _ = x.shape
        attn = layer.self_attn
        q = attn.q_proj(x[:, -1:]).view(b, 1, self.heads, self.head_dim).transpose(1, 2)
        k = attn.k_proj(x).view(b, n, self.kv_heads, self.head_dim).transpose(1, 2)
        v = attn.v_proj(x).view(b, n, self.kv_heads, self.head_dim).transpose(1, 2)
        return apply_rope(q, cos[:, :, -1:], sin[:, :, -1:]), apply_rope(k, cos, sin), v

    def last_row_attention(self, q_last, k, bias_last=None):
        """q_last (B, H, 1, d) rotated, k (B, KV, T, d) rotated, bias (B, 1, 1, T) or None (every key)
        -> (T,) the head-mean softmax, fp32."""
        scores = torch.matmul(q_last, expand_kv(k, self.heads).transpose(-1, -2)) * self.head_dim ** -0.5
        if bias_last is not None:
            scores = scores + bias_last
        return torch.softmax(scores.float(), dim=-1).mean(dim=1)[0, 0]

    def half_cos_sin(self, cos, sin):
        """(B, 1, S, d) -> (S, d/2), the fused op's form (batch 1, as the pipeline runs)."""
        half = self.head_dim // 2
        return cos[0, 0, :, :half], sin[0, 0, :, :half]


class LanguageModel(_Decoder):
    """Prefill and decode in one graph. past (B, KV, P, d) per layer, P may be 0.

    attention "plain": ONNX standard ops (any runtime, TensorRT included); "gqa": one fused
    GroupQueryAttention per layer for ONNX Runtime (``graphs/gqa.py``); "sdpa": torch's
    scaled_dot_product_attention, for the PyTorch engine backend only (not exported). Same inputs
    and outputs. ``forward_static`` is the preallocated-cache form (``export/torch_step.py``)."""

    def __init__(self, lm: nn.Module, attention: str = "plain"):
        super().__init__(lm.model.language_model)
        self.lm_head = lm.lm_head
        self.attention = _check_attention(attention)
        self.gqa = attention == "gqa"

    def forward(self, inputs_embeds, position_ids, attention_mask, *past):
        n_new = inputs_embeds.shape[1]
        n_past = past[0].shape[2]
        cos, sin = mrope_cos_sin(position_ids, self.inv_freq, self.sections, inputs_embeds.dtype)
        if self.gqa:
            return self._forward_gqa(inputs_embeds, cos, sin, attention_mask, past)
        if self.attention == "sdpa":
            mask = sdpa_mask(n_new, n_past, attention_mask, inputs_embeds.device)
            attend = lambda q, k, v: sdpa_attention(q, k, v, mask)  # noqa: E731
        else:
            bias = causal_bias(n_new, n_past, attention_mask, inputs_embeds.dtype)
            attend = lambda q, k, v: grouped_attention(q, k, v, bias)  # noqa: E731
        x = inputs_embeds
        presents = []
        for i, layer in enumerate(self.text.layers):
            h = rms_norm(layer.input_layernorm, x)
            q, k, v = self.qkv(layer, h, cos, sin)
            k = torch.cat([past[2 * i], k], dim=2)
            v = torch.cat([past[2 * i + 1], v], dim=2)
            presents += [k, v]
            x = x + layer.self_attn.o_proj(attend(q, k, v))
            x = x + layer.mlp(rms_norm(layer.post_attention_layernorm, x))
        return self._head(x, presents)

    def forward_static(self, x, cos, sin, k_cache, v_cache, write, visible: int, mask):
        """One call on a preallocated KV cache, written in place. x (1, S, D); cos/sin from
        ``mrope_cos_sin``; k_cache/v_cache (layers, 1, KV, L, d); ``write(cache_layer, new)`` stores
        the new rotated rows (a slice copy at prefill, an ``index_copy_`` in a captured decode step);
        attention reads rows ``[0, visible)`` under ``mask`` (``sdpa_attention``); mask None with
        ``visible`` = S is the first prompt chunk (causal over itself). -> last-position logits (1, V)."""
        x, _ = self.layers_static(x, cos, sin, k_cache, v_cache, 0, len(self.text.layers), write, visible, mask)
        return self.head_static(x)

    def layers_static(self, x, cos, sin, k_cache, v_cache, start: int, stop: int, write, visible: int, mask,
                      row: bool = False):
        """Layers ``[start, stop)`` of ``forward_static`` -> (x (1, S, D), the head-mean attention row
        (visible,) of the last query at layer stop-1 when ``row`` (FastV's and the self prior's
        ranking: every row visible, as at prefill), else None)."""
        last = None
        for i in range(start, stop):
            layer = self.text.layers[i]
            h = rms_norm(layer.input_layernorm, x)
            q, k, v = self.qkv(layer, h, cos, sin)
            write(k_cache[i], k)
            write(v_cache[i], v)
            keys = k_cache[i, :, :, :visible]
            out = sdpa_attention(q, keys, v_cache[i, :, :, :visible], mask)
            if row and i == stop - 1:
                last = self.last_row_attention(q[:, :, -1:], keys)
            x = x + layer.self_attn.o_proj(out)
            x = x + layer.mlp(rms_norm(layer.post_attention_layernorm, x))
        return x, last

    def head_static(self, x):
        """x (1, S, D) -> last-position logits (1, V)."""
        return self._head(x, [])[0]

    def _head(self, x, presents):
        logits = self.lm_head(rms_norm(self.text.norm, x[:, -1:]))[:, 0]  # last position only: (B, vocab)
        return (logits, *presents)

    def _forward_gqa(self, x, cos, sin, attention_mask, past):
        cos, sin = self.half_cos_sin(cos, sin)
        presents = []
        for i, layer in enumerate(self.text.layers):
            h = rms_norm(layer.input_layernorm, x)
            a = layer.self_attn
            out, k, v = group_query_attention(a.q_proj(h), a.k_proj(h), a.v_proj(h), past[2 * i], past[2 * i + 1],
                                              cos, sin, attention_mask, self.heads, self.kv_heads)
            presents += [k, v]
            x = x + a.o_proj(out)
            x = x + layer.mlp(rms_norm(layer.post_attention_layernorm, x))
        return self._head(x, presents)


class KeyframePrior(_Decoder):
    """DyToK detection pass: for each selected layer, softmax over the visual keys only of the last
    prompt token's scaled logits, mean over heads. Runs layers up to the deepest selected one and,
    in that one, only the last token's query and the visual keys (no full attention, no norm/head).
    ``attention`` as for ``LanguageModel`` (the layers before run fused with "gqa").

    With a KV cache (``attention_mask`` (B, P+S) and ``past_key/value_i`` (B, KV, P, d) for layers
    0..deepest), the prompt can be fed in chunks: each call appends its chunk's rotated keys and
    values (``present_*``) and returns the prior of its own last token over ``visual_index``, indices
    into past + new keys. Only the last chunk's prior is the answer; earlier chunks pass any valid
    index (e.g. ``[0]``). One call with an empty past is the one-shot prior.

    "sdpa" (PyTorch backend): the layers below the deepest through SDPA, and the deepest projects
    only the last token's query, so no step holds an S x S matrix."""

    def __init__(self, lm: nn.Module, layers: list[int], attention: str = "plain"):
        super().__init__(lm.model.language_model)
        self.layers = sorted(layers)
        self.attention = _check_attention(attention)
        self.gqa = attention == "gqa"

    def prior_row(self, q_last, k_vis):
        """Rotated q_last (B, H, 1, d) and visual keys (B, KV, V, d) -> (V,) mean-head softmax."""
        k_vis = expand_kv(k_vis, self.heads)
        logits = torch.matmul(q_last.float(), k_vis.float().transpose(-1, -2))[:, :, 0] * self.head_dim ** -0.5
        return torch.softmax(logits, dim=-1).mean(dim=1)[0]

    def forward(self, inputs_embeds, position_ids, visual_index, attention_mask=None, *past):
        cos, sin = mrope_cos_sin(position_ids, self.inv_freq, self.sections, inputs_embeds.dtype)
        if self.attention == "sdpa":
            return self._forward_sdpa(inputs_embeds, cos, sin, visual_index, attention_mask, past)
        if past:
            return self._forward_cached(inputs_embeds, cos, sin, visual_index, attention_mask, past)
        if self.gqa:
            return self._forward_gqa(inputs_embeds, cos, sin, visual_index)
        b, n, _ = inputs_embeds.shape
        bias = causal_bias(n, 0, torch.ones(b, n, dtype=torch.int64, device=inputs_embeds.device), inputs_embeds.dtype)
        x = inputs_embeds
        rows = []
        for i, layer in enumerate(self.text.layers[: self.layers[-1] + 1]):
            h = rms_norm(layer.input_layernorm, x)
            q, k, v = self.qkv(layer, h, cos, sin)
            if i in self.layers:
                rows.append(self.prior_row(q[:, :, -1:], k[:, :, visual_index]))
            if i == self.layers[-1]:
                break
            x = x + layer.self_attn.o_proj(grouped_attention(q, k, v, bias))
            x = x + layer.mlp(rms_norm(layer.post_attention_layernorm, x))
        return torch.stack(rows)  # (n_selected, V)

    def _forward_gqa(self, x, cos, sin, visual_index):
        b, n, _ = x.shape
        d = self.head_dim
        cos_half, sin_half = self.half_cos_sin(cos, sin)
        empty = x.new_zeros(b, self.kv_heads, 0, d)
        mask = torch.ones(b, n, dtype=torch.int64, device=x.device)
        rows = []
        for i, layer in enumerate(self.text.layers[: self.layers[-1] + 1]):
            h = rms_norm(layer.input_layernorm, x)
            a = layer.self_attn
            q, k, v = a.q_proj(h), a.k_proj(h), a.v_proj(h)  # flat, not rotated: the fused op rotates
            if i in self.layers:  # rotate only what the prior reads: the last query, the visual keys
                q_last = q[:, -1:].view(b, 1, self.heads, d).transpose(1, 2)
                k_vis = k[:, visual_index].view(b, -1, self.kv_heads, d).transpose(1, 2)
                rows.append(self.prior_row(apply_rope(q_last, cos[:, :, -1:], sin[:, :, -1:]),
                                           apply_rope(k_vis, cos[:, :, visual_index], sin[:, :, visual_index])))
            if i == self.layers[-1]:
                break
            out, _, _ = group_query_attention(q, k, v, empty, empty, cos_half, sin_half, mask, self.heads, self.kv_heads)
            x = x + a.o_proj(out)
            x = x + layer.mlp(rms_norm(layer.post_attention_layernorm, x))
        return torch.stack(rows)

    def _forward_cached(self, x, cos, sin, visual_index, attention_mask, past):
        """Chunked form: past (2 per layer, layers 0..deepest) -> (prior rows, *presents)."""
        b, n, _ = x.shape
        d = self.head_dim
        n_past = past[0].shape[2]
        deepest = self.layers[-1]
        if self.gqa:
            cos_half, sin_half = self.half_cos_sin(cos, sin)
        else:
            bias = causal_bias(n, n_past, attention_mask, x.dtype)
        rows, presents = [], []
        for i, layer in enumerate(self.text.layers[: deepest + 1]):
            h = rms_norm(layer.input_layernorm, x)
            a = layer.self_attn
            if self.gqa and i < deepest:
                qf = a.q_proj(h)
                out, k, v = group_query_attention(qf, a.k_proj(h), a.v_proj(h), past[2 * i], past[2 * i + 1],
                                                  cos_half, sin_half, attention_mask, self.heads, self.kv_heads)
                q_last = apply_rope(qf[:, -1:].view(b, 1, self.heads, d).transpose(1, 2), cos[:, :, -1:], sin[:, :, -1:])
            else:
                q, k, v = self.qkv(layer, h, cos, sin)
                k = torch.cat([past[2 * i], k], dim=2)
                v = torch.cat([past[2 * i + 1], v], dim=2)
                q_last = q[:, :, -1:]
                if i < deepest:
                    out = grouped_attention(q, k, v, bias)
            presents += [k, v]
            if i in self.layers:
                rows.append(self.prior_row(q_last, k[:, :, visual_index]))
            if i == deepest:
                break
            x = x + a.o_proj(out)
            x = x + layer.mlp(rms_norm(layer.post_attention_layernorm, x))
        return (torch.stack(rows), *presents)

    def _forward_sdpa(self, x, cos, sin, visual_index, attention_mask, past):
        """Both forms (one-shot without ``past``, chunked with it) with SDPA below the deepest layer."""
        n_new = x.shape[1]
        n_past = past[0].shape[2] if past else 0
        mask = sdpa_mask(n_new, n_past, attention_mask, x.device)
        deepest = self.layers[-1]
        rows, presents = [], []
        for i, layer in enumerate(self.text.layers[: deepest + 1]):
            h = rms_norm(layer.input_layernorm, x)
            q, k, v = (self.qkv_for_prior if i == deepest else self.qkv)(layer, h, cos, sin)
            if past:
                k = torch.cat([past[2 * i], k], dim=2)
                v = torch.cat([past[2 * i + 1], v], dim=2)
                presents += [k, v]
            if i in self.layers:
                rows.append(self.prior_row(q[:, :, -1:], k[:, :, visual_index]))
            if i == deepest:
                break
            x = x + layer.self_attn.o_proj(sdpa_attention(q, k, v, mask))
            x = x + layer.mlp(rms_norm(layer.post_attention_layernorm, x))
        return (torch.stack(rows), *presents) if past else torch.stack(rows)


class LanguageModelSegment(_Decoder):
    """Decoder layers ``[start, stop)`` with their own KV cache: the primary LLM split at layer K for
    FastV (layers >= K run on the kept tokens) and DyCoke's decode-time KV step (layers >= L attend
    only to the kept rows, through ``attention_mask``: 0 drops a key, as in the one-graph LLM).

    The first segment (start 0) takes ``inputs_embeds``; a later one takes ``hidden_states``. The
    last segment (stop = depth) returns last-position logits; an earlier one returns the hidden
    states and ``attention`` (total_len,): the head-mean softmax of the LAST query row of layer
    stop-1 over every key (past + new, masked keys excluded), i.e. the model's real attention row
    that FastV ranks at prefill and DyCoke reads at each decode step. Then the present KV of its
    layers. ``attention`` as for ``LanguageModel`` ("sdpa": the attention row by an explicit
    last-query softmax, O(total_len))."""

    def __init__(self, lm: nn.Module, start: int, stop: int, attention: str = "plain"):
        super().__init__(lm.model.language_model)
        depth = len(self.text.layers)
        if not 0 <= start < stop <= depth:
            raise ValueError(f"segment [{start}, {stop}) outside the {depth} decoder layers")
        self.start, self.stop, self.last = start, stop, stop == depth
        self.lm_head = lm.lm_head if self.last else None
        self.attention = _check_attention(attention)
        self.gqa = attention == "gqa"

    def forward(self, x, position_ids, attention_mask, *past):
        n_new = x.shape[1]
        n_past = past[0].shape[2]
        cos, sin = mrope_cos_sin(position_ids, self.inv_freq, self.sections, x.dtype)
        sdpa = self.attention == "sdpa"
        bias = None if self.gqa or sdpa else causal_bias(n_new, n_past, attention_mask, x.dtype)
        mask = sdpa_mask(n_new, n_past, attention_mask, x.device) if sdpa else None
        half = self.half_cos_sin(cos, sin) if self.gqa else None
        presents, row = [], None
        for j, layer in enumerate(self.text.layers[self.start:self.stop]):
            h = rms_norm(layer.input_layernorm, x)
            a = layer.self_attn
            want_row = not self.last and self.start + j == self.stop - 1
            if self.gqa:
                out, k, v = group_query_attention(a.q_proj(h), a.k_proj(h), a.v_proj(h), past[2 * j], past[2 * j + 1],
                                                  *half, attention_mask, self.heads, self.kv_heads)
                if want_row:  # the fused op returns rotated keys; rotate the last query the same way
                    b = h.shape[0]
                    q_last = a.q_proj(h[:, -1:]).view(b, 1, self.heads, self.head_dim).transpose(1, 2)
                    row = self.last_row_attention(apply_rope(q_last, cos[:, :, -1:], sin[:, :, -1:]), k,
                                                  causal_bias(1, n_past + n_new - 1, attention_mask, x.dtype))
            else:
                q, k, v = self.qkv(layer, h, cos, sin)
                k = torch.cat([past[2 * j], k], dim=2)
                v = torch.cat([past[2 * j + 1], v], dim=2)
                if want_row:
                    bias_last = (causal_bias(1, n_past + n_new - 1, attention_mask, x.dtype) if sdpa
                                 else bias[:, :, -1:])
                    row = self.last_row_attention(q[:, :, -1:], k, bias_last)
                out = sdpa_attention(q, k, v, mask) if sdpa else grouped_attention(q, k, v, bias)
            presents += [k, v]
            x = x + a.o_proj(out)
            x = x + layer.mlp(rms_norm(layer.post_attention_layernorm, x))
        if self.last:
            return (self.lm_head(rms_norm(self.text.norm, x[:, -1:]))[:, 0], *presents)
        return (x, row, *presents)
