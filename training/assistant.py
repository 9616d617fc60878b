"""The needle assistant: the trained primary cut after the LLM layer whose keyframe prior finds the
needle best on validation videos.

The prior (``export/graphs/llm.py: KeyframePrior``) reads, per selected layer, the head-mean
softmax of the last prompt token's query over the visual keys. Here the same quantity comes from
transformers' eager attention maps; per layer we measure the share of that mass on the temporal
groups holding the answer (chance: needle groups / groups) and how often a needle group ranks
first. Layers past the deepest selected one never influence the prior, so the assistant keeps
only the layers up to it: a smaller Qwen2.5-VL checkpoint, exported like any other. When the cut
keeps every layer the assistant is the primary itself: no copy is written, the primary folder
gets the ``dytok.json`` (and the ``needle-assistant`` preset reads the primary's folder).
"""
from __future__ import annotations

import json
import os
import shutil

import numpy as np

from synthetic.needle import FAMILY_ORDER, make_video, split_seed

from .needle import FULL_PIXELS, Batcher


def needle_shares(model, batcher: Batcher, vids, max_pixels: int = FULL_PIXELS) -> np.ndarray:
    """Per video and LLM layer: share of the last prompt token's visual attention on the needle
    groups -> [n_videos, num_layers], plus needle-ranked-first flags of the same shape."""
    import torch

    shares, firsts = [], []
    with torch.no_grad():
        for v in vids:
            batch = batcher([v], max_pixels)
            batch.pop("labels"), batch.pop("cells", None)  # the prompt is the input minus the answer
            feeds = {k: (val[:, :-1] if k in ("input_ids", "attention_mask", "mm_token_type_ids") else val)
                     for k, val in batch.items()}
            out = model(**feeds, output_attentions=True, logits_to_keep=1)
            vis = (feeds["mm_token_type_ids"][0] == 2).nonzero().flatten()
            groups = int(feeds["video_grid_thw"][0, 0])
            row_s, row_f = [], []
            for attn in out.attentions:  # [1, heads, q, k]
                a = attn[0, :, -1, vis].float()
                a = (a / a.sum(-1, keepdim=True)).mean(0).numpy()  # softmax over visual keys, head mean
                per_group = a.reshape(groups, -1).sum(1)
                row_s.append(per_group[list(v.needle_groups)].sum() / per_group.sum())
                row_f.append(float(int(per_group.argmax()) in v.needle_groups))
            shares.append(row_s)
            firsts.append(row_f)
    return np.array(shares), np.array(firsts)


def load_model(folder: str, attn: str = "eager"):
    from transformers import Qwen2_5_VLForConditionalGeneration
    return Qwen2_5_VLForConditionalGeneration.from_pretrained(
        folder, local_files_only=True, use_safetensors=True, attn_implementation=attn).eval()


def batcher_for(folder: str) -> Batcher:
    from tokenizers import Tokenizer

    from export.tokenizer import checkpoint_chat_template, special_ids
    path = os.path.join(folder, "tokenizer.json")
    return Batcher(path, checkpoint_chat_template(folder), special_ids(Tokenizer.from_file(path)))


def val_videos(n_per_family: int, frames=(16, 32, 48, 64)):
    return [make_video(split_seed("val", 500_000 + FAMILY_ORDER.index(f) * 10_000 + i), f, frames[i % len(frames)])
            for f in FAMILY_ORDER for i in range(n_per_family)]


def derive_assistant(primary: str, out: str, n_per_family: int = 40, threads: int = 1, log=print,
                     layers: list[int] | None = None) -> dict:
    """Measure every layer's prior on validation, cut the primary after the best layer (or after
    the deepest of ``layers``, a choice made elsewhere, e.g. end to end with ``scripts/evaluate.py
    --split val --set prior_layers=[...]``), save to ``out`` with the prior layers in dytok.json.
    A cut that keeps every layer writes only ``primary``/dytok.json (the assistant is the primary;
    a stale ``out`` folder is removed). Returns the choice, its ``checkpoint`` the assistant's folder."""
    import torch
    from tokenizers import Tokenizer

    from .needle import save_checkpoint

    torch.set_num_threads(threads)
    model = load_model(primary)
    batcher = batcher_for(primary)
    vids = val_videos(n_per_family)
    shares, firsts = needle_shares(model, batcher, vids)
    chance = float(np.mean([len(v.needle_groups) / v.num_groups for v in vids]))
    per_layer = {str(i): {"needle_share": round(float(shares[:, i].mean()), 4),
                          "ranked_first": round(float(firsts[:, i].mean()), 4),
                          **{f: round(float(shares[[v.family == f for v in vids], i].mean()), 4) for f in FAMILY_ORDER}}
                 for i in range(shares.shape[1])}
    log(f"prior per layer on {len(vids)} validation videos (chance {chance:.3f}): {json.dumps(per_layer)}")
    chosen = sorted(layers) if layers else [int(np.argmax(shares.mean(0)))]
    best = chosen[-1]
    choice = {"prior_layers": chosen, "num_layers": best + 1, "chance": round(chance, 4), "per_layer": per_layer,
              "chosen_by": "given" if layers else "needle share", "val_videos": len(vids)}
    if best + 1 == model.config.text_config.num_hidden_layers:  # the primary itself: no 8 MB copy
        write_dytok(primary, {"prior_layers": chosen, "derived": choice})
        if os.path.isdir(out) and os.path.abspath(out) != os.path.abspath(primary):
            shutil.rmtree(out)
        log(f"assistant: the primary itself (all {best + 1} layers), prior layers {chosen} -> {primary}/dytok.json")
        return {**choice, "checkpoint": primary}
    save_checkpoint(model, Tokenizer.from_file(os.path.join(primary, "tokenizer.json")), out,
                    {"derived_from": "primary", **choice}, num_layers=best + 1, prior_layers=chosen)
    log(f"assistant: primary cut after layer {best} ({best + 1} layers), prior layers {chosen} -> {out}")
    return {**choice, "checkpoint": out}


