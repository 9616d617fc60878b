"""What every command shares: the default model (the needle demo export, made on first use), quiet
third-party libraries unless -v, the help format, and one line about what a model can answer."""
from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings

from serving.config import DEFAULT_ARTIFACTS

DEFAULT_PRESET = "needle"
DEFAULT_SPLIT = 2  # the default model's LLM split, so that fastv, dart and self run on it (K = 2 won on validation)


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The module docstring as written, and every option's default after its sentence (an option
    with no value by default says what happens then in its sentence)."""

    def _get_help_string(self, action):
        if action.default in (None, False) or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


def parser(doc: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=doc, formatter_class=HelpFormatter)
    ap.add_argument("-v", "--verbose", action="store_true", help="show third-party warnings and progress bars")
    return ap


def quiet(verbose: bool = False) -> None:
    """Silence transformers/huggingface_hub/torch warnings and progress bars on the normal path
    (before they are imported); ``verbose`` leaves them on."""
    if verbose:
        return
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("TORCH_LOGS", "-onnx")  # torch.onnx logs a line per missing torchvision op at export
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    for name in ("transformers", "huggingface_hub", "torch", "onnxscript", "onnx_ir", "modelopt"):
        logging.getLogger(name).setLevel(logging.ERROR)


def artifacts_or_default(folder: str | None, preset: str | None = None) -> str:
    """``folder``, or the default model's folder; a missing folder whose preset is known (the
    default's, ``preset``, or the folder's own name) is exported first, with one line on stderr."""
    folder = folder or DEFAULT_ARTIFACTS
    if os.path.isfile(os.path.join(folder, "manifest.json")):
        return folder
    name = preset or (DEFAULT_PRESET if folder == DEFAULT_ARTIFACTS else os.path.basename(os.path.normpath(folder)))
    try:
        from export.exporter import export_artifacts  # noqa: F401  (the export extra is installed)
        from export.presets import PRESETS
    except ImportError:
        raise SystemExit(f"error: no artifact folder at {folder}; exporting one needs the export extra "
                         f"(pip install -e '.[export]'), or pass --artifacts DIR") from None
    if name not in PRESETS:
        raise SystemExit(f"error: no artifact folder at {folder} (no manifest.json); export one with "
                         f"scripts/export.py --model <preset> --out {folder}")
    print(f"note: exporting the {name} model to {folder} (first use, about a minute) ...", file=sys.stderr, flush=True)
    export_preset(name, folder, log=lambda *_: None)
    return folder


def export_preset(name: str, folder: str, log=print) -> str:
    """``export_artifacts`` of preset ``name``; the default model with its LLM split (``DEFAULT_SPLIT``)."""
    from export.exporter import export_artifacts

    return export_artifacts(name, folder, fastv_layer=DEFAULT_SPLIT if name == DEFAULT_PRESET else None, log=log)


def model_note(manifest) -> str | None:
    """One line when the model cannot answer real questions: random weights, or the needle demo."""
    preset = manifest.data.get("preset", "")
    if not any((manifest.data.get("checkpoints") or {}).values()):
        real = "llava-onevision-qwen2-7b-ov" if manifest.data.get("family") == "llava_onevision" else "qwen2.5-vl-7b"
        return (f"{preset} has random weights: its answers are not text. For real videos export a checkpoint: "
                f"scripts/export.py --model {real} --checkpoint DIR")
    if preset == "needle":
        return ("the default model is the 2M-parameter needle demo: it only answers needle questions (What colour "
                "is the star? How many red circles are there? Which appeared first, the circle or the triangle?); "
                "for real videos export a Qwen2.5-VL checkpoint (README: your own video)")
    return None


TORCH_DTYPES = ("float32", "bfloat16", "float16")


def torch_backend_pipeline(folder: str, device: str = "cpu", dtype: str | None = None):
    """The pipeline on PyTorch engines (the export extra), weights in ``dtype`` (default: the
    folder's own). One clear error where torch or the device is missing."""
    from runtime.errors import EngineError
    from runtime.manifest import load_manifest
    if dtype is not None and dtype not in TORCH_DTYPES:
        raise EngineError(f"--dtype {dtype}: expected one of {', '.join(TORCH_DTYPES)}")
    try:
        import torch
        from export.torch_engine import torch_pipeline
    except ImportError as e:
        raise EngineError(f"the torch backend needs the export extra (pip install -e '.[export]'): {e}") from None
    if device == "cuda" and not torch.cuda.is_available():
        raise EngineError("--device cuda: torch sees no CUDA device")
    return torch_pipeline(load_manifest(folder), device=device, dtype=getattr(torch, dtype) if dtype else None)
