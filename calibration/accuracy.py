"""Accuracy of a quantized artifact folder against fp32, on held-out clips.

Vision: cosine similarity of visual tokens (row-wise). LLM: top-1 agreement and KL divergence
of next-token distributions, from the same recorded feeds (so both models see identical inputs).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from runtime.compare import cosine
from runtime.engines.base import Engine

from .dataset import CalibrationSet


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def kl_divergence(reference_logits: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """KL(p_ref || p) in nats per row. [N, V], [N, V] -> [N]"""
    lp, lq = log_softmax(reference_logits), log_softmax(logits)
    return (np.exp(lp) * (lp - lq)).sum(-1)


def top1_agreement(reference_logits: np.ndarray, logits: np.ndarray) -> float:
    return float((np.argmax(reference_logits, -1) == np.argmax(logits, -1)).mean())


@dataclass
class AccuracyReport:
    vision_cosine_mean: float | None = None
    vision_cosine_min: float | None = None
    top1_agreement: float | None = None
    kl_mean: float | None = None
    kl_max: float | None = None
    samples: dict | None = None

    def lines(self) -> list[str]:
        out = []
        if self.vision_cosine_mean is not None:
            out.append(f"visual tokens cosine: mean {self.vision_cosine_mean:.5f}, min {self.vision_cosine_min:.5f}")
        if self.top1_agreement is not None:
            out.append(f"next-token top-1 agreement {self.top1_agreement:.3f}, KL mean {self.kl_mean:.5f} max {self.kl_max:.5f} nats")
        return out


def accuracy_report(reference: dict[str, Engine], candidate: dict[str, Engine], calib: CalibrationSet,
                    split: str = "heldout") -> AccuracyReport:
    """Run both engine sets on the recorded feeds of ``split`` and compare their outputs."""
    report = AccuracyReport(samples={})
    if "primary_vision" in candidate:
        cos = [cosine(reference["primary_vision"].run(f)["tokens"], candidate["primary_vision"].run(f)["tokens"], axis=-1)
               for f in calib.feeds("primary_vision", split)]
        if cos:
            cos = np.concatenate(cos)
            report.vision_cosine_mean, report.vision_cosine_min = float(cos.mean()), float(cos.min())
            report.samples["primary_vision"] = len(cos)
    ref_logits, cand_logits = [], []
    for f in calib.feeds("primary_llm", split):
        ref_logits.append(reference["primary_llm"].run(f)["logits"])
        cand_logits.append(candidate["primary_llm"].run(f)["logits"])
    if ref_logits:
        r, c = np.concatenate(ref_logits), np.concatenate(cand_logits)
        kl = kl_divergence(r, c)
        report.top1_agreement, report.kl_mean, report.kl_max = top1_agreement(r, c), float(kl.mean()), float(kl.max())
        report.samples["primary_llm"] = len(r)
    return report
