"""A benchmark report: its header line, the table (compact for a terminal, or Markdown), the plot,
and reading saved runs and accuracy rows back."""
from __future__ import annotations

import json

import numpy as np

from runtime.errors import DyTokError

from .host import describe

STAGES = ("decode_video", "preprocess", "assistant", "vision", "compress", "prefill", "decode")


def read_json(path: str, option: str):
    """The JSON in ``path``; a DyTokError naming ``option`` if it cannot be read or parsed."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise DyTokError(f"{option} {path}: not a readable JSON file ({e})") from None


def load_report(path: str) -> dict:
    """A run saved with --json."""
    report = read_json(path, "--report")
    if not isinstance(report, dict) or "configs" not in report or "machine" not in report:
        raise DyTokError(f"--report {path}: not a benchmark run (no configs/machine; write one with --json)")
    return report


def load_accuracy(path: str) -> list[dict]:
    """scripts/evaluate.py rows (a report, or a list of rows)."""
    rows = read_json(path, "--accuracy")
    return rows.get("rows", rows) if isinstance(rows, dict) else rows


def header(report: dict, saved: str | None = None) -> str:
    """The run's one-line description: model, frames, hardware, versions, backends."""
    m = report["machine"]
    return (f"{report['model']} (+{report['assistant']}), {report['frames']} frames, {report['max_new_tokens']} new tokens, "
            f"medians of {report['runs']} runs after {report['warmup']} warm-up | {describe(m)}, "
            f"torch {m['torch']} ({m.get('torch_threads')} threads), onnxruntime {m['onnxruntime']}, transformers {m['transformers']}"
            + (f" | {m['gpu']}" if report.get("device") == "cuda" and "gpu" in m else "")
            + f" | runtime rows on {report['runtime_backend']} (LLM attention: {report['llm_attention']}), "
              f"eager attention {report['attn']}" + (f" | saved run {saved}" if saved else ""))


def _baseline(report: dict) -> dict:
    """The eager full-token row, else the first measured one (a row of ones when none was measured)."""
    measured = [r for r in report["configs"] if "skipped" not in r]
    return next((r for r in measured if r["backend"] == "eager" and r["method"] == "none"),
                measured[0] if measured else {"e2e_s": float("nan"), "ttft_s": float("nan")})


def _accuracy_cell(a: dict | None, interval: bool = True) -> str:
    if not a:
        return ""
    return f"{100 * a['accuracy']:.1f}" + (f" [{100 * a['ci_low']:.1f}, {100 * a['ci_high']:.1f}]"
                                           if interval and "ci_low" in a else "") + (f" ({a['n']})" if "n" in a else "")


def markdown_table(report: dict) -> str:
    rows = report["configs"]
    measured = [r for r in rows if "skipped" not in r]
    base = _baseline(report)
    gpu = any("peak_gpu_mb" in r for r in measured)
    acc = any("accuracy" in r for r in measured)
    head = ["configuration", "engine", "visual tokens", "TTFT s", "end-to-end s", "speed-up vs eager full", "TTFT speed-up",
            "decode tok/s", "assistant s", "vision s", "prefill s", "time / FLOPs floor"] + (["peak GPU MB"] if gpu else []) \
        + (["needle accuracy % [95% CI] (n)"] if acc else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['name']} | skipped: {r['skipped']} |" + " |" * (len(head) - 2))
            continue
        s = r["stages_s"]
        cells = [r["name"], r.get("engine", ""), f"{r['visual_tokens']}/{r['visual_tokens_total']}", f"{r['ttft_s']:.3f}",
                 f"{r['e2e_s']:.3f}", f"{base['e2e_s'] / r['e2e_s']:.2f}x", f"{base['ttft_s'] / r['ttft_s']:.2f}x",
                 f"{r['decode_tokens_per_s']:.1f}",
                 f"{s['assistant']:.3f}", f"{s['vision']:.3f}", f"{s['prefill']:.3f}", f"{r['over_floor']:.2f}"]
        if gpu:
            cells.append(f"{r.get('peak_gpu_mb', 0):.0f}")
        if acc:
            cells.append(_accuracy_cell(r.get("accuracy")))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def terminal_table(report: dict, width: int = 44) -> str:
    """The same rows in fixed-width columns for a terminal: name, kept tokens, end to end and TTFT
    with their ratios to the baseline, decode rate, time over the FLOPs floor, accuracy."""
    base = _baseline(report)
    acc = any("accuracy" in r for r in report["configs"])
    head = f"{'configuration':<{width}} {'tokens':>11} {'e2e s':>8} {'x':>6} {'TTFT s':>8} {'x':>6} {'tok/s':>7} {'/floor':>6}"
    lines = [head + ("  accuracy %" if acc else ""), "-" * (len(head) + (12 if acc else 0))]
    for r in report["configs"]:
        name = r["name"] if len(r["name"]) <= width else r["name"][: width - 1] + "~"
        if "skipped" in r:
            lines.append(f"{name:<{width}} skipped: {r['skipped']}")
            continue
        line = (f"{name:<{width}} {r['visual_tokens']:>5}/{r['visual_tokens_total']:<5} {r['e2e_s']:>8.3f} "
                f"{base['e2e_s'] / r['e2e_s']:>5.2f}x {r['ttft_s']:>8.3f} {base['ttft_s'] / r['ttft_s']:>5.2f}x "
                f"{r['decode_tokens_per_s']:>7.1f} {r['over_floor']:>6.2f}")
        lines.append(line + (f"  {_accuracy_cell(r.get('accuracy'), interval=False)}" if acc else ""))
    return "\n".join(lines)


def plot(report: dict, path: str) -> None:
    """Stacked seconds per stage, one bar per measured row (PNG, written atomically)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from runtime.fileio import atomic_path

    rows = [r for r in report["configs"] if "skipped" not in r]
    fig, ax = plt.subplots(figsize=(11, 0.5 * len(rows) + 1.5))
    left = np.zeros(len(rows))
    for stage in STAGES:
        vals = np.array([r["stages_s"][stage] for r in rows])
        ax.barh(range(len(rows)), vals, left=left, label=stage)
        left += vals
    ax.set_yticks(range(len(rows)), [r["name"] for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel("seconds (median per stage)")
    ax.set_title(f"{report['model']} on {report['machine'].get('cpu_model') or report['machine']['processor']}, "
                 f"{report['frames']} frames, {report['max_new_tokens']} new tokens")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