def write_dytok(folder: str, record: dict) -> str:
    """``folder``/dytok.json, written under a temp name and renamed."""
    from runtime.fileio import write_atomic
    path = os.path.join(folder, "dytok.json")
    write_atomic(path, json.dumps(record, indent=1).encode())
    return path


def prior_groups(model, batch: dict, layers, video_id: int):
    """The keyframe prior per video, layer and temporal group, differentiable: the last prompt
    token's head-mean softmax over the visual keys only (spec §1.3; transformers' eager attention
    rows renormalised over the visual keys), summed per group -> [B, len(layers), groups].
    ``batch``: a ``Batcher`` (or ``VideoBank``, under ``frozen_vision``) batch whose input_ids end
    with the answer token."""
    import torch
    feeds = {k: (v[:, :-1] if k in ("input_ids", "attention_mask", "mm_token_type_ids") else v)
             for k, v in batch.items() if k not in ("labels", "cells")}
    out = model(**feeds, output_attentions=True, logits_to_keep=1)
    vis = feeds["input_ids"][0] == video_id
    groups = int(batch["video_grid_thw"][0, 0])
    rows = []
    for layer in layers:
        a = out.attentions[layer][:, :, -1, vis].float()  # [B, heads, visual]
        p = (a / a.sum(-1, keepdim=True)).mean(1)  # softmax over the visual keys, head mean
        rows.append(p.reshape(p.shape[0], groups, -1).sum(-1))
    return torch.stack(rows, 1)


def needle_loss(per_group, needles: list[tuple[int, ...]], each_group: bool = False):
    """Prior loss and needle share. per_group [B, L, G] (``prior_groups``), needles: the answer's
    groups per video -> (scalar loss, shares [B, L]). Loss: -log of the share on the answer's
    groups, or with ``each_group`` the mean over those groups of -log of each one's own share:
    budgets are per group, so an order question (two groups) needs mass on both, and the plain
    share is already 1 with all of it on one."""
    import torch
    mask = per_group.new_zeros(per_group.shape[0], 1, per_group.shape[2])
    for i, ng in enumerate(needles):
        mask[i, 0, list(ng)] = 1.0
    share = (per_group * mask).sum(-1)
    if each_group:
        loss = -(torch.log(per_group.clamp_min(1e-6)) * mask).sum(-1) / mask.sum(-1)
    else:
        loss = -torch.log(share.clamp_min(1e-6))
    return loss.mean(), share


def _optimizer_step(opt, params, loss, lr: float) -> None:
    """One step of ``opt`` at learning rate ``lr`` on ``loss``, gradients clipped to norm 1."""
    import torch
    for g in opt.param_groups:
        g["lr"] = lr
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()


def _log_step(record: dict, log, t0: float, step: int, steps: int, line: str) -> None:
    """Every 50th and the last step: ``line`` into the record's log and out through ``log``."""
    import time
    if step % 50 == 0 or step == steps - 1:
        record["log"].append(line)
        log(f"{line} ({time.perf_counter() - t0:.0f} s)")


