"""The benchmark's rows: which method, retention, prior shape, weights variant and engine each runs."""
from __future__ import annotations

import os
from dataclasses import dataclass

from evaluation.prior_shapes import REDUCED_PRIOR
from runtime.errors import ManifestError
from runtime.manifest import load_manifest


@dataclass(frozen=True)
class Config:
    name: str
    backend: str  # eager | runtime
    method: str
    retention: float
    assistant: bool
    assistant_reduced: bool = False  # half the frames, a quarter of the pixels for the prior
    dycoke_kv: bool = False  # DyCoke's decode-time KV pruning (split LLM graphs, plain attention)
    attn: str | None = None  # eager rows: transformers attention for this row (None: the run's, sdpa by default)
    variant: str = "fp32"  # runtime rows: which artifact folder (fp32, or a quantized one from `variants`)
    encoder_slack: float | None = None  # budget-aware encoder resolution (runtime/encoder_plan.py)
    assistant_scale: tuple[int, int] | None = None  # (frames divisor, pixels divisor) of the prior; overrides _reduced


def default_configs() -> list[Config]:
    return [
        Config("eager full", "eager", "none", 1.0, False),
        Config("eager full, eager attention", "eager", "none", 1.0, False, attn="eager"),
        Config("eager DyToK+VisionZip 25%", "eager", "visionzip", 0.25, True),
        Config("runtime full", "runtime", "none", 1.0, False),
        Config("runtime DyToK+VisionZip 50%", "runtime", "visionzip", 0.5, True),
        Config("runtime DyToK+VisionZip 25%", "runtime", "visionzip", 0.25, True),
        Config("runtime DyToK+VisionZip 10%", "runtime", "visionzip", 0.1, True),
        Config("runtime DyToK+uniform 25%", "runtime", "uniform", 0.25, True),
        Config("runtime DyToK+DyCoke 25%", "runtime", "dycoke", 0.25, True),
        Config("runtime DyToK+DynTok 25%", "runtime", "dyntok", 0.25, True),
        Config("runtime DyToK+VisionZip 25%, assistant reduced", "runtime", "visionzip", 0.25, True, True),
        Config("runtime VisionZip 25%, no assistant", "runtime", "visionzip", 0.25, False),
        *compression_in_llm_configs(),
        *vidcom2_dart_configs(),
    ]


def compression_in_llm_configs() -> list[Config]:
    """FastV, DyCoke's KV step and EVS: need a folder exported with --fastv-layer K (FastV, DyCoke
    KV) and plain attention (DyCoke KV); otherwise their rows say why they skipped."""
    return [
        Config("runtime DyToK+FastV 25%", "runtime", "fastv", 0.25, True),
        Config("runtime FastV 25%, no assistant", "runtime", "fastv", 0.25, False),
        Config("runtime DyToK+EVS 25%", "runtime", "evs", 0.25, True),
        Config("runtime EVS 25%, no assistant", "runtime", "evs", 0.25, False),
        Config("runtime DyToK+DyCoke 25% + DyCoke KV", "runtime", "dycoke", 0.25, True, dycoke_kv=True),
    ]


def vidcom2_dart_configs() -> list[Config]:
    """VidCom2 (vLLM's pruner) and DART in both placements (in the LLM, as in the paper; on the
    embeddings, as TensorRT-Edge-LLM), each with and without the prior, at 25%. In-LLM DART needs
    a folder exported with --fastv-layer K (it prunes at that K) whose split carries the final norm."""
    return [
        Config("runtime DyToK+VidCom2 25%", "runtime", "vidcom2", 0.25, True),
        Config("runtime VidCom2 25%, no assistant", "runtime", "vidcom2", 0.25, False),
        Config("runtime DyToK+DART 25%", "runtime", "dart", 0.25, True),
        Config("runtime DART 25%, no assistant", "runtime", "dart", 0.25, False),
        Config("runtime DyToK+DART-embed 25%", "runtime", "dart-embed", 0.25, True),
        Config("runtime DART-embed 25%, no assistant", "runtime", "dart-embed", 0.25, False),
    ]


def variant_configs(variant: str, slack: float = 1.0, prior: tuple[int, int] = REDUCED_PRIOR) -> list[Config]:
    """Rows for one quantized CPU folder: full tokens, and DyToK+VisionZip with the cheap prior
    (``prior`` = frames, pixels divisors) and budget-aware encoder resolution at ``slack``; DyToK
    with uniform selection inside each group (no merged tokens) and DyToK+DynTok at 25% and 10%
    with both."""
    tag = f"prior 1/{prior[0]} frames 1/{prior[1]} px"
    return [
        Config(f"runtime full [{variant}]", "runtime", "none", 1.0, False, variant=variant),
        Config(f"runtime DyToK+VisionZip 25%, {tag} [{variant}]", "runtime", "visionzip", 0.25, True,
               variant=variant, assistant_scale=prior),
        Config(f"runtime DyToK+VisionZip 25%, {tag}, encoder slack {slack:g} [{variant}]", "runtime", "visionzip", 0.25,
               True, variant=variant, encoder_slack=slack, assistant_scale=prior),
        Config(f"runtime DyToK+VisionZip 10%, {tag}, encoder slack {slack:g} [{variant}]", "runtime", "visionzip", 0.1,
               True, variant=variant, encoder_slack=slack, assistant_scale=prior),
        Config(f"runtime VisionZip 25%, no assistant, encoder slack {slack:g} [{variant}]", "runtime", "visionzip", 0.25,
               False, variant=variant, encoder_slack=slack),
        *[Config(f"runtime DyToK+uniform {round(100 * r)}%, {tag}, encoder slack {slack:g} [{variant}]", "runtime",
                 "uniform", r, True, variant=variant, encoder_slack=slack, assistant_scale=prior) for r in (0.25, 0.1)],
        *[Config(f"runtime DyToK+DynTok {round(100 * r)}%, {tag}, encoder slack {slack:g} [{variant}]", "runtime",
                 "dyntok", r, True, variant=variant, encoder_slack=slack, assistant_scale=prior) for r in (0.25, 0.1)],
    ]


# the CPU speed forms of calibration/ort_quant.py and the graphs each quantizes for the benchmark
VARIANT_ROLES = {"dynamic-int8": ("primary_vision", "primary_llm", "assistant_vision", "assistant_prior"),
                 "int4": ("primary_vision", "primary_llm", "assistant_vision", "assistant_prior")}


def quantized_folder(folder: str, mode: str, log=print) -> str:
    """``<folder>-<mode>``: the artifact folder quantized by ``mode`` (made if missing or stale)."""
    from calibration.ort_quant import quantize_artifacts

    if mode not in VARIANT_ROLES:
        raise ManifestError(f"variant {mode!r}: expected one of {sorted(VARIANT_ROLES)}")
    out = f"{folder.rstrip('/')}-{mode}"
    try:
        q = load_manifest(out, verify_hashes=False)
        if q.data.get("quantization", {}).get("from") == os.path.abspath(folder):
            return out
    except (ManifestError, OSError):
        pass
    log(f"quantizing {folder} -> {out} ({mode})")
    quantize_artifacts(folder, out, mode, roles=VARIANT_ROLES[mode], log=log)
    return out


def prior_scale(cfg: Config | dict) -> tuple[int, int]:
    """(frames divisor, pixels divisor) of the assistant's prior for a row (a Config or its dict)."""
    get = cfg.get if isinstance(cfg, dict) else lambda k: getattr(cfg, k)
    return tuple(get("assistant_scale") or (REDUCED_PRIOR if get("assistant_reduced") else (1, 1)))
