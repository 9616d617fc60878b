"""ONNX Runtime backend: CPU by default; CUDA and TensorRT execution providers when installed."""
from __future__ import annotations

import numpy as np

from ..errors import EngineError
from .base import Engine

PROVIDER_ALIASES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}


def resolve_providers(requested: list[str] | tuple[str, ...]) -> list:
    """Map short names to ORT providers and check they exist: no silent fallback."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    names = [PROVIDER_ALIASES.get(p, p) for p in requested]
    missing = [n for n in names if n not in available]
    if missing:
        raise EngineError(f"requested ONNX Runtime providers {missing}, available {available} "
                          f"(install onnxruntime-gpu for CUDA/TensorRT, alone, not beside onnxruntime)")
    return names


class OrtEngine(Engine):
    def __init__(self, path: str, providers=("cpu",), threads: int | None = None, provider_options: dict | None = None,
                 profile_prefix: str | None = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
        if profile_prefix:  # per-node timings as Chrome-trace JSON, written by end_profiling()
            opts.enable_profiling = True
            opts.profile_file_prefix = profile_prefix
        names = resolve_providers(providers)
        with_options = [(n, (provider_options or {}).get(n, {})) for n in names]
        try:
            self.session = ort.InferenceSession(path, opts, providers=with_options)
        except Exception as e:  # ORT raises its own exception types; name the file
            raise EngineError(f"ONNX Runtime cannot load {path}: {e}") from None
        self.name = f"onnxruntime[{self.session.get_providers()[0]}]"
        self.path = path
        self._inputs = [i.name for i in self.session.get_inputs()]
        self._outputs = [o.name for o in self.session.get_outputs()]

    def end_profiling(self) -> str:
        """Stop profiling and return the trace file's path (see runtime.engines.ort_profile)."""
        return self.session.end_profiling()

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [n for n in self._inputs if n not in feeds]
        if missing:
            raise EngineError(f"{self.path}: feeds lack the graph inputs {missing[:4]}")
        try:
            return dict(zip(self._outputs, self.session.run(self._outputs, {n: feeds[n] for n in self._inputs})))
        except Exception as e:  # ORT's own exception types (shape, type, allocation): name the graph
            raise EngineError(f"ONNX Runtime failed running {self.path}: {str(e).splitlines()[0][:300]}") from None


def _shape_list(shapes: dict, which: int) -> str:
    return ",".join(f"{name}:{'x'.join(str(d) for d in triple[which])}" for name, triple in shapes.items())


def gpu_provider_options(profiles: dict[str, dict] | None, cache_dir: str | None, fp16: bool = False) -> dict:
    """ORT options for the TensorRT and CUDA execution providers of one graph.

    ``profiles`` (name -> input -> (min, opt, max), from ``profiles.derive_profiles``) become
    explicit TensorRT profiles (ORT accepts one entry per input per profile); engines and timing
    caches persist in ``cache_dir`` so a second session does not rebuild.
    """
    trt = {"trt_fp16_enable": fp16}
    if cache_dir:
        trt.update(trt_engine_cache_enable=True, trt_engine_cache_path=cache_dir,
                   trt_timing_cache_enable=True, trt_timing_cache_path=cache_dir)
    if profiles:
        per = list(profiles.values())
        trt.update(trt_profile_min_shapes=",".join(_shape_list(p, 0) for p in per),
                   trt_profile_opt_shapes=",".join(_shape_list(p, 1) for p in per),
                   trt_profile_max_shapes=",".join(_shape_list(p, 2) for p in per))
    return {"TensorrtExecutionProvider": trt, "CUDAExecutionProvider": {"device_id": 0}}
