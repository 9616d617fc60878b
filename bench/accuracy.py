"""Joining speed rows with the needle accuracy of the same configuration (``scripts/evaluate.py`` rows)."""
from __future__ import annotations

from evaluation.prior_shapes import REDUCED_PRIOR, prior_setting

from .configs import prior_scale


def accuracy_key(method: str, retention: float, assistant, variant: str = "fp32", encoder_slack=None) -> tuple:
    """What joins a speed row with an accuracy row: method, retention, prior setting
    ("none" or "frames/F pixels/P"), weights variant and encoder slack."""
    return (method, round(float(retention), 4), str(assistant), variant or "fp32",
            None if encoder_slack is None else round(float(encoder_slack), 4))


def row_accuracy_key(row: dict) -> tuple:
    if not row["assistant"] or row["method"] == "none":
        prior = "none"
    else:
        prior = prior_setting(prior_scale(row))
    return accuracy_key(row["method"], 1.0 if row["method"] == "none" else row["retention"], prior,
                        row.get("variant", "fp32"), row.get("encoder_slack"))


def accuracy_table(accuracy_rows: list[dict]) -> dict[tuple, dict]:
    """Accuracy rows keyed by ``accuracy_key``. Rows carry method, retention, assistant ("none",
    "full", "reduced" or "frames/F pixels/P" as scripts/evaluate.py writes them, or true/false),
    and optionally variant and encoder_slack."""
    table = {}
    for a in accuracy_rows:
        assistant = a.get("assistant", "none")
        assistant = {"full": True, "reduced": prior_setting(REDUCED_PRIOR)}.get(assistant, assistant)  # evaluate.py's names
        if assistant is True:
            assistant = prior_setting((1, 1))
        elif assistant is False or a.get("method") == "none":
            assistant = "none"
        retention = 1.0 if a.get("method") == "none" else a["retention"]
        table[accuracy_key(a["method"], retention, assistant, a.get("variant", "fp32"), a.get("encoder_slack"))] = a
    return table


def join_accuracy(report: dict, accuracy_rows: list[dict]) -> int:
    """Add ``accuracy`` (and its n, interval) to every speed row whose configuration has an
    accuracy row (``accuracy_table``); returns how many joined."""
    table = accuracy_table(accuracy_rows)
    joined = 0
    for row in report["configs"]:
        if "skipped" in row or row["backend"] != "runtime" and row["method"] != "none":
            continue
        hit = table.get(row_accuracy_key(row)) if row["backend"] == "runtime" else \
            table.get(accuracy_key("none", 1.0, "none"))  # eager full tokens: the fp32 full-token accuracy
        if hit:
            row["accuracy"] = {k: hit[k] for k in ("accuracy", "n", "ci_low", "ci_high", "split") if k in hit}
            joined += 1
    return joined
