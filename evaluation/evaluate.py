"""Accuracy against retention on the needle videos, through an exported artifact folder on the
torch-free runtime (ONNX Runtime by default).

Per video the primary's vision graph runs once and the assistant's prior once per assistant
setting; every (method, retention) then only compresses and runs the LLM. The answer is the first
generated token, compared with the answer word's token id. The hit rate is the share of the kept
visual tokens that lie in the temporal groups holding the answer.

Methods are the pipeline's (``--method`` of infer.py); ``assistant`` is "full" (DyToK prior at the
primary's frames and pixels), "reduced" (half the frames, a quarter of the pixels:
``runtime.pipeline.reduced_assistant``), "frames/F pixels/P" (the prior at 1/F of the frames and
1/P of the pixels; ``F:P`` on the command line) or "none" (uniform budgets). DyCoke's TTM takes no
budgets, so its rows do not depend on the assistant. FastV prunes inside the LLM, on the split
graphs of a folder exported with ``--fastv-layer`` (``runtime/llm_split.py``); its hit rate counts
the visual tokens layers >= K see. EVS without the assistant is vLLM's global rule, with it
DyToK+EVS. VidCom2 without the assistant is VidCom2 (its own budgets), with it DyToK+VidCom2;
``vidcom2-visionzip`` (VidCom2's budgets, VisionZip's selection) ignores the prior, so it has
rows without the assistant only. DART runs in the LLM like FastV (``dart``, split graphs) or on
the embeddings before it (``dart-embed``); with the assistant both take DyToK's per-group quotas.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, fields, replace

import numpy as np

from runtime.compression import METHODS, get_method
from runtime.compression.method import Request
from runtime.errors import DyTokError
from runtime.fileio import atomic_path
from runtime.options import Options
from runtime.pipeline import Pipeline, load_pipeline
from runtime.prefill_input import prefill_input, text_after
from synthetic.needle import FAMILY_ORDER, NeedleVideo, make_video, split_seed

from .prior_shapes import ASSISTANTS, assistant_options, prior_divisors, prior_shape

RETENTIONS = (1.0, 0.5, 0.25, 0.1, 0.05)


def wilson_interval(correct: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95% by default): ``correct`` successes of
    ``n`` -> (low, high). An accuracy on a few hundred videos sits near 0.9, where the normal
    approximation's interval is lopsided and can pass 1.0; Wilson's cannot."""
    if n <= 0:
        return 0.0, 1.0
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def with_interval(row: dict) -> dict:
    """``row`` with ``ci_low`` / ``ci_high``: the Wilson 95% interval of its accuracy over n."""
    low, high = wilson_interval(round(row["accuracy"] * row["n"]), row["n"])
    return dict(row, ci_low=low, ci_high=high)


@dataclass(frozen=True)
class Config:
    method: str  # the pipeline's method (infer.py --method)
    retention: float
    assistant: str  # full | reduced | none | frames/F pixels/P

    @property
    def label(self) -> str:
        if self.method == "none":
            return "none (all tokens)"
        prefix = {"full": "DyToK+", "reduced": "DyToK(reduced)+", "none": ""}.get(self.assistant)
        if prefix is None:
            prefix = "DyToK(prior 1/{} frames 1/{} px)+".format(*prior_divisors(self.assistant))
        method = get_method(self.method)
        return prefix + method.label + ("" if self.assistant != "none" or method.own_prior else " (no assistant)")


def grid(methods=METHODS, retentions=RETENTIONS, assistants=ASSISTANTS) -> list[Config]:
    """The grid, narrowed to the given methods, retentions and assistant settings: compressing
    methods x retention x assistant settings (without the assistant only the methods that are
    published baselines of their own, ``Method.baseline``; such a baseline that the prior does not
    change, ``uses_budgets`` False, only without it); a method with its own prior once per retention
    (no assistant runs); ``none`` once (all tokens)."""
    for m in methods:
        if m not in METHODS:
            raise DyTokError(f"method {m!r}: expected one of {', '.join(METHODS)}")
    assistants = list(dict.fromkeys(prior_shape(a) for a in assistants))
    for r in retentions:
        if not 0 < r <= 1:
            raise DyTokError(f"retention {r}: expected a value in (0, 1]")
    out = []
    for m in methods:
        if not get_method(m).compresses:
            out.append(Config(m, 1.0, "none"))
            continue
        for r in retentions:
            method = get_method(m)
            if method.own_prior:
                out.append(Config(m, float(r), "none"))
                continue
            for a in assistants:
                if a == "none" and not method.baseline:
                    continue
                if a != "none" and method.baseline and not method.uses_budgets:
                    continue  # the prior would change nothing: its rows would repeat the no-assistant ones
                out.append(Config(m, float(r), a))
    return out