def train_prior(primary: str, out: str, layers=(1, 2, 3), steps: int = 800, bank: int = 2400, lr: float = 3e-4,
                seed: int = 0, first_seed: int = 0, threads: int = 2, batch: int = 12, reduced_every: int = 4,
                reduced_frames: bool = False, each_group: bool = False, export_layers=None, log=print) -> dict:
    """A dedicated assistant: the primary fine-tuned so that its keyframe prior (``layers``) finds
    the answer's groups. Loss: -log of the prior's needle share, mean over ``layers`` and videos,
    on a bank of 16-64-frame training videos (vision frozen, as encoded by the primary; a quarter
    at the reduced resolution, every ``reduced_every``-th chunk; with ``reduced_frames`` those chunks
    also keep half the frames, as the reduced assistant samples them); cut after the deepest prior
    layer. ``each_group``: the loss of ``needle_loss(each_group=True)`` (mass on every answer
    group). ``export_layers``: the prior layers written to dytok.json for the export (default
    ``layers``; the trained ones are recorded beside them). Returns the training record."""
    import time

    import torch
    from tokenizers import Tokenizer

    from .needle import Stage, VideoBank, cut_layers, frozen_vision, lr_factor, save_checkpoint

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    model = cut_layers(load_model(primary), max(layers) + 1)
    batcher = batcher_for(primary)
    stage = Stage(tuple(range(16, 65, 8)), steps, bank=bank, reduced_every=reduced_every, reduced_frames=reduced_frames)
    videos = VideoBank(model, batcher, stage, seed, 0, first_seed)
    log(f"prior bank: {len(videos)} videos encoded in {time.perf_counter() - t0:.0f} s")
    params = [p for n, p in model.named_parameters() if "language_model" in n or "embed" in n]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    rng = np.random.default_rng([seed, 23])
    model.train()
    record = {"primary": primary, "layers": list(layers), "steps": steps, "bank": bank, "lr": lr, "seed": seed,
              "first_seed": first_seed, "reduced_every": reduced_every, "reduced_frames": reduced_frames, "each_group": each_group,
              "log": []}
    for step in range(steps):
        key, rows = videos.draw(rng, batch)
        with frozen_vision(model):
            per_group = prior_groups(model, videos.stack(rows), layers, batcher.video_id)
        loss, share = needle_loss(per_group, [r["needle"] for r in rows], each_group)
        _optimizer_step(opt, params, loss, lr * lr_factor(step, steps))
        _log_step(record, log, t0, step, steps,
                  f"prior step {step} T={key[0]} {key[1]} loss {loss.item():.3f} needle share {share.mean().item():.3f}")
    model.eval()
    record["wall_s"] = round(time.perf_counter() - t0, 1)
    exported = list(export_layers) if export_layers is not None else list(layers)
    record["export_layers"] = exported
    save_checkpoint(model, Tokenizer.from_file(os.path.join(primary, "tokenizer.json")), out, record,
                    prior_layers=exported, trained_layers=list(layers) if exported != list(layers) else None)
    return record


def train_prior_reduced(assistant: str, out: str, steps: int = 600, lr: float = 2e-4, seed: int = 0,
                        first_seed: int = 0, threads: int = 2, batch: int = 12, log=print) -> dict:
    """The assistant fine-tuned end to end, vision tower included, at the reduced assistant's
    input only: half the frames as ``Pipeline.frame_prior`` picks them (``half_frames``) at 56x56
    (4 merged tokens per group). Same loss as ``train_prior`` (-log of the prior's share on the
    answer's groups over the prior layers of ``assistant``/dytok.json), fresh 16-64-frame training
    videos each step (one family and frame count per batch). The vision tower stops being the
    primary's, so the primary's vision output can no longer stand in for it. Returns the record."""
    import time

    import torch
    from tokenizers import Tokenizer

    from .needle import REDUCED_PIXELS, Stage, _family_cycle, half_frames, lr_factor, save_checkpoint, train_video

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    with open(os.path.join(assistant, "dytok.json")) as f:
        dytok = json.load(f)
    layers = tuple(dytok.get("trained_layers", dytok["prior_layers"]))  # what its prior was trained on
    model = load_model(assistant)
    batcher = batcher_for(assistant)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    rng = np.random.default_rng([seed, 29])
    stage = Stage(tuple(range(16, 65, 8)), steps)
    record = {"assistant": assistant, "layers": list(layers), "steps": steps, "lr": lr, "seed": seed,
              "first_seed": first_seed, "input": "reduced (half frames, 56x56), end to end", "log": []}
    model.train()
    index = first_seed
    for step in range(steps):
        t = int(rng.choice(stage.frames))
        fams = _family_cycle(t)
        fam = fams[step % len(fams)]
        vids = [half_frames(train_video(index + j, fam, t, stage)) for j in range(batch)]
        index += batch
        vids = [v for v in vids if v.needle_groups]  # a skipped needle shot: nothing to find
        if not vids:
            continue
        per_group = prior_groups(model, batcher(vids, REDUCED_PIXELS), layers, batcher.video_id)
        loss, share = needle_loss(per_group, [v.needle_groups for v in vids])
        _optimizer_step(opt, list(model.parameters()), loss, lr * lr_factor(step, steps))
        _log_step(record, log, t0, step, steps,
                  f"reduced prior step {step} T={t} {fam} loss {loss.item():.3f} needle share {share.mean().item():.3f}")
    model.eval()
    record["wall_s"] = round(time.perf_counter() - t0, 1)
    save_checkpoint(model, Tokenizer.from_file(os.path.join(assistant, "tokenizer.json")), out, record,
                    prior_layers=list(dytok["prior_layers"]),
                    trained_layers=list(layers) if list(layers) != list(dytok["prior_layers"]) else None)
    return record
