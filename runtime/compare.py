"""Compare named outputs with per-output tolerances: max abs/rel diff and cosine. Truthy on pass."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class OutputDiff:
    name: str
    shape_ok: bool
    max_abs: float
    max_rel: float
    cosine: float
    atol: float

    @property
    def ok(self) -> bool:
        return self.shape_ok and self.max_abs <= self.atol

    def __str__(self) -> str:
        mark = "ok" if self.ok else "FAIL"
        if not self.shape_ok:
            return f"[{mark}] {self.name}: shape mismatch"
        return f"[{mark}] {self.name}: max abs {self.max_abs:.3g} (atol {self.atol:.3g}), max rel {self.max_rel:.3g}, cosine {self.cosine:.6f}"


def cosine(a: np.ndarray, b: np.ndarray, axis: int | None = None):
    """Cosine similarity in float64: of the two arrays flattened (``axis`` None -> float), or of
    matching slices along ``axis`` (e.g. -1: row-wise, [N, D] -> [N]). Two zero vectors are equal
    (1.0); a zero vector against a non-zero one scores 0.0."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if axis is None:
        a, b, axis = a.ravel(), b.ravel(), -1
    dot = (a * b).sum(axis)
    den = np.linalg.norm(a, axis=axis) * np.linalg.norm(b, axis=axis)
    both_zero = (np.abs(a).sum(axis) == 0) & (np.abs(b).sum(axis) == 0)
    out = np.where(den > 0, dot / np.where(den > 0, den, 1.0), np.where(both_zero, 1.0, 0.0))
    return float(out) if out.ndim == 0 else out


class Report(list):
    def __bool__(self) -> bool:
        return all(d.ok for d in self)

    def __str__(self) -> str:
        return "\n".join(str(d) for d in self)


def compare_outputs(got: dict, want: dict, atol: float | dict = 1e-5) -> Report:
    report = Report()
    for name, w in want.items():
        g = np.asarray(got[name], np.float64)
        w = np.asarray(w, np.float64)
        tol = atol[name] if isinstance(atol, dict) else atol
        if g.shape != w.shape:
            report.append(OutputDiff(name, False, np.inf, np.inf, 0.0, tol))
            continue
        diff = np.abs(g - w)
        max_abs = float(diff.max()) if diff.size else 0.0
        max_rel = float((diff / np.maximum(np.abs(w), 1e-12)).max()) if diff.size else 0.0
        report.append(OutputDiff(name, True, max_abs, max_rel, cosine(g, w), tol))
    return report
