"""Budget-aware encoder resolution: encode each temporal group at the smallest grid that still
covers its token budget, then compress to the budget.

Token budgets are known before the primary vision engine runs (they come from the assistant's
prior, or are uniform). A group that keeps 20 of 192 tokens does not need its frames encoded at
full resolution: here every group is resized to the smallest merged grid ``(a, b)`` (aspect
kept, at most the full grid) with ``a * b >= ceil(budget * slack)``. Groups that share a grid
share one vision call; each group is then compressed to its budget and
its tokens get M-RoPE ids on its own grid (``positions.mrope_positions_grouped``). VisionZip,
uniform selection and DynTok (merging along each group's own rows) run per group. With a slack
that keeps every group at full size, the tokens and the answer are those of the plain pipeline.
"""
from __future__ import annotations

import math
import time

import numpy as np

from .compression.method import Request
from .compression.registry import compress_groups
from .errors import BudgetError
from .positions import mrope_positions_grouped
from .prefill_input import PromptSequence
from .preprocess import PreprocessConfig, normalize, patchify, plan_size, resize_bicubic
from .vision_inputs import VisionGeometry, vision_feeds


def group_grid(full: tuple[int, int], need: int) -> tuple[int, int]:
    """Smallest merged grid (a, b) with the aspect of ``full = (rows, cols)`` and a*b >= need.

    Candidates: a = 1..rows with b = round(a * cols / rows) clipped to [1, cols]; the full grid
    always qualifies. Ties go to the candidate closest in aspect to ``full``."""
    rows, cols = full
    need = min(max(int(need), 1), rows * cols)
    best = (rows * cols, 0.0, rows, cols)
    for a in range(1, rows + 1):
        b = min(max(round(a * cols / rows), 1), cols)
        if a * b >= need:
            skew = abs(math.log((a / b) / (rows / cols)))
            best = min(best, (a * b, skew, a, b))
    return best[2], best[3]


def check_slack(slack: float) -> None:
    """Raise unless ``slack`` is a usable encoder slack (>= 1 tokens encoded per kept token)."""
    if not slack >= 1:
        raise BudgetError(f"--encoder-slack {slack}: must be >= 1 (tokens encoded per kept token)")


def plan_group_grids(full: tuple[int, int], budgets: np.ndarray, slack: float) -> np.ndarray:
    """Merged grid per group. full (rows, cols) of merged tokens, budgets [G] -> [G, 2] int64."""
    check_slack(slack)
    budgets = np.asarray(budgets, np.int64)
    if (budgets > full[0] * full[1]).any():
        raise BudgetError(f"a budget of {budgets.max()} exceeds the {full[0] * full[1]} tokens of a group")
    return np.array([group_grid(full, math.ceil(int(b) * slack)) for b in budgets], np.int64).reshape(-1, 2)


def group_patches(frames: np.ndarray, group: int, grid: tuple[int, int], cfg: PreprocessConfig) -> np.ndarray:
    """The patches of temporal group ``group`` resized to merged grid ``grid``. frames [T, H, W, 3]
    uint8 -> [4*a*b, 3*tp*p*p] float32 (the last group is padded by repeating its last frame)."""
    tp = cfg.temporal_patch_size
    clip = frames[group * tp:(group + 1) * tp]
    height, width = grid[0] * cfg.factor, grid[1] * cfg.factor
    resized = np.stack([resize_bicubic(f, height, width) for f in clip])
    pixels, _ = patchify(normalize(resized, cfg.image_mean, cfg.image_std), cfg.patch_size, tp, cfg.merge_size)
    return pixels


