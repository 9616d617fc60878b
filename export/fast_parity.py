"""The PyTorch backend's fast path (SDPA attention, static-cache decode, CUDA graphs and
preprocessing on the device on CUDA) against its reference path (the exported attention
formulation, the past/present loop, NumPy preprocessing) on one device, fp32, on the tiny preset:
identical greedy tokens and patches, the prior within 1e-4. What ``scripts/gpu_bench.py`` checks
before it times anything."""
from __future__ import annotations

import os
import tempfile

import numpy as np

from runtime.options import Options
from runtime.video import sample_video, write_test_video

PRIOR_ATOL = 1e-4
# all tokens; DyToK+VisionZip with the assistant's prior; the methods that prune inside the LLM, which the
# fast path runs on the static cache (one captured decode step) and the reference on the two segments
CASES = ("none", "visionzip", "self", "fastv", "dart")


def fast_path_parity(device: str, work: str | None = None, log=print) -> dict:
    """{"ok": bool, "cases": {method: {"tokens_equal", "fast", "reference", "kept_equal"}},
    "preprocess_equal": bool, "prior_max_abs_diff": float}."""
    from .exporter import export_artifacts
    from .torch_engine import load_models, torch_pipeline
    from runtime.manifest import load_manifest

    work = work or tempfile.mkdtemp(prefix="dytok-parity-")
    folder = export_artifacts("tiny", os.path.join(work, "tiny"), torch_only=True, fastv_layer=2, device=device,
                              log=lambda *_: None)
    manifest = load_manifest(folder)
    models = load_models(manifest, device)
    fast = torch_pipeline(manifest, models, device, attention="sdpa", static_decode=True)
    reference = torch_pipeline(manifest, models, device, attention="plain", static_decode=False)
    reference.device_preprocess.clear()  # the NumPy reference
    clip = sample_video(write_test_video(os.path.join(work, "clip.mp4")), num_frames=8)
    question = "What moves in the video?"
    out = {"device": device, "cases": {}}
    for method in CASES:
        opts = Options(method=method, retention=0.25, max_new_tokens=8, min_pixels=16 * 784, max_pixels=64 * 784)
        a, b = fast.answer(clip, question, opts), reference.answer(clip, question, opts)
        out["cases"][method] = {"tokens_equal": a.token_ids == b.token_ids, "fast": a.token_ids, "reference": b.token_ids,
                                "kept_equal": bool(np.array_equal(a.kept_source, b.kept_source))}
        log(f"  parity {method}: tokens {'equal' if a.token_ids == b.token_ids else 'DIFFER'}")
    opts = Options(min_pixels=16 * 784, max_pixels=64 * 784)
    cfg = fast.preprocess_config("primary", opts.max_pixels, opts.min_pixels)
    mine, numpy_ref = fast.preprocess("primary", clip.frames, cfg), reference.preprocess("primary", clip.frames, cfg)
    got = mine.pixel_values if isinstance(mine.pixel_values, np.ndarray) else mine.pixel_values.cpu().numpy()
    out["preprocess_equal"] = bool(np.array_equal(got, numpy_ref.pixel_values))
    log(f"  parity preprocessing: patches {'identical' if out['preprocess_equal'] else 'DIFFER'}")
    groups = -(-len(clip.frames) // 2)
    diff = float(np.abs(fast.frame_prior(question, clip, opts, groups) - reference.frame_prior(question, clip, opts, groups)).max())
    out["prior_max_abs_diff"] = diff
    out["ok"] = (all(c["tokens_equal"] and c["kept_equal"] for c in out["cases"].values()) and diff <= PRIOR_ATOL
                 and out["preprocess_equal"])
    log(f"  parity prior: max abs diff {diff:.2e} (tolerance {PRIOR_ATOL:g}) -> {'ok' if out['ok'] else 'FAILED'}")
    return out
