"""FLOPs-based PROJECTION of the pipeline to the real Qwen2.5-VL-7B + 3B pair from a measured run's
throughput per stage kind. Not a measurement: every table it prints says so."""
from __future__ import annotations

import math

from evaluation.prior_shapes import prior_setting
from runtime import flops as F
from runtime.encoder_plan import group_grid
from runtime.errors import ManifestError
from runtime.models import REAL_MODELS
from runtime.options import Options

from .accuracy import accuracy_key, accuracy_table

# The real checkpoints' configs; the prior reads the 3B assistant's last third (layers 24..35).
REAL = {"7b": REAL_MODELS["qwen2.5-vl-7b"], "3b": dict(REAL_MODELS["qwen2.5-vl-3b"], prior_layers=list(range(24, 36)))}
# The projection's prior shapes, (frames divisor, pixels divisor), and encoder slacks (None: off).
PROJECT_PRIORS = ((1, 1), (2, 1), (1, 4), (2, 4))
PROJECT_SLACKS = (None, 2.0, 1.5, 1.0)


def stage_rates(report: dict, variant: str = "fp32") -> dict[str, float]:
    """FLOP/s per stage kind: the best measured throughput among the runtime rows of ``variant``."""
    rows = [r for r in report["configs"] if r["backend"] == "runtime" and "skipped" not in r
            and r.get("variant", "fp32") == variant]
    if not rows:
        raise ManifestError(f"no measured runtime rows of variant {variant!r} to project from")
    rate = {}
    for kind in ("vision", "prefill", "decode", "assistant"):
        vals = [r["flops"][kind] / r["stages_s"][kind] for r in rows if kind in r["flops"] and r["stages_s"][kind] > 0]
        rate[kind] = max(vals) if vals else report["best_throughput_flops_per_s"]
    return rate