def encode_groups(run_vision, frames: np.ndarray, grids: np.ndarray, cfg: PreprocessConfig,
                  geo: VisionGeometry, timings: dict | None = None) -> list[dict[str, np.ndarray]]:
    """Vision outputs per group, one ``run_vision(feeds)`` call per distinct grid (groups in time
    order inside a call). grids [G, 2] merged -> G dicts of tokens / importance / metric."""
    out: list[dict | None] = [None] * len(grids)
    t_pre = 0.0
    for a, b in sorted({tuple(g) for g in grids.tolist()}):
        members = [g for g in range(len(grids)) if tuple(grids[g]) == (a, b)]
        t0 = time.perf_counter()
        pixels = np.concatenate([group_patches(frames, g, (a, b), cfg) for g in members])
        t_pre += time.perf_counter() - t0
        res = run_vision({"pixel_values": pixels, **vision_feeds((len(members), 2 * a, 2 * b), geo)})
        per = a * b
        for i, g in enumerate(members):
            out[g] = {k: v[i * per:(i + 1) * per] for k, v in res.items()}
    if timings is not None:
        timings["preprocess_groups"] = t_pre
    return out


def planned_size(frames: np.ndarray, cfg: PreprocessConfig) -> tuple[int, int]:
    """The full-resolution frame size preprocessing would pick. frames [T, H, W, 3] -> (H', W')"""
    return plan_size(frames.shape[1], frames.shape[2], len(frames), cfg)


def encode_budget_aware(pipe, frames, question: str, opts, method, weights, timings: dict):
    """The primary's vision and compression with budget-aware encoder resolution. ``pipe``: a
    runtime.pipeline.Pipeline; ``weights``: the prior's group weights or None. Fills timings
    vision / preprocess (added) / compress. -> (Kept with source into the concatenated groups,
    the PromptSequence over the groups' own grids, the compression Request with its budgets [G])."""
    if not pipe.family.encoder_slack:
        raise BudgetError(f"--encoder-slack: {pipe.family.name} encodes every frame at one fixed size (Qwen2.5-VL only)")
    model = pipe.m.model("primary")
    cfg = pipe.preprocess_config("primary", opts.max_pixels, opts.min_pixels)
    height, width = planned_size(frames.frames, cfg)
    merge = cfg.merge_size
    full = (height // cfg.patch_size // merge, width // cfg.patch_size // merge)
    groups = -(-len(frames.frames) // cfg.temporal_patch_size)
    t0 = time.perf_counter()
    budgets = pipe.budgets(weights, (groups, *full), opts, method)
    grids = plan_group_grids(full, budgets, opts.encoder_slack)
    t_plan = time.perf_counter() - t0

    t0 = time.perf_counter()
    geo = VisionGeometry(model["patch_size"], model["merge_size"], model["window_size"])
    parts = encode_groups(pipe.engines["primary_vision"].run, frames.frames, grids, cfg, geo, timings)
    timings["vision"] = time.perf_counter() - t0 - timings["preprocess_groups"]
    timings["preprocess"] = timings.get("preprocess", 0.0) + timings.pop("preprocess_groups")

    t0 = time.perf_counter()
    request = Request((groups, *full), budgets, opts.retention, opts.budget, weights is not None)
    kept = compress_groups(method, parts, grids, request)
    seq = grouped_sequence(lambda n: pipe.prompt.input_ids(question, n), pipe.m.tokens["video"], grids,
                           model["tokens_per_second"] * pipe.seconds_per_group(frames))
    timings["compress"] = time.perf_counter() - t0 + t_plan
    return kept, seq, request


def grouped_sequence(expand, video_id: int, grids: np.ndarray, time_interval: float) -> PromptSequence:
    """The prompt of a video whose groups come at their own merged ``grids`` [G, 2]; ``expand(n)``
    gives the prompt ids with the video span expanded to n tokens and the span's start."""
    n_vis = int(sum(a * b for a, b in np.asarray(grids).tolist()))
    ids, start = expand(n_vis)
    pos = mrope_positions_grouped(ids, video_id, [tuple(g) for g in np.asarray(grids).tolist()], time_interval)
    return PromptSequence(ids, pos, start, n_vis)
