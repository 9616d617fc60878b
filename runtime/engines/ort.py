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
    def __init__(self, path: str, providers=("cpu",), threads: int | None = None, provider_options: dict | None = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
        names = resolve_providers(providers)
        with_options = [(n, (provider_options or {}).get(n, {})) for n in names]
        try:
            self.session = ort.InferenceSession(path, opts, providers=with_options)
        except Exception as e:  # ORT raises its own exception types; name the file
            raise EngineError(f"ONNX Runtime cannot load {path}: {e}") from None
        self.name = f"onnxruntime[{self.session.get_providers()[0]}]"
        self._inputs = [i.name for i in self.session.get_inputs()]
        self._outputs = [o.name for o in self.session.get_outputs()]

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self._outputs, self.session.run(self._outputs, {n: feeds[n] for n in self._inputs})))