def projection_grid(frames: int = 32, side: int = 448) -> tuple[tuple[int, int, int], int]:
    """The 7B's patch grid (groups, rows, cols) for ``frames`` square frames of ``side`` pixels,
    and its merged visual tokens."""
    g = side // 14
    grid = (frames // 2, g, g)
    return grid, grid[0] * g * g // REAL["7b"]["merge_size"] ** 2


def projected_stages(rate: dict[str, float], prior: tuple[int, int] | None, slack: float | None, retention: float,
                     frames: int = 32, side: int = 448, text_tokens: int = 40, new_tokens: int = 64,
                     free_prior: bool = False) -> dict[str, float]:
    """Seconds per stage of Qwen2.5-VL-7B (+ the 3B assistant's prior at 1/F of the frames and 1/P
    of the pixels, ``prior`` = (F, P), or no assistant: None) at ``retention`` (1.0: no
    compression), from FLOPs over ``rate``. ``slack``: budget-aware encoder resolution, assuming
    uniform budgets (each group at the smallest grid covering retention x slack of its tokens;
    skewed budgets cost at most that). ``free_prior``: the prior's cost set to 0 (a bound)."""
    grid, total = projection_grid(frames, side)
    g = grid[1]
    kept = total if retention >= 1 else int(total * retention)
    pm, am = REAL["7b"], REAL["3b"]
    a = 0.0
    if prior is not None and not free_prior:
        f_div, p_div = prior
        side_p = max(2, round(g / math.sqrt(p_div) / 2) * 2)  # patches per side at 1/P of the pixels, even
        a_grid = (max(grid[0] // f_div, 1), side_p, side_p)
        a_tokens = a_grid[0] * side_p * side_p // am["merge_size"] ** 2 + text_tokens
        a = (F.vision_flops(am, a_grid) + F.prior_flops(am, a_tokens)) / rate["assistant"]
    if slack is None or retention >= 1:
        v = F.vision_flops(pm, grid) / rate["vision"]
    else:
        rows, cols = group_grid((g // 2, g // 2), math.ceil(total // grid[0] * retention * slack))
        v = grid[0] * F.vision_flops(pm, (1, 2 * rows, 2 * cols)) / rate["vision"]
    return {"assistant": a, "vision": v, "prefill": F.llm_flops(pm, kept + text_tokens) / rate["prefill"],
            "decode": F.decode_flops(pm, kept + text_tokens, new_tokens) / rate["decode"]}


def project_7b(report: dict, frames: int = 32, side: int = 448, text_tokens: int = 40, new_tokens: int = 64,
               variant: str = "fp32", retention: float = 0.25, accuracy_rows: list[dict] | None = None,
               margin: float = 0.02) -> str:
    """FLOPs-based PROJECTION for Qwen2.5-VL-7B with a 3B assistant (a Markdown table), from the
    best measured throughput per stage kind of the runtime rows of ``variant``. Not a measurement.

    Rows: no compression; VisionZip at ``retention`` without the assistant; DyToK+VisionZip with
    each prior shape of PROJECT_PRIORS at each encoder slack of PROJECT_SLACKS; and the bound of a
    prior that costs nothing. With ``accuracy_rows`` (scripts/evaluate.py rows of the needle pair)
    each row carries the accuracy of the same method, retention, prior shape, weights and slack,
    and whether it is within ``margin`` of full tokens (what counts toward a target)."""
    try:
        rate = stage_rates(report, variant)
    except ManifestError as e:
        return f"PROJECTION: {e}"
    table = accuracy_table(accuracy_rows or [])
    full_acc = table.get(accuracy_key("none", 1.0, "none", variant))
    _, total = projection_grid(frames, side)
    scenarios = [("no compression (full tokens)", None, None, 1.0, False)]
    scenarios += [(f"VisionZip {retention:.0%}, no assistant", None, s, retention, False) for s in (None, 1.0)]
    scenarios += [(f"DyToK+VisionZip {retention:.0%}", p, s, retention, False) for s in PROJECT_SLACKS for p in PROJECT_PRIORS]
    scenarios += [(f"DyToK+VisionZip {retention:.0%}, prior free (bound)", (1, 1), s, retention, True) for s in PROJECT_SLACKS]
    base = sum(projected_stages(rate, None, None, 1.0, frames, side, text_tokens, new_tokens).values())
    lines = [f"PROJECTION [{variant}] (FLOPs / measured runtime throughput; not measured): Qwen2.5-VL-7B + 3B assistant "
             f"(prior layers {min(REAL['3b']['prior_layers'])}-{max(REAL['3b']['prior_layers'])}), {frames} frames at {side}x{side} ({total} visual tokens), {new_tokens} new tokens. "
             "Accuracy: the needle pair, same method, retention, prior shape, weights and slack"
             + (f"; counts = within {100 * margin:.0f} points of full tokens ({100 * full_acc['accuracy']:.1f}%)" if full_acc else ""),
             "| scenario | prior frames, pixels | encoder slack | assistant s | vision s | prefill s | decode s | total s "
             "| vs no compression | needle accuracy % (n) | counts |", "|" + "---|" * 11]
    best = None
    for name, prior, slack, r, free in scenarios:
        st = projected_stages(rate, prior, slack, r, frames, side, text_tokens, new_tokens, free)
        tot = sum(st.values())
        if r >= 1:
            key = accuracy_key("none", 1.0, "none", variant)
        else:
            key = accuracy_key("visionzip", r, "none" if prior is None else prior_setting(prior), variant, slack)
        acc = None if free else table.get(key)
        counts = "" if acc is None or full_acc is None else ("yes" if acc["accuracy"] >= full_acc["accuracy"] - margin - 1e-9 else "no")
        if counts == "yes" and r < 1 and (best is None or tot < best[1]):
            best = (name, tot, prior, slack)
        shape = "–" if prior is None else (f"1/{prior[0]}, 1/{prior[1]}" if not free else "any (cost 0)")
        lines.append(f"| {name} | {shape} | {'off' if slack is None else f'{slack:g}'} | {st['assistant']:.1f} | "
                     f"{st['vision']:.1f} | {st['prefill']:.1f} | {st['decode']:.1f} | {tot:.1f} | {base / tot:.2f}x | "
                     + ("" if acc is None else f"{100 * acc['accuracy']:.1f} ({acc.get('n', '')})") + f" | {counts} |")
    default = sum(projected_stages(rate, (1, 1), Options.encoder_slack, Options.retention, frames, side, text_tokens,
                                   new_tokens).values())
    lines.append(f"default configuration (Options: DyToK+VisionZip {Options.retention:.0%}, full-resolution prior, "
                 f"encoder slack {'off' if Options.encoder_slack is None else Options.encoder_slack}): {base / default:.2f}x"
                 + (f"; fastest that counts: {best[0]}, prior 1/{best[2][0]} frames 1/{best[2][1]} px, slack "
                    f"{'off' if best[3] is None else f'{best[3]:g}'}: {base / best[1]:.2f}x" if best and best[2] else "")
                 + f"; 2.5x needs at most {base / 2.5:.1f} s")
    return "\n".join(lines)
