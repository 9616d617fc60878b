"""The engine interface every backend implements (ONNX Runtime, TensorRT, PyTorch eager).

``run`` takes and returns NumPy arrays by name. Returned arrays belong to the caller: a backend
that reuses buffers must copy before returning. The one exception is an output a backend keeps
on its device (the LLM's KV cache as a TensorRT ``DeviceArray`` or a torch tensor): the caller
only feeds it back to the same engine, or reads it through ``host``.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod

import numpy as np


class Engine(ABC):
    """Subclasses set ``_inputs`` and ``_outputs`` (tensor names, in graph order) and ``_run``."""
    name: str = "engine"
    last_latency_s: float = 0.0
    _inputs: list[str]
    _outputs: list[str]

    @property
    def input_names(self) -> list[str]:
        return self._inputs

    @property
    def output_names(self) -> list[str]:
        return self._outputs

    @abstractmethod
    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        t0 = time.perf_counter()
        out = self._run(feeds)
        self.last_latency_s = time.perf_counter() - t0
        return out

    def host(self, value) -> np.ndarray:
        """An output of this engine as a host array (a copy where it was kept on the device)."""
        return np.asarray(value)

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def check_io(role: str, engine: Engine, entry: dict) -> None:
    """The engine's tensor names against the manifest's I/O table: a graph file swapped for another
    role's, or a table edited, is one clear error at load time instead of a failure mid-run."""
    from ..errors import EngineError

    for kind, have in (("inputs", engine.input_names), ("outputs", engine.output_names)):
        want = [t["name"] for t in entry[kind]]
        if sorted(have) != sorted(want):
            raise EngineError(f"graph {role}: the engine's {kind} {sorted(have)[:6]} do not match the manifest's "
                              f"{sorted(want)[:6]} (a swapped or edited graph file?); re-run scripts/export.py")