def parse_options(pairs: list[str]) -> dict:
    """``KEY=VALUE`` strings -> ``Options`` overrides (values parsed as JSON, else kept as text)."""
    names = {f.name: f for f in fields(Options)}
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or key not in names:
            raise DyTokError(f"--set {pair!r}: expected KEY=VALUE with KEY one of {', '.join(names)}")
        try:
            out[key] = json.loads(value)
            if isinstance(out[key], list):  # Options fields take tuples
                out[key] = tuple(out[key])
        except json.JSONDecodeError:
            out[key] = value
    return out


def split_videos(n: int, start: int | None = None, split: str = "test") -> list[NeedleVideo]:
    """``n`` videos of ``split`` from seed index ``start`` (default 0); families rotate."""
    return [make_video(split_seed(split, (start or 0) + i)) for i in range(n)]


def score_video(pipe: Pipeline, video: NeedleVideo, configs: list[Config], base: Options) -> list[dict]:
    """One video through every config; the stages shared by configs (preprocessing, the primary's
    vision, each prior setting) run once, then ``Pipeline.answer``'s own steps (budgets, the
    method, the prefill input, the LLM) with greedy decoding of one token. Returns one dict per
    config: correct, hit (needle share of the kept tokens), kept tokens, the frame weights' needle share."""
    frames = video.sampled()
    primary_cfg = pipe.preprocess_config("primary", base.max_pixels, base.min_pixels)
    patches = pipe.preprocess("primary", frames.frames, primary_cfg)
    seq = pipe.sequence("primary", video.question, patches, pipe.seconds_per_group(frames))
    grid = pipe.merged_grid("primary", patches.grid_thw)
    per_group = grid[1] * grid[2]
    needle = np.zeros(grid[0], bool)
    needle[list(video.needle_groups)] = True
    vision = pipe.run_vision("primary", patches, base.vision_chunk)
    answer_id = pipe.prompt.tokenizer.token_to_id(video.answer)
    text = text_after(seq, pipe.tables["primary"])
    priors: dict[str, np.ndarray | None] = {"none": None}
    for a in {c.assistant for c in configs if get_method(c.method).compresses} - {"none"}:
        if not pipe.m.has_assistant:
            raise DyTokError("the artifact folder has no assistant: use --assistants none")
        opts = assistant_options(base, a, len(frames.frames), pipe.m.data["preprocess"]["max_pixels"])
        priors[a] = pipe.frame_prior(video.question, frames, opts, grid[0], (primary_cfg, patches))
    context = pipe.m.model("primary")["context_length"]
    answers: dict[bytes, int] = {}  # configs that keep the same tokens (e.g. all of them) share one LLM run
    out = []
    for cfg in configs:
        method = get_method(cfg.method)
        opts = replace(base, method=cfg.method, retention=cfg.retention, max_new_tokens=1)
        weights = priors[cfg.assistant] if method.compresses else None
        request = Request(grid, pipe.budgets(weights, grid, opts, method), opts.retention, opts.budget, weights is not None,
                          text, seq.start)
        kept = method.compress(vision, request)
        inp = prefill_input(seq, kept, pipe.tables["primary"], opts.max_new_tokens, context)
        source = inp.source
        key = None if method.in_llm or opts.dycoke_kv else hashlib.sha1(
            inp.source.tobytes() + np.ascontiguousarray(inp.visual, np.float32).tobytes()).digest()
        if key is None or key not in answers:
            ids, kept_visual = pipe.generate(inp, opts, request)
            if kept_visual is not None:  # FastV: the visual tokens layers >= K saw
                source = kept_visual
            if key is not None:
                answers[key] = ids[0]
            token = ids[0]
        else:
            token = answers[key]
        out.append({"correct": token == answer_id, "hit": float(needle[source // per_group].mean()),
                    "kept": len(source), "total": seq.n_visual, "token": int(token),
                    "prior_share": float(weights[needle].sum()) if weights is not None else float(needle.mean())})
    return out


def score_video_answer(pipe: Pipeline, video: NeedleVideo, configs: list[Config], base: Options) -> list[dict]:
    """One video through every config with the real ``Pipeline.answer`` (nothing shared), for
    options that change what the primary encoder sees (``encoder_slack``: each group at its own
    grid), which ``score_video``'s shared stages do not mirror. Hit = the budget's share on the
    needle groups; same dicts as ``score_video``."""
    frames = video.sampled()
    answer_id = pipe.prompt.tokenizer.token_to_id(video.answer)
    out = []
    for cfg in configs:
        opts = replace(base, method=cfg.method, retention=cfg.retention, max_new_tokens=1,
                       assistant=cfg.assistant != "none")
        opts = assistant_options(opts, cfg.assistant, len(frames.frames), pipe.m.data["preprocess"]["max_pixels"])
        r = pipe.answer(frames, video.question, opts)
        needle = np.zeros(len(r.budgets), bool)
        needle[list(video.needle_groups)] = True
        kept, total = r.visual_tokens
        out.append({"correct": r.token_ids[0] == answer_id, "hit": float(r.budgets[needle].sum() / r.budgets.sum()),
                    "kept": kept, "total": total, "token": int(r.token_ids[0]),
                    "prior_share": float(r.frame_weights[needle].sum()) if r.frame_weights is not None
                    else float(needle.mean())})
    return out


def evaluate(pipe: Pipeline, configs: list[Config], videos: list[NeedleVideo], base: Options = Options(),
             progress: bool = True) -> list[dict]:
    """Score ``configs`` on ``videos``. Returns one row per config: method, retention, assistant,
    accuracy (with its Wilson 95% interval ``ci_low`` / ``ci_high``), hit_rate, n, per-family
    accuracy and hit rate, mean kept tokens, prior share."""
    acc = defaultdict(list)
    bar = videos
    if progress:
        from tqdm import tqdm
        bar = tqdm(videos, desc="needle videos", unit="video")
    for v in bar:
        score = score_video if base.encoder_slack is None else score_video_answer
        for cfg, r in zip(configs, score(pipe, v, configs, base)):
            acc[cfg].append((v.family, r))
    rows = []
    for cfg in configs:
        res = acc[cfg]
        fam = {f: [r for g, r in res if g == f] for f in FAMILY_ORDER}
        rows.append({
            "method": cfg.method, "retention": cfg.retention, "assistant": cfg.assistant, "label": cfg.label,
            "accuracy": float(np.mean([r["correct"] for _, r in res])), "hit_rate": float(np.mean([r["hit"] for _, r in res])),
            "n": len(res),
            "accuracy_by_family": {f: float(np.mean([r["correct"] for r in rs])) for f, rs in fam.items() if rs},
            "hit_rate_by_family": {f: float(np.mean([r["hit"] for r in rs])) for f, rs in fam.items() if rs},
            "n_by_family": {f: len(rs) for f, rs in fam.items() if rs},
            "prior_share": float(np.mean([r["prior_share"] for _, r in res])),
            "chance_share": float(np.mean([len(v.needle_groups) / v.num_groups for v in videos])),
            "kept_tokens": float(np.mean([r["kept"] for _, r in res])),
            "total_tokens": float(np.mean([r["total"] for _, r in res])),
        })
    return [with_interval(r) for r in rows]


def merge(reports: list[dict]) -> dict:
    """Reports of disjoint video ranges (e.g. run in parallel) -> one report; means weighted by n."""
    out = dict(reports[0], videos=sum(r["videos"] for r in reports), wall_s=sum(r["wall_s"] for r in reports),
               first_seed_index=min(r["first_seed_index"] for r in reports),
               families={f: sum(r["families"].get(f, 0) for r in reports) for f in FAMILY_ORDER})
    rows = []
    for i, row in enumerate(reports[0]["rows"]):
        parts = [r["rows"][i] for r in reports]
        if any((p["method"], p["retention"], p["assistant"]) != (row["method"], row["retention"], row["assistant"]) for p in parts):
            raise DyTokError("reports to merge must have the same grid")
        n = sum(p["n"] for p in parts)
        new = dict(row, n=n)
        for key in ("accuracy", "hit_rate", "prior_share", "chance_share", "kept_tokens", "total_tokens"):
            new[key] = sum(p[key] * p["n"] for p in parts) / n
        for key in ("accuracy_by_family", "hit_rate_by_family"):
            new[key] = {f: sum(p[key].get(f, 0) * p["n_by_family"].get(f, 0) for p in parts)
                        / max(1, sum(p["n_by_family"].get(f, 0) for p in parts)) for f in FAMILY_ORDER}
        new["n_by_family"] = {f: sum(p["n_by_family"].get(f, 0) for p in parts) for f in FAMILY_ORDER}
        rows.append(with_interval(new))
    out["rows"] = rows
    return out


def plot(rows: list[dict], path: str, title: str = "") -> None:
    """Accuracy and hit rate against retention, one curve per (method, assistant)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = defaultdict(list)
    for r in rows:
        curves[(r["label"], r["method"], r["assistant"])].append(r)
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    styles = {"full": "-", "reduced": "--", "none": ":"}
    colours = {"visionzip": "tab:blue", "uniform": "tab:orange", "dycoke": "tab:green", "dyntok": "tab:red",
               "fastv": "tab:purple", "evs": "tab:brown", "vidcom2": "tab:pink", "vidcom2-visionzip": "tab:gray",
               "dart": "tab:olive", "dart-embed": "tab:cyan"}
    for (label, method, assistant), rs in sorted(curves.items()):
        rs = sorted(rs, key=lambda r: r["retention"])
        x = [r["retention"] for r in rs]
        for ax, key in zip(axes, ("accuracy", "hit_rate")):
            if method == "none":
                ax.axhline(rs[0][key], color="k", lw=1, alpha=0.5, label=label)
            else:
                ax.plot(x, [r[key] for r in rs], styles.get(assistant, "-."), marker="o", label=label,
                        color=colours.get(method))
    for ax, name in zip(axes, ("accuracy", "hit rate (kept tokens on the answer's groups)")):
        ax.set_xscale("log")
        ax.set_xticks(RETENTIONS, [str(r) for r in RETENTIONS])
        ax.set_xlabel("retention (share of visual tokens kept)")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    chance = rows[0].get("chance_share")
    if chance:
        axes[1].axhline(chance, color="grey", lw=1, ls="-.", label="chance (needle groups / groups)")
    axes[0].set_ylim(0, 1.02)
    axes[0].legend(fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def run(artifacts: str, n: int = 300, seed: int | None = None, split: str = "test", methods=METHODS,
        retentions=RETENTIONS, assistants=ASSISTANTS, overrides: dict | None = None, threads: int | None = 1,
        progress: bool = True, pipe: Pipeline | None = None) -> dict:
    """Load ``artifacts`` (on ONNX Runtime, unless ``pipe`` is the folder's pipeline on other
    engines), score the grid on ``n`` videos of ``split``; the report as a dict."""
    pipe = pipe or load_pipeline(artifacts, threads=threads)
    base = Options(**(overrides or {}))
    configs = grid(methods, retentions, assistants)
    vids = split_videos(n, seed, split)
    t0 = time.perf_counter()
    rows = evaluate(pipe, configs, vids, base, progress)
    for r in rows:
        r["options"] = dict(overrides or {})
        if base.encoder_slack is not None:  # what scripts/benchmark.py --accuracy joins on
            r["encoder_slack"] = base.encoder_slack
    engines = sorted({getattr(e, "name", type(e).__name__) for e in pipe.engines.values()})
    return {"artifacts": os.path.abspath(artifacts), "preset": pipe.m.data.get("preset"), "split": split,
            "engines": engines,
            "first_seed_index": seed or 0, "videos": n,
            "families": {f: sum(v.family == f for v in vids) for f in FAMILY_ORDER},
            "options": asdict(base), "wall_s": round(time.perf_counter() - t0, 1), "rows": rows}
