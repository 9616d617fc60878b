"""PyTorch reference implementations written from the spec, on transformers' own modules.

Independent of runtime/ and export/graphs/: they use transformers' rotary helpers, window
indices and forward passes, and torch ops for the algorithms (spec §1.3, §1.4, §2.1, §2.2(c)).
"""
from __future__ import annotations

import numpy as np
import torch
from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl as hf
from transformers.vision_utils import get_vision_window_index


@torch.no_grad()
def vision_signals_reference(model, pixels: np.ndarray, grid) -> tuple[np.ndarray, np.ndarray]:
    """VisionZip signals per merged token (raster order): attention received in the last
    full-attention block within each temporal group (mean over heads and query rows, then over
    the 2x2 unit), and that block's head-mean pre-RoPE keys averaged over the unit."""
    visual = model.model.visual
    block = visual.blocks[max(visual.config.fullatt_block_indexes)]
    seen = {}

    def grab(module, args, kwargs):
        seen.update(h=args[0] if args else kwargs["hidden_states"], cu=kwargs["cu_seqlens"], pe=kwargs["position_embeddings"])

    handle = block.attn.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        visual(torch.from_numpy(pixels), grid_thw=torch.tensor([grid]))
    finally:
        handle.remove()
    h, cu, (cos, sin) = seen["h"], seen["cu"].tolist(), seen["pe"]
    n = h.shape[0]
    q, k, _ = block.attn.qkv(h).reshape(n, 3, visual.config.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
    q_rot, k_rot = hf.apply_rotary_pos_emb_vision(q, k, cos, sin)
    received = torch.zeros(n)
    for a, b in zip(cu[:-1], cu[1:]):
        probs = torch.softmax(torch.einsum("qhd,khd->hqk", q_rot[a:b], k_rot[a:b]) * block.attn.scaling, dim=-1)
        received[a:b] = probs.mean(dim=(0, 1))
    unit = visual.spatial_merge_unit
    window_index, _ = get_vision_window_index(torch.tensor([grid]), visual.spatial_merge_size, visual.window_size,
                                              visual.patch_size)
    raster = torch.argsort(window_index)
    importance = received.reshape(-1, unit).mean(1)[raster]
    metric = k.mean(1).reshape(-1, unit, k.shape[-1]).mean(1)[raster]
    return importance.numpy(), metric.numpy()


@torch.no_grad()
def llava_signals_reference(model, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """LLaVA-OV's VisionZip signals from transformers' own modules (spec §2.2(b), §1.5 pooling=True):
    the feature layer's attention received (``output_attentions``: mean over heads, then query rows)
    and its head-mean keys, each pooled by transformers' ``apply_pooling``, as the tokens are.
    pixels [F, 3, S, S] -> (importance [F*T], metric [F*T, key_dim])"""
    tower = model.model.vision_tower
    layer = tower.config.num_hidden_layers + model.config.vision_feature_layer  # -1: the last layer
    out = tower(torch.from_numpy(pixels), output_attentions=True, output_hidden_states=True)
    f, n, _ = out.hidden_states[layer].shape
    attn = tower.encoder.layers[layer].self_attn
    h = tower.encoder.layers[layer].layer_norm1(out.hidden_states[layer])
    keys = attn.k_proj(h).view(f, n, attn.num_heads, attn.head_dim).mean(2)
    received = out.attentions[layer].mean(dim=1).mean(dim=1)  # heads, then query rows
    pool = model.model.apply_pooling
    return pool(received[..., None])[..., 0].reshape(-1).numpy(), pool(keys).reshape(-1, attn.head_dim).numpy()


@torch.no_grad()
def prior_reference(model, embeds: np.ndarray, pos: np.ndarray, start: int, n_vis: int, layers) -> np.ndarray:
    """Spec §1.3: per selected layer, the last token's post-RoPE query against the visual keys,
    softmax over the visual keys only, mean over heads. -> [len(layers), n_vis]"""
    text = model.model.language_model
    x = torch.from_numpy(embeds)
    position_ids = torch.from_numpy(pos)
    states = text(inputs_embeds=x, position_ids=position_ids, output_hidden_states=True).hidden_states
    cos, sin = text.rotary_emb(x, position_ids)
    rows = []
    for layer_idx in layers:
        layer = text.layers[layer_idx]
        attn = layer.self_attn
        h = layer.input_layernorm(states[layer_idx])
        q = attn.q_proj(h).view(1, -1, text.config.num_attention_heads, attn.head_dim).transpose(1, 2)
        k = attn.k_proj(h).view(1, -1, text.config.num_key_value_heads, attn.head_dim).transpose(1, 2)
        q, k = hf.apply_rotary_pos_emb(q, k, cos, sin)
        k = hf.repeat_kv(k, attn.num_key_value_groups)[:, :, start:start + n_vis]
        logits = torch.matmul(q[:, :, -1:], k.transpose(-1, -2))[0, :, 0] * attn.scaling  # (H, V)
        rows.append(torch.softmax(logits.float(), dim=-1).mean(0))
    return torch.stack(rows).numpy()


def allocate_reference(w: torch.Tensor, budget: int, cap: int) -> torch.Tensor:
    """Spec §1.4 in torch, line by line."""
    total = budget * len(w)
    x = w.float() * total
    a = torch.floor(x).long()
    remainder = x - torch.floor(x)
    left = int(total - a.sum())
    if left > 0:
        a[torch.argsort(-remainder, stable=True)[:left]] += 1
    a = torch.clamp(a, max=cap)
    excess = total - int(a.sum())
    while excess > 0:
        for f in torch.argsort(-w, stable=True).tolist():
            if a[f] >= cap:
                continue
            excess -= 1
            if excess < 0:
                break
            a[f] += 1
    return a


def visionzip_reference(tokens: torch.Tensor, s: torch.Tensor, m: torch.Tensor, d: int, c: int):
    """Spec §2.1 in torch. Returns (vectors, source index) in spec order."""
    dom = torch.sort(torch.argsort(-s, stable=True)[:d]).values
    if c == 0:
        return tokens[dom], dom
    keep = torch.ones(len(s), dtype=torch.bool)
    keep[dom] = False
    remaining = torch.nonzero(keep)[:, 0]
    unit = torch.nn.functional.normalize(m[remaining].float(), dim=1)
    step = max(1, len(remaining) // c)
    targets = torch.arange(c) * step
    is_target = torch.zeros(len(remaining), dtype=torch.bool)
    is_target[targets] = True
    others = torch.nonzero(~is_target)[:, 0]
    assign = torch.argmax(unit[others] @ unit[targets].T, dim=1)
    merged = []
    for j, t in enumerate(targets.tolist()):
        members = others[assign == j]
        extra = tokens[remaining[members]].mean(0) if len(members) else torch.zeros(tokens.shape[1])
        merged.append(tokens[remaining[t]] + extra)
    out = torch.cat([tokens[dom], torch.stack(merged)])
    return out, torch.cat([dom, remaining[targets]])


@torch.no_grad()
def dytok_visionzip_reference(models, prompt, clip, question, pcfg, retention, max_new_tokens, video_id):
    """The whole DyToK + VisionZip path on transformers models with torch compression.
    Shares only the preprocessing and the prompt ids with the runtime (both tested separately)."""
    from runtime.preprocess import preprocess_video

    def rope(model, ids, grid, seconds):
        types = torch.tensor((ids == video_id).astype(np.int64) * 2)[None]
        pos, _ = model.model.get_rope_index(torch.tensor(ids)[None], types, video_grid_thw=torch.tensor([grid]),
                                             second_per_grid_ts=torch.tensor([seconds]))
        return pos  # (3, 1, L)

    patches = preprocess_video(clip.frames, pcfg)
    grid = patches.grid_thw
    seconds = 2 / clip.sampled_fps
    pixels = torch.from_numpy(patches.pixel_values)
    groups, n_vis = grid[0], grid[0] * grid[1] * grid[2] // 4
    per = n_vis // groups
    ids, start = prompt.input_ids(question, n_vis)

    # Keyframe prior on the assistant (spec §1.3).
    a = models["assistant"]
    feats = a.model.visual(pixels, grid_thw=torch.tensor([grid])).pooler_output
    emb = a.get_input_embeddings()(torch.tensor(ids))[None].clone()
    emb[0, start:start + n_vis] = feats
    layers = list(range(a.config.text_config.num_hidden_layers - a.config.text_config.num_hidden_layers // 3,
                        a.config.text_config.num_hidden_layers))
    attn = torch.from_numpy(prior_reference(a, emb.numpy(), rope(a, ids, grid, seconds).numpy(), start, n_vis, layers))
    u = attn.reshape(len(layers), groups, per).mean(2).mean(0)
    weights = u / u.sum()

    # Budgets and VisionZip per group (spec §1.4, §2.1), kept in raster order.
    budget = max(1, int(round(per * retention)))
    alloc = allocate_reference(weights, budget, per)
    p = models["primary"]
    tokens = p.model.visual(pixels, grid_thw=torch.tensor([grid])).pooler_output
    importance, metric = map(torch.from_numpy, vision_signals_reference(p, patches.pixel_values, grid))
    kept, src = [], []
    for g in range(groups):
        sl = slice(g * per, (g + 1) * per)
        d = 6 * int(alloc[g]) // 7
        out, s = visionzip_reference(tokens[sl], importance[sl], metric[sl], d, int(alloc[g]) - d)
        order = torch.argsort(s)
        kept.append(out[order])
        src.append(s[order] + g * per)
    kept, src = torch.cat(kept), torch.cat(src)

    # Prefill the pruned prompt at original positions, then decode from the original max + 1.
    keep = torch.cat([torch.arange(start), start + src, torch.arange(start + n_vis, len(ids))])
    emb = p.get_input_embeddings()(torch.tensor(ids)[keep])[None].clone()
    emb[0, start:start + len(src)] = kept
    full_pos = rope(p, ids, grid, seconds)
    out = p(inputs_embeds=emb, position_ids=full_pos[:, :, keep], use_cache=True)
    nxt = int(full_pos.max()) + 1
    tokens_out = []
    eos = set(p.config.text_config.eos_token_id if isinstance(p.config.text_config.eos_token_id, list)
              else [p.config.text_config.eos_token_id])
    for step in range(max_new_tokens):
        tok = int(out.logits[0, -1].argmax())
        tokens_out.append(tok)
        if tok in eos:
            break
        e = p.get_input_embeddings()(torch.tensor([[tok]]))
        out = p(inputs_embeds=e, position_ids=torch.full((3, 1, 1), nxt + step), past_key_values=out.past_key_values,
                use_cache=True)
    return tokens_out, alloc.numpy()


def _causal(n: int) -> torch.Tensor:
    return torch.full((n, n), torch.finfo(torch.float32).min).triu(1)[None, None]


@torch.no_grad()
def split_llm_reference(model, embeds: np.ndarray, pos: np.ndarray, split: int, max_new_tokens: int, start_pos: int,
                        vision_start: int, num_visual: int, fastv_budgets=None, fastv_per_group: bool = True,
                        dycoke_p: float | None = None, eos=(), select=None):
    """FastV (spec §3.2, with DyToK per-group budgets, §1.9) and DyCoke's KV step (§4.3) on transformers'
    own decoder layers, rotary and cache, greedy. The attention row is the model's real one: the
    eager attention weights of layer ``split - 1`` (a forward hook), last query row, head mean.

    embeds [N, D] and pos [3, N] of the prompt as fed (the first row only for a 1-D RoPE model). FastV: layers >= split run on the kept
    tokens at their original ids and cache only those rows. DyCoke: at each decode step, cos of
    the visual attention with the previous step's < 0.9 -> layers >= split see only the prefix,
    the top ``int(V * (1 - p))`` visual rows and everything after the span; else all rows.
    ``select(hidden [N, D], keys [H_kv, N, d_h]) -> kept sequence indices`` (instead of FastV's
    budgets): another in-LLM selection (DART), given layer ``split - 1``'s output after
    transformers' final norm and its post-RoPE keys from transformers' cache.
    ``fastv_budgets`` may also be a function of the attention row [N] that gives the per-group
    counts (the primary's own prior). Returns (tokens, kept sequence indices at prefill, per-step
    pruning flags)."""
    from transformers import DynamicCache

    text = model.model.language_model
    mrope = "mrope_section" in (text.config.rope_parameters or {})
    rows = (lambda q: q) if mrope else (lambda q: q[0])  # (3, 1, N) -> M-RoPE's rows, or 1-D (1, N)
    depth = len(text.layers)
    cache = DynamicCache(config=text.config)
    seen = {}
    hook = text.layers[split - 1].self_attn.register_forward_hook(lambda m, a, out: seen.update(w=out[1]))
    try:
        x = torch.from_numpy(embeds)[None]
        p = torch.from_numpy(pos)[:, None]
        n = x.shape[1]
        pe = text.rotary_emb(x, rows(p))
        for i in range(split):
            x = text.layers[i](x, attention_mask=_causal(n), position_embeddings=pe, past_key_values=cache, use_cache=True)
        alpha = seen["w"][0, :, -1].float().mean(0)  # (N,)
        keep = torch.arange(n)
        if select is not None:
            keep = torch.as_tensor(select(text.norm(x)[0].numpy(), cache.layers[split - 1].keys[0].numpy()))
        elif fastv_budgets is not None:
            span = alpha[vision_start:vision_start + num_visual]
            b = torch.as_tensor(np.asarray(fastv_budgets(alpha.numpy()) if callable(fastv_budgets) else fastv_budgets))
            if fastv_per_group:
                per = num_visual // len(b)
                local = torch.cat([torch.argsort(-row, stable=True)[:int(k)] + g * per
                                   for g, (row, k) in enumerate(zip(span.reshape(len(b), per), b))])
            else:
                local = torch.argsort(-span, stable=True)[:int(b.sum())]
            keep = torch.cat([torch.arange(vision_start), vision_start + torch.sort(local).values,
                              torch.arange(vision_start + num_visual, n)])
        x = x[:, keep]
        pe = text.rotary_emb(x, rows(p[..., keep]))
        for i in range(split, depth):
            x = text.layers[i](x, attention_mask=_causal(len(keep)), position_embeddings=pe, past_key_values=cache,
                               use_cache=True)
        logits = model.lm_head(text.norm(x[:, -1]))[0]
        tokens, pruned, prev = [], [], None
        n_hi = len(keep)
        for step in range(max_new_tokens):
            tok = int(logits.argmax())
            tokens.append(tok)
            if tok in eos or step == max_new_tokens - 1:
                break
            x = model.get_input_embeddings()(torch.tensor([[tok]]))
            pe = text.rotary_emb(x, rows(torch.full((3, 1, 1), start_pos + step)))
            for i in range(split):
                x = text.layers[i](x, attention_mask=None, position_embeddings=pe, past_key_values=cache, use_cache=True)
            n_hi += 1
            mask = None
            if dycoke_p is not None:
                beta = seen["w"][0, :, -1].float().mean(0)[vision_start:vision_start + num_visual]
                rho = 0.0 if prev is None else float(beta @ prev / (beta.norm() * prev.norm()))
                prev = beta
                pruned.append(rho < 0.9)
                if rho < 0.9:
                    top = torch.argsort(-beta, stable=True)[:int(num_visual * (1 - dycoke_p))]
                    mask = torch.full((1, 1, 1, n_hi), torch.finfo(torch.float32).min)
                    mask[..., :vision_start] = 0
                    mask[..., vision_start + top] = 0
                    mask[..., vision_start + num_visual:] = 0
            for i in range(split, depth):
                x = text.layers[i](x, attention_mask=mask, position_embeddings=pe, past_key_values=cache, use_cache=True)
            logits = model.lm_head(text.norm(x[:, -1]))[0]
    finally:
        hook.remove()
    return tokens, keep.numpy(), pruned


@torch.no_grad()
def full_prompt_reference(model, prompt, clip, question, pcfg, video_id):
    """The uncompressed prompt of the primary model from transformers: embeddings with the visual
    features spliced in, and get_rope_index's ids. -> (embeds [N, D], pos [3, N], start, n_vis)"""
    from runtime.preprocess import preprocess_video

    patches = preprocess_video(clip.frames, pcfg)
    grid = patches.grid_thw
    n_vis = grid[0] * grid[1] * grid[2] // 4
    ids, start = prompt.input_ids(question, n_vis)
    feats = model.model.visual(torch.from_numpy(patches.pixel_values), grid_thw=torch.tensor([grid])).pooler_output
    emb = model.get_input_embeddings()(torch.tensor(ids)).clone()
    emb[start:start + n_vis] = feats
    types = torch.tensor((ids == video_id).astype(np.int64) * 2)[None]
    pos, _ = model.model.get_rope_index(torch.tensor(ids)[None], types, video_grid_thw=torch.tensor([grid]),
                                       second_per_grid_ts=torch.tensor([2 / clip.sampled_fps]))
    return emb.numpy(), pos[:, 0].numpy(), start, n_vis
