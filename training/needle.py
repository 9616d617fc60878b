"""Train a tiny Qwen2.5-VL from scratch on the needle videos (``synthetic.needle``), on CPU.

The model is transformers' own ``Qwen2_5_VLForConditionalGeneration`` (the class the export
loads), built from the ``needle`` preset's dimensions with the needle tokenizer (the random
presets' byte-level BPE, its corpus extended so every answer word is one token). Prompts come from
the runtime's own ``PromptBuilder`` and pixels from ``runtime.preprocess``, so training sees
exactly what the exported pipeline feeds.

Loss: cross-entropy on the answer token (at the last prompt position) plus a small weight on
``<|im_end|>`` after it (so greedy decoding stops), ``logits_to_keep=2``. AdamW, warm-up, clip 1.0.
A curriculum by video length (2 -> 4 -> 8 frames, then 16-64): training straight on long videos
sits at chance (``/work/shared/notes/training-facts.md``). While clips are short, an auxiliary
per-token head (``Perception``, training only) supervises what the vision tower sees; on long
clips the tower is frozen and the LLM trains on videos encoded once (``VideoBank``), part of the
time on token sets compressed by the runtime's own code (``VideoBank.compressed``). Each batch
holds one family and one frame count, so prompts have one length and need no padding. The
assistant is trained separately for its keyframe prior (``training.assistant.train_prior``).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass

import numpy as np

from synthetic.needle import COLOURS, EXTRA_COLOURS, FAMILIES, FAMILY_ORDER, SIZE, make_video, split_seed
from runtime.preprocess import PreprocessConfig, preprocess_video
from runtime.prompt import PromptBuilder

FULL_PIXELS = SIZE * SIZE  # 112x112: 16 merged tokens per temporal group
COMPRESS_RETENTIONS = (0.5, 0.25, 0.1, 0.05)  # drawn per compressed bank step (``VideoBank.compressed``)
REDUCED_PIXELS = FULL_PIXELS // 4  # 56x56: 4 tokens per group (the "reduced" assistant's input)


def preprocess_config(max_pixels: int = FULL_PIXELS) -> PreprocessConfig:
    return PreprocessConfig(min_pixels=REDUCED_PIXELS, max_pixels=max_pixels)


@dataclass
class Stage:
    frames: tuple[int, ...]  # frame counts drawn per step
    max_steps: int
    target: float = 0.97  # min per-family validation accuracy that ends the stage early
    lr: float = 1e-3
    reduced_every: int = 0  # every k-th step at the reduced resolution (0: never)
    cosine: bool = False  # decay the learning rate over the stage
    distractors: float = 1.0  # share of distractor objects kept (a difficulty curriculum)
    families: tuple[str, ...] | None = None  # family per step, cycled (None: FAMILY_CYCLE)
    bank: int = 0  # > 0: vision frozen; the LLM trains on this many videos encoded once (``VideoBank``)
    bank_batch: int = 16  # videos per step in a bank stage
    perception: float = 0.0  # weight of the auxiliary per-token loss (``Perception``); 0: off
    alike: bool = True  # the perception head also predicts each token's alike count (``cell_labels``)
    close: float = 0.0  # share of order videos whose needles are at most CLOSE_GAP groups apart
    compress: float = 0.0  # bank stages: share of steps on compressed visual tokens (``VideoBank.compressed``)
    reduced_frames: bool = False  # bank chunks at the reduced resolution also keep half the frames (the reduced prior)
    slacks: tuple[float, ...] = ()  # compressed steps: encoder slack drawn per batch (0: every group at its full grid),
    # groups re-encoded at the grid runtime.encoder_plan picks for their budget (per-group mixed grids)

    @staticmethod
    def batch(frames: int) -> int:
        """Videos per step: about 256 frames, 8 to 32 videos."""
        return min(32, max(8, 256 // frames))


# The curricula, in the order the committed pair was trained; why each exists, with the validation
# figures that led to it: docs/needle-curricula.md.
WIDE = (
    Stage((2,), 300, 0.97, distractors=0.0, families=("star", "count"), perception=1.0, alike=False),
    Stage((2,), 800, 0.97, families=("star", "count", "count"), perception=1.0, alike=False),
    Stage((4,), 800, 0.97, families=("order", "star", "order", "count"), perception=1.0, reduced_every=5, alike=False),
    Stage((8,), 300, 0.95, perception=0.5, reduced_every=5, alike=False),
    Stage(tuple(range(16, 65, 8)), 3000, 0.99, lr=5e-4, cosine=True, bank=4200, reduced_every=6),
    Stage(tuple(range(16, 65, 2)), 200, 0.99, lr=1e-4, reduced_every=4, cosine=True, perception=0.2),
)
# The per-token head also predicts how many objects like each token its shot holds.
ALIKE = (
    Stage((2,), 400, 0.97, families=("star", "count", "count"), perception=1.0),
    Stage((4,), 400, 0.97, families=("count", "star", "order", "count"), perception=1.0, reduced_every=5),
    Stage((8,), 300, 0.95, perception=0.5, reduced_every=5),
)
LONG_BANK = (
    Stage((2, 4), 400, 0.99, cosine=True, families=("count", "star", "count", "order"), perception=1.0, reduced_every=5),
    Stage(tuple(range(16, 65, 8)), 800, 0.99, lr=5e-4, cosine=True, bank=3000, reduced_every=6),
    Stage(tuple(range(16, 65, 2)), 100, 0.99, lr=1e-4, reduced_every=4, cosine=True, perception=0.2),
)
ORDER_BANK = (
    Stage(tuple(range(16, 65, 8)), 1200, 0.99, lr=5e-4, cosine=True, bank=3000, reduced_every=6,
          families=("order", "star", "order", "count")),
)
ORDER_CLOSE = (
    Stage((4, 6, 8), 400, 0.99, lr=3e-4, cosine=True, families=("order", "star", "order", "count"), perception=0.5,
          close=0.5),
    Stage(tuple(range(16, 65, 8)), 1200, 0.99, lr=5e-4, cosine=True, bank=3000, reduced_every=6,
          families=("order", "star", "order", "count"), close=0.5),
)
CLOSE_BANK = (
    Stage(tuple(range(16, 65, 8)), 1500, 0.99, lr=3e-4, cosine=True, bank=3000, reduced_every=6,
          families=("order", "star", "order", "count"), close=0.5),
)
# Half of the bank steps on token sets compressed as the runtime compresses them.
COMPRESS_BANK = (
    Stage(tuple(range(16, 65, 8)), 1500, 0.99, lr=3e-4, cosine=True, bank=3000, reduced_every=6,
          families=("order", "star", "count", "order", "count", "star"), close=0.5, compress=0.5),
)
# Compressed steps also draw an encoder slack: per-group mixed grids, as the runtime's encoder plan feeds them.
MIXED_BANK = (
    Stage(tuple(range(16, 65, 8)), 1500, 0.99, lr=2e-4, cosine=True, bank=3000, reduced_every=6,
          families=("order", "star", "count", "order", "count", "star"), close=0.5, compress=0.6,
          slacks=(0.0, 1.0, 2.0, 2.0, 3.0)),
)
ORDER_MIXED = (
    Stage(tuple(range(16, 65, 8)), 1500, 0.99, lr=2e-4, cosine=True, bank=3000, reduced_every=6,
          families=("order", "count", "order", "star", "order", "count"), close=0.5, compress=0.6,
          slacks=(0.0, 1.0, 2.0, 2.0, 3.0)),
)
CURRICULA = {"wide": WIDE, "first": WIDE[:1], "alike": ALIKE, "long-bank": LONG_BANK, "order-bank": ORDER_BANK, "order-close": ORDER_CLOSE, "close-bank": CLOSE_BANK, "compress-bank": COMPRESS_BANK, "mixed-bank": MIXED_BANK, "order-mixed": ORDER_MIXED}

# The committed primary: chained runs (seed, first training seed, learning-rate scale, torch
# threads, stages), each from the previous one's checkpoint with a fresh optimizer.
COMMITTED = (
    (0, 0, 1.0, 2, WIDE[:4]),
    (2, 50_000_000, 1.0, 1, ALIKE[:1]),
    (3, 60_000_000, 1.0, 2, ALIKE[1:]),
    (4, 70_000_000, 1.0, 2, LONG_BANK),
    (5, 80_000_000, 1.0, 2, ORDER_BANK),
    (6, 90_000_000, 1.0, 2, ORDER_BANK),
    (7, 100_000_000, 1.0, 2, ORDER_BANK),
    (8, 110_000_000, 1.0, 2, ORDER_BANK),
    (9, 120_000_000, 1.0, 2, ORDER_CLOSE),
    (10, 130_000_000, 1.0, 2, CLOSE_BANK),
    (11, 140_000_000, 1.0, 2, COMPRESS_BANK),
    (12, 170_000_000, 1.0, 2, MIXED_BANK),
)
# The committed assistant: the primary of ``COMMITTED[PRIOR_FROM_RUN]`` trained for its keyframe
# prior over ``layers`` (training/assistant.py: train_prior); the export reads ``export_layers``.
COMMITTED_PRIOR_LAYERS = (1, 2, 3)
PRIOR_FROM_RUN = 10
COMMITTED_PRIOR = dict(layers=COMMITTED_PRIOR_LAYERS, steps=800, bank=2400, seed=12, first_seed=160_000_000, batch=12,
                       each_group=True, export_layers=(1,))

FAMILY_CYCLE = ("star", "count", "order", "count")  # counting is the slowest to learn: twice the steps


def stage_plan(stage: Stage, seed: int, stage_index: int, first_seed: int):
    """The stage's batches, deterministic: (frames, family, train seeds, max_pixels) per step."""
    rng = np.random.default_rng([seed, stage_index])
    nxt = first_seed
    for step in range(stage.max_steps):
        t = int(rng.choice(stage.frames))
        fams = _family_cycle(t, stage.families)
        b = Stage.batch(t)
        pixels = REDUCED_PIXELS if stage.reduced_every and step % stage.reduced_every == stage.reduced_every - 1 else FULL_PIXELS
        yield t, fams[step % len(fams)], list(range(nxt, nxt + b)), pixels
        nxt += b


