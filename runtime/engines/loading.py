"""The engines of an artifact folder, per backend: ONNX Runtime (with its providers) or native
TensorRT engines."""
from __future__ import annotations

import os

from ..manifest import Manifest
from .base import Engine, check_io


def load_engines(manifest: Manifest, providers=("cpu",), threads: int | None = None, profile_dir: str | None = None,
                 backend: str = "onnxruntime", trt_cache: str | None = None, fp16: bool = False) -> dict[str, Engine]:
    """Role -> engine for every graph of ``manifest``.

    backend "onnxruntime": ``providers`` cpu/cuda/tensorrt (the TensorRT EP gets explicit profiles
    from the manifest, an engine cache in ``trt_cache`` and ``fp16``); ``profile_dir``: ORT
    per-node traces. backend "tensorrt": native engines from scripts/build_engines.py.
    """
    manifest.require_onnx(f"the {backend} backend")
    if backend == "tensorrt":
        from .tensorrt import tensorrt_engines
        return tensorrt_engines(manifest)
    if backend != "onnxruntime":
        raise ValueError(f"backend {backend!r}: expected onnxruntime or tensorrt")
    from .ort import OrtEngine, gpu_provider_options

    profiles = {}
    if "tensorrt" in providers:
        from .profiles import derive_profiles
        profiles = derive_profiles(manifest)
    engines = {}
    for role, entry in manifest.data["graphs"].items():
        options = gpu_provider_options(profiles.get(role), trt_cache, fp16) if profiles else None
        engines[role] = OrtEngine(manifest.onnx_path(role), providers, threads, options,
                                  os.path.join(profile_dir, role) if profile_dir else None)
        check_io(role, engines[role], entry)
    return engines