CLOSE_GAP = 3  # adjacent needles are where order fails (docs/needle-training-log.md)


def train_video(index: int, family: str, frames: int, stage: Stage):
    """Training video ``index`` of ``family`` at ``frames`` frames as ``stage`` draws it."""
    close = family == "order" and stage.close > 0 and np.random.default_rng([index, 17]).random() < stage.close
    return make_video(split_seed("train", index), family, frames, distractors=stage.distractors,
                      max_gap=CLOSE_GAP if close else None)


def half_frames(video):
    """``video`` as the reduced assistant samples it: half the frames, picked as
    ``Pipeline.frame_prior`` picks them (``linspace``, truncated); its temporal groups' needle flags
    follow the shots their frames come from (a group holds a needle if either frame does)."""
    import dataclasses
    n = len(video.frames)
    pick = np.linspace(0, n - 1, max(n // 2, 1)).astype(int)
    if len(pick) % 2:
        pick = pick[:-1]
    shots = pick // 2  # a shot is one 2-frame group of the full video
    needle = tuple(j for j in range(len(pick) // 2) if {int(shots[2 * j]), int(shots[2 * j + 1])} & set(video.needle_groups))
    return dataclasses.replace(video, frames=video.frames[pick], needle_groups=needle, fps=video.fps * len(pick) / n)


class _StageData:
    """Iterable over a stage's model inputs (built in a DataLoader worker, overlapping compute)."""

    def __init__(self, batcher, stage, seed, stage_index, first_seed):
        self.args = (batcher, stage, seed, stage_index, first_seed)

    def __iter__(self):
        batcher, stage, seed, si, first = self.args
        for t, fam, seeds, pixels in stage_plan(stage, seed, si, first):
            batch = batcher([train_video(s, fam, t, stage) for s in seeds], pixels)
            yield {**batch, "meta": (t, fam)}


class VideoBank:
    """Training videos encoded once by the vision tower (frozen for the stage), for LLM-only steps.

    Videos come in chunks of one (family, frame count, pixels), so a sampled batch needs no
    padding. Each entry keeps its prompt ids, labels, grid and merged visual tokens
    ``[groups * tokens_per_group, out_hidden]`` (float16).
    """

    CHUNK = 16

    def __init__(self, model, batcher: "Batcher", stage: Stage, seed: int, stage_index: int, first_seed: int):
        import torch
        rng = np.random.default_rng([seed, stage_index, 7])
        self.buckets: dict[tuple, list[dict]] = {}
        self.video_id = batcher.video_id
        was_training = model.training
        model.eval()
        with torch.no_grad():
            for c in range(0, stage.bank, self.CHUNK):
                t = int(rng.choice(stage.frames))
                fams = _family_cycle(t, stage.families)
                fam = fams[(c // self.CHUNK) % len(fams)]
                every = stage.reduced_every
                pixels = REDUCED_PIXELS if every and (c // self.CHUNK) % every == every - 1 else FULL_PIXELS
                k = min(self.CHUNK, stage.bank - c)
                vids = [train_video(first_seed + c + j, fam, t, stage) for j in range(k)]
                if stage.reduced_frames and pixels == REDUCED_PIXELS:  # what the reduced assistant sees
                    vids = [half_frames(v) for v in vids]
                    vids = [v for v in vids if v.needle_groups]  # a skipped needle shot: nothing to find
                    if not vids:
                        continue
                    k, t = len(vids), len(vids[0].frames)
                batch = batcher(vids, pixels)
                if stage.compress:  # the export's encoder: tokens plus VisionZip's importance and metric
                    emb, importance, metric = self._encode(model, batch)
                else:
                    emb = model.model.visual(batch["pixel_values_videos"], grid_thw=batch["video_grid_thw"]).pooler_output
                per = emb.shape[0] // k
                bucket = self.buckets.setdefault((t, fam, pixels), [])
                for j in range(k):
                    bucket.append({"input_ids": batch["input_ids"][j], "labels": batch["labels"][j],
                                   "grid": batch["video_grid_thw"][j], "spg": batch["second_per_grid_ts"][j],
                                   "emb": emb[j * per:(j + 1) * per].half(), "needle": vids[j].needle_groups})
                    if stage.compress:
                        bucket[-1].update(importance=importance[j * per:(j + 1) * per],
                                          metric=metric[j * per:(j + 1) * per])
                if stage.slacks and pixels == FULL_PIXELS:  # every smaller grid the encoder plan can pick
                    full = tuple(int(x) // 2 for x in batch["video_grid_thw"][0][1:])
                    for grid in self.smaller_grids(full):
                        emb, importance, metric = self._encode_groups(model, vids, grid)
                        per = emb.shape[0] // k
                        for j in range(k):
                            sl = slice(j * per, (j + 1) * per)
                            bucket[len(bucket) - k + j].setdefault("grids", {})[grid] = {
                                "tokens": emb[sl].half().numpy(), "importance": importance[sl], "metric": metric[sl]}
        model.train(was_training)

    @staticmethod
    def _encode(model, batch: dict):
        """Merged tokens [N, D] (torch) and VisionZip's importance [N] and metric [N, dk] (NumPy) of
        a batch of same-grid videos, through the export's vision module (one call: vision
        attention never crosses temporal groups, so k videos of grid (t, h, w) are one of (k*t, h, w))."""
        import torch

        from export.graphs.vision import VISION_INPUTS, VisionEncoder
        from runtime.vision_inputs import VisionGeometry, vision_feeds
        vc = model.config.vision_config
        grids = batch["video_grid_thw"]
        t, h, w = (int(x) for x in grids[0])
        feeds = vision_feeds((t * len(grids), h, w), VisionGeometry(vc.patch_size, vc.spatial_merge_size, vc.window_size))
        feeds["pixel_values"] = batch["pixel_values_videos"]
        tokens, importance, metric = VisionEncoder(model.model.visual)(
            *[torch.as_tensor(feeds[n]) for n in VISION_INPUTS])
        return tokens, importance.float().numpy(), metric.float().numpy()

    @staticmethod
    def smaller_grids(full: tuple[int, int]) -> list[tuple[int, int]]:
        """The merged grids below ``full`` that ``runtime.encoder_plan.group_grid`` can pick."""
        from runtime.encoder_plan import group_grid
        return sorted({group_grid(full, n) for n in range(1, full[0] * full[1] + 1)} - {full})

    @staticmethod
    def _encode_groups(model, vids, grid: tuple[int, int]):
        """Every temporal group of same-length videos resized to merged ``grid`` as the runtime's
        encoder plan does (``group_patches``), in one vision call -> tokens [k*G*a*b, D] (torch),
        importance, metric (NumPy)."""
        import torch

        from runtime.encoder_plan import group_patches
        cfg = preprocess_config()
        groups = -(-len(vids[0].frames) // cfg.temporal_patch_size)
        pixels = np.concatenate([group_patches(v.frames, g, grid, cfg) for v in vids for g in range(groups)])
        batch = {"video_grid_thw": torch.tensor([[len(vids) * groups, 2 * grid[0], 2 * grid[1]]]),
                 "pixel_values_videos": torch.from_numpy(pixels)}
        return VideoBank._encode(model, batch)

    def __len__(self) -> int:
        return sum(len(b) for b in self.buckets.values())

    def compressed(self, rng: np.random.Generator, size: int, tokens_per_second: float, merge: int = 2,
                   slacks: tuple[float, ...] = ()) -> dict:
        """One batch whose visual tokens are compressed as the runtime compresses them: one
        retention (``COMPRESS_RETENTIONS``) and method (VisionZip 3 in 4, else uniform) per batch;
        per video, budgets from frame weights that put a random share m ~ U(0, 1) on the needle
        groups (the rest Dirichlet), or uniform budgets (1 in 4: no assistant), through
        ``runtime.compression``; the kept tokens keep their original M-RoPE ids (explicit
        ``position_ids``). Needs a bank built with ``Stage.compress``.

        ``slacks`` (a bank built with ``Stage.slacks``): one encoder slack drawn per batch; with a
        slack > 0 each group comes from the grid ``runtime.encoder_plan.plan_group_grids`` picks
        for its budget, is compressed by ``compress_groups`` and gets M-RoPE ids on its own grid
        (``mrope_positions_grouped``), as budget-aware encoder resolution runs it."""
        import torch

        key, rows = self.draw(rng, size)
        retention = float(rng.choice(COMPRESS_RETENTIONS))
        method = "visionzip" if rng.random() < 0.75 else "uniform"
        slack = float(rng.choice(slacks)) if slacks else 0.0
        ids, pos, toks = [], [], []
        for r in rows:
            groups = int(r["grid"][0])
            if rng.random() < 0.25:
                weights = None
            else:
                m = rng.random()
                weights = (1 - m) * rng.dirichlet(np.ones(groups))
                weights[list(r["needle"])] += m / len(r["needle"])
                weights = weights.astype(np.float32)
            inp = self.compressed_row(r, method, retention, weights, slack, tokens_per_second, merge)
            ids.append(inp.ids), pos.append(inp.positions), toks.append(inp.visual)
        assert len({len(x) for x in ids}) == 1, "equal budgets per bucket give equal lengths"
        input_ids = torch.from_numpy(np.stack(ids))
        return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids),
                "position_ids": torch.from_numpy(np.stack(pos, axis=1)),
                "pixel_values_videos": torch.from_numpy(np.concatenate(toks)).float(),
                # only the split into videos reads this grid (positions are explicit): rows = kept tokens
                "video_grid_thw": torch.tensor([[1, merge, merge * len(t)] for t in toks]),
                "labels": torch.stack([r["labels"] for r in rows]),
                "meta": (key[0], f"{key[1]}@{method}{retention:g}" + (f"/s{slack:g}" if slack else ""))}

    def compressed_row(self, r: dict, method: str, retention: float, weights, slack: float, tokens_per_second: float,
                       merge: int = 2):
        """One bank entry compressed as the runtime compresses it -> ``runtime.prefill_input.PrefillInput``
        (no embeddings: the model embeds the ids): budgets from ``weights`` (None: uniform) at
        ``retention``, ``method`` through the registry; with ``slack`` > 0 (and a bank entry that has
        the smaller grids) each group at the grid budget-aware encoder resolution picks."""
        from runtime.compression import get_method, plan_budgets
        from runtime.compression.method import Request
        from runtime.compression.registry import compress_groups
        from runtime.encoder_plan import grouped_sequence, plan_group_grids
        from runtime.positions import mrope_positions
        from runtime.prefill_input import PromptSequence, prefill_input

        grid = tuple(int(x) for x in r["grid"])
        merged = (grid[0], grid[1] // merge, grid[2] // merge)
        groups, per = merged[0], merged[1] * merged[2]
        budgets = plan_budgets(weights, groups, per, retention)
        m = get_method(method)
        request = Request(merged, budgets, retention, None, weights is not None)
        emb = r["emb"].float().numpy()
        full = r["input_ids"].numpy()
        start = int(np.flatnonzero(full == self.video_id)[0])
        if slack and "grids" in r:  # per-group mixed grids (reduced-resolution chunks have none: plain)
            fg = merged[1:]
            plan = plan_group_grids(fg, budgets, slack)
            encoded = {fg: {"tokens": emb, "importance": r["importance"], "metric": r["metric"]}, **r["grids"]}
            parts = []
            for g, (a, b) in enumerate(plan.tolist()):
                sl = slice(g * a * b, (g + 1) * a * b)  # at the full grid a * b is per
                parts.append({k: v[sl].astype(np.float32) if k == "tokens" else v[sl] for k, v in encoded[(a, b)].items()})
            kept = compress_groups(m, parts, plan, request)
            tail = full[start + groups * per:]
            seq = grouped_sequence(lambda n: (np.concatenate([full[:start], np.full(n, self.video_id), tail]), start),
                                   self.video_id, plan, tokens_per_second * float(r["spg"]))
        else:
            vision = {"tokens": emb, "importance": r.get("importance"), "metric": r.get("metric")}
            kept = m.compress(vision, request)
            pos, _ = mrope_positions(full, self.video_id, [grid], [float(r["spg"])], merge, tokens_per_second)
            seq = PromptSequence(full, pos, start, groups * per)
        return prefill_input(seq, kept)

    def draw(self, rng: np.random.Generator, size: int) -> tuple[tuple, list[dict]]:
        """A bucket (drawn by size) and up to ``size`` of its entries, without replacement."""
        keys = list(self.buckets)
        sizes = np.array([len(self.buckets[k]) for k in keys], dtype=float)
        key = keys[int(rng.choice(len(keys), p=sizes / sizes.sum()))]
        items = self.buckets[key]
        return key, [items[i] for i in rng.choice(len(items), size=min(size, len(items)), replace=False)]

    def sample(self, rng: np.random.Generator, size: int) -> dict:
        """One batch from one bucket (buckets drawn by size), in ``Batcher``'s format, whose
        ``pixel_values_videos`` are the encoded tokens (for ``frozen_vision``)."""
        key, rows = self.draw(rng, size)
        return {**self.stack(rows), "meta": key[:2]}

    def stack(self, rows: list[dict]) -> dict:
        """Entries of one bucket -> a batch in ``Batcher``'s format (for ``frozen_vision``)."""
        import torch
        input_ids = torch.stack([r["input_ids"] for r in rows])
        return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids),
                "mm_token_type_ids": (input_ids == self.video_id).long() * 2,
                "pixel_values_videos": torch.cat([r["emb"] for r in rows]).float(),
                "video_grid_thw": torch.stack([r["grid"] for r in rows]),
                "second_per_grid_ts": torch.stack([r["spg"] for r in rows]),
                "labels": torch.stack([r["labels"] for r in rows])}


def frozen_vision(model):
    """A stand-in for ``model.model.visual`` whose input already is the tower's merged output
    (a ``VideoBank`` batch): ``with frozen_vision(model): loss_fn(model, bank_batch)``."""
    import contextlib

    import torch
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    real = model.model.visual

    class _Encoded(torch.nn.Module):
        spatial_merge_size = real.spatial_merge_size
        dtype = real.dtype

        def forward(self, x, grid_thw=None, **_):
            return BaseModelOutputWithPooling(last_hidden_state=x, pooler_output=x)

    @contextlib.contextmanager
    def swap():
        model.model.visual = _Encoded()
        try:
            yield
        finally:
            model.model.visual = real

    return swap()


class Batcher:
    """Needle videos -> model inputs (one family, one frame count per batch)."""

    def __init__(self, tokenizer_path: str, template: str, special: dict[str, int]):
        from tokenizers import Tokenizer
        self.tokenizer = Tokenizer.from_file(tokenizer_path)
        self.prompt = PromptBuilder(tokenizer_path, template, {"video": special["<|video_pad|>"],
                                                               "eos": [special["<|im_end|>"]]})
        self.video_id = special["<|video_pad|>"]
        self.im_end = special["<|im_end|>"]
        self.answer_ids = {w: self.tokenizer.token_to_id(w) for f in FAMILIES.values() for w in f.answers}
        assert all(v is not None for v in self.answer_ids.values()), self.answer_ids

    def __call__(self, vids, max_pixels: int = FULL_PIXELS) -> dict:
        import torch
        cfg = preprocess_config(max_pixels)
        pix, grids, ids, cells = [], [], [], []
        for v in vids:
            p = preprocess_video(v.frames, cfg)
            n_vis = int(np.prod(p.grid_thw)) // cfg.merge_size ** 2
            seq, _ = self.prompt.input_ids(v.question, n_vis)
            pix.append(p.pixel_values)
            grids.append(p.grid_thw)
            ids.append(np.concatenate([seq, [self.answer_ids[v.answer]]]))
            cells.append(cell_labels(v.params["groups"], p.grid_thw[1] // 2, p.grid_thw[2] // 2))
        lengths = {len(s) for s in ids}
        assert len(lengths) == 1, "one family and one frame count per batch"
        input_ids = torch.from_numpy(np.stack(ids))
        return {
            "input_ids": input_ids, "attention_mask": torch.ones_like(input_ids),
            "mm_token_type_ids": (input_ids == self.video_id).long() * 2,
            "pixel_values_videos": torch.from_numpy(np.concatenate(pix)),
            "video_grid_thw": torch.tensor(grids, dtype=torch.long),
            "second_per_grid_ts": torch.tensor([2 / v.fps for v in vids], dtype=torch.float32),
            "labels": torch.tensor([[self.answer_ids[v.answer], self.im_end] for v in vids]),
            "cells": torch.from_numpy(np.concatenate(cells)),  # [visual tokens, 3] (kind, colour, alike); -100: ignore
        }


KINDS = ("none", "circle", "square", "triangle", "diamond", "star")
CELL_COLOURS = ("none",) + tuple(COLOURS) + tuple(EXTRA_COLOURS)


def cell_labels(groups: list[list[dict]], gh: int, gw: int) -> np.ndarray:
    """Per merged visual token, what the drawing put there: [groups * gh * gw, 3] int64 of
    (index in ``KINDS``, index in ``CELL_COLOURS``, how many objects of its kind and colour its
    group holds - 1, at most 3), in the vision tower's output order (group, row, column). A token
    holding an object's centre gets all three; one that only a part of an object (or two centres)
    reaches is ignored (-100); an empty one is (0, 0, -100).

    ``groups``: ``NeedleVideo.params["groups"]`` (object centres and radii in SIZE x SIZE pixels).
    """
    out = np.zeros((len(groups), gh, gw, 3), np.int64)
    out[..., 2] = -100
    for gi, objs in enumerate(groups):
        centre = {}
        alike = {}
        for o in objs:
            alike[o["kind"], o["colour"]] = alike.get((o["kind"], o["colour"]), 0) + 1
        for o in objs:
            r0, r1 = (int((o["y"] + d) * gh // SIZE) for d in (-o["r"], o["r"]))
            c0, c1 = (int((o["x"] + d) * gw // SIZE) for d in (-o["r"], o["r"]))
            out[gi, max(r0, 0):min(r1, gh - 1) + 1, max(c0, 0):min(c1, gw - 1) + 1] = -100
            key = (int(o["y"] * gh // SIZE), int(o["x"] * gw // SIZE))
            centre[key] = None if key in centre else (KINDS.index(o["kind"]), CELL_COLOURS.index(o["colour"]),
                                                      min(alike[o["kind"], o["colour"]], 4) - 1)
        for (r, c), lab in centre.items():
            out[gi, r, c] = lab if lab is not None else -100
    return out.reshape(-1, 3)


class Perception:
    """Auxiliary per-token supervision of the vision tower during training only (not saved): a
    linear head on the merged visual tokens predicts each token's object kind, colour and how many
    objects like it its group holds (``cell_labels``), so the tower learns to see (and to count
    within a shot) before the LLM learns to find."""

    def __init__(self, model, weight: float = 1.0, alike: bool = True):
        import torch
        width = model.config.vision_config.out_hidden_size
        self.alike = alike
        self.head = torch.nn.Linear(width, len(KINDS) + len(CELL_COLOURS) + 4 * alike).to(next(model.parameters()).device)
        self.weight = weight
        self.tokens = None
        model.model.visual.register_forward_hook(self._keep)

    def _keep(self, module, args, output):
        self.tokens = output.pooler_output

    def loss(self, cells):
        import torch.nn.functional as F
        if self.tokens is None or self.tokens.shape[0] != cells.shape[0]:
            return 0.0
        z = self.head(self.tokens.float())
        k, c = len(KINDS), len(KINDS) + len(CELL_COLOURS)
        loss = F.cross_entropy(z[:, :k], cells[:, 0], ignore_index=-100) + \
            F.cross_entropy(z[:, k:c], cells[:, 1], ignore_index=-100)
        if self.alike:
            loss = loss + F.cross_entropy(z[:, c:], cells[:, 2], ignore_index=-100)
        self.tokens = None
        return self.weight * loss


def loss_fn(model, batch: dict, eos_weight: float = 0.1, perception: Perception | None = None):
    """(loss, answer accuracy): CE on the answer token + ``eos_weight`` x CE on <|im_end|>
    (+ the ``perception`` head's per-token loss when given)."""
    import torch.nn.functional as F
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    labels = batch["labels"]
    cells = batch.get("cells")
    feeds = {k: v for k, v in batch.items() if k not in ("labels", "cells")}
    if perception is not None:
        perception.tokens = None
    logits = model(**feeds, logits_to_keep=2).logits.float()  # [B, 2, V]
    loss = F.cross_entropy(logits[:, 0], labels[:, 0]) + eos_weight * F.cross_entropy(logits[:, 1], labels[:, 1])
    if perception is not None and cells is not None:
        loss = loss + perception.loss(cells)
    acc = (logits[:, 0].argmax(-1) == labels[:, 0]).float().mean()
    return loss, float(acc)


def build_model(tokenizer, special: dict[str, int], seed: int, init_std: float | None = None):
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    from export.presets import get_preset, random_config

    torch.manual_seed(seed)
    config = random_config(get_preset("needle"), tokenizer.get_vocab_size(), special)
    if init_std is not None:
        config.initializer_range = init_std
        config.text_config.initializer_range = init_std
        config.vision_config.initializer_range = init_std
    return Qwen2_5_VLForConditionalGeneration._from_config(config, attn_implementation="sdpa")


def _family_cycle(frames: int, cycle=None) -> list[str]:
    return [f for f in (cycle or FAMILY_CYCLE) if frames >= 2 * FAMILIES[f].min_groups]


def evaluate_torch(model, batcher: Batcher, split: str, n_per_family: int, frames, start: int = 0,
                   max_pixels: int = FULL_PIXELS, batch: int = 16, distractors: float = 1.0,
                   families=FAMILY_ORDER) -> dict[str, float]:
    """Per-family answer accuracy of the torch model on ``split`` (frame counts cycle through ``frames``)."""
    import torch
    out = {}
    model.eval()
    with torch.no_grad():
        for fam in [f for f in FAMILY_ORDER if f in families]:
            fr = [t for t in frames if t >= 2 * FAMILIES[fam].min_groups]
            if not fr:
                continue
            correct = 0
            for i in range(0, n_per_family, batch):
                t = fr[(i // batch) % len(fr)]
                k = min(batch, n_per_family - i)
                vids = [make_video(split_seed(split, start + FAMILY_ORDER.index(fam) * 100_000 + i + j), fam, t,
                                   distractors=distractors)
                        for j in range(k)]
                _, acc = loss_fn(model, batcher(vids, max_pixels))
                correct += acc * k
            out[fam] = correct / n_per_family
    model.train()
    return out


def lr_factor(step: int, steps: int, warmup: bool = True, cosine: bool = True) -> float:
    """Learning-rate multiplier at ``step`` of ``steps``: linear warm-up over 50 steps, then a
    cosine decay floored at 0.05 (each optional)."""
    warm = min(1.0, (step + 1) / 50) if warmup else 1.0
    decay = max(0.5 * (1 + math.cos(math.pi * step / steps)), 0.05) if cosine else 1.0
    return warm * decay


def cut_layers(model, num_layers: int):
    """``model`` (in place) keeping only its first ``num_layers`` LLM layers; returns it."""
    model.model.language_model.layers = model.model.language_model.layers[:num_layers]
    model.config.text_config.num_hidden_layers = num_layers
    model.config.text_config.layer_types = model.config.text_config.layer_types[:num_layers]
    return model


def train(out_dir: str, seed: int = 0, stages=WIDE, val_per_family: int = 48, log=print,
          eval_every: int = 50, init_std: float | None = None, threads: int = 1, workers: int = 1,
          lr_scale: float = 1.0, init_from: str | None = None, first_seed: int = 0, device: str = "cpu") -> dict:
    """Train the primary; write its checkpoint folder to ``out_dir``. Returns the training record.

    ``threads=1``: on a shared 2-core machine one torch thread ran 7-10x faster than two
    (spin-waiting under contention); a ``workers`` process builds the next batches meanwhile."""
    import torch

    from export.tokenizer import QWEN_VL_CHAT_TEMPLATE, build_tiny_tokenizer, needle_corpus, special_ids

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    t_start = time.perf_counter()
    tokenizer = build_tiny_tokenizer(corpus=needle_corpus())
    special = special_ids(tokenizer)
    work = tempfile.mkdtemp(prefix="needle-train-")
    tok_path = os.path.join(work, "tokenizer.json")
    tokenizer.save(tok_path)
    batcher = Batcher(tok_path, QWEN_VL_CHAT_TEMPLATE, special)
    if init_from:  # continue from a checkpoint folder (fresh optimizer)
        from transformers import Qwen2_5_VLForConditionalGeneration
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(init_from, local_files_only=True, use_safetensors=True,
                                                                   attn_implementation="sdpa")
    else:
        model = build_model(tokenizer, special, seed, init_std)
    model.to(device).train()
    params = list(model.parameters())
    perception = None
    if any(st.perception for st in stages):
        perception = Perception(model, alike=any(st.alike for st in stages if st.perception))
        params += list(perception.head.parameters())
    opt = torch.optim.AdamW(params, lr=stages[0].lr, weight_decay=0.01)
    record = {"seed": seed, "lr_scale": lr_scale, "init_std": init_std, "init_from": init_from, "first_seed": first_seed,
              "stages": [], "params": sum(p.numel() for p in model.parameters())}
    log(f"model: {record['params']:,} parameters")
    from torch.utils.data import DataLoader, IterableDataset

    train_seed = first_seed
    for si, st in enumerate(stages):
        t0 = time.perf_counter()
        best = None
        if st.bank:  # vision frozen: the LLM trains on videos encoded once
            bank = VideoBank(model, batcher, st, seed, si, train_seed)
            log(f"stage {si}: {len(bank)} videos encoded in {time.perf_counter() - t0:.0f} s")
            brng = np.random.default_rng([seed, si, 11])
            if st.compress:
                tps = float(model.config.vision_config.tokens_per_second)
                loader = (bank.compressed(brng, st.bank_batch, tps, slacks=st.slacks) if brng.random() < st.compress
                          else bank.sample(brng, st.bank_batch) for _ in range(st.max_steps))
            else:
                loader = (bank.sample(brng, st.bank_batch) for _ in range(st.max_steps))
            train_seed += st.bank
        else:
            data = type("D", (IterableDataset,), {"__iter__": lambda self, d=_StageData(batcher, st, seed, si, train_seed): iter(d)})()
            loader = DataLoader(data, batch_size=None, num_workers=workers, prefetch_factor=2 if workers else None,
                                persistent_workers=False)
            train_seed += sum(len(p[2]) for p in stage_plan(st, seed, si, 0))
        every = eval_every * (10 if st.bank else 1)
        step = -1
        for step, batch in enumerate(loader):
            t, fam = batch.pop("meta")
            for g in opt.param_groups:
                g["lr"] = st.lr * lr_scale * lr_factor(step, st.max_steps, warmup=si == 0, cosine=st.cosine)
            if st.bank:
                with frozen_vision(model):
                    loss, acc = loss_fn(model, batch)
            elif st.perception:
                perception.weight = st.perception
                loss, acc = loss_fn(model, batch, perception=perception)
            else:
                loss, acc = loss_fn(model, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            if step % (50 if st.bank else 10) == 0:
                log(f"stage {si} T={t} step {step} {fam} loss {loss.item():.3f} acc {acc:.2f} "
                    f"({time.perf_counter() - t0:.0f} s in stage, {time.perf_counter() - t_start:.0f} s total)")
            if (step + 1) % every == 0 or step == st.max_steps - 1:
                vframes = st.frames if len(st.frames) == 1 or max(st.frames) <= 8 else (16, 32, 48, 64)
                val = evaluate_torch(model, batcher, "val", val_per_family, vframes, distractors=st.distractors,
                                     families=st.families or FAMILY_ORDER)
                log(f"stage {si} step {step + 1} val {json.dumps({k: round(v, 3) for k, v in val.items()})}")
                best = val
                if min(val.values()) >= st.target:
                    break
        del loader
        record["stages"].append({"frames": [min(st.frames), max(st.frames)], "steps": step + 1, "wall_s": round(time.perf_counter() - t0, 1),
                                 "val": best})
        save_checkpoint(model, tokenizer, out_dir, record)
        log(f"stage {si} done: {step + 1} steps, {time.perf_counter() - t0:.0f} s; saved {out_dir}")
    record["wall_s"] = round(time.perf_counter() - t_start, 1)
    save_checkpoint(model.cpu(), tokenizer, out_dir, record)
    shutil.rmtree(work, ignore_errors=True)
    return record


def save_checkpoint(model, tokenizer, out_dir: str, record: dict | None = None, num_layers: int | None = None,
                    prior_layers: list[int] | None = None, trained_layers: list[int] | None = None) -> str:
    """A Hugging Face checkpoint folder (config.json, model.safetensors, tokenizer.json, chat
    template, preprocessor config), written under a temp name and renamed. ``num_layers``: keep
    only the first LLM layers (a smaller assistant cut from the model). ``prior_layers`` go to
    dytok.json (the export's default), with ``trained_layers`` (what the prior loss read) when given."""
    import copy

    from export.tokenizer import QWEN_VL_CHAT_TEMPLATE

    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=os.path.basename(out_dir) + ".partial-", dir=parent)
    try:
        m = model
        if num_layers is not None:
            m = cut_layers(copy.deepcopy(model), num_layers)
        m.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save(os.path.join(tmp, "tokenizer.json"))
        with open(os.path.join(tmp, "chat_template.json"), "w") as f:
            json.dump({"chat_template": QWEN_VL_CHAT_TEMPLATE}, f, indent=1)
        cfg = preprocess_config()
        with open(os.path.join(tmp, "preprocessor_config.json"), "w") as f:
            json.dump({"image_processor_type": "Qwen2VLImageProcessor", "min_pixels": cfg.min_pixels,
                       "max_pixels": cfg.max_pixels, "patch_size": cfg.patch_size,
                       "temporal_patch_size": cfg.temporal_patch_size, "merge_size": cfg.merge_size,
                       "image_mean": list(cfg.image_mean), "image_std": list(cfg.image_std)}, f, indent=1)
        if prior_layers is not None:  # the export's default prior layers for this checkpoint as an assistant
            with open(os.path.join(tmp, "dytok.json"), "w") as f:
                json.dump({"prior_layers": list(prior_layers),
                           **({"trained_layers": list(trained_layers)} if trained_layers is not None else {})}, f)
        if record is not None:
            with open(os.path.join(tmp, "training.json"), "w") as f:
                json.dump(record, f, indent=1)
        os.chmod(tmp, 0o755)
        if os.path.exists(out_dir):
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
