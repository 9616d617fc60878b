"""Device memory and streams through cuda-python (no PyTorch): the TensorRT backend's allocator."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import EngineError


def cudart():
    """cuda-python's runtime module (``cuda.bindings.runtime`` since 12.6, ``cuda.cudart`` before)."""
    try:
        from cuda.bindings import runtime
        return runtime
    except ImportError:
        try:
            from cuda import cudart as runtime
            return runtime
        except ImportError:
            raise EngineError("the TensorRT backend needs cuda-python (pip install 'dytok-deploy[tensorrt]')") from None


def check(result):
    """Unpack a cuda-python call's (error, *values), raising EngineError on failure."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        rt = cudart()
        _, name = rt.cudaGetErrorName(err)
        raise EngineError(f"CUDA error {int(err)} ({name.decode() if isinstance(name, bytes) else name})")
    return values[0] if len(values) == 1 else tuple(values) or None


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: str  # "8.7" for Orin, "9.0" for H100/H200
    memory_bytes: int


def gpu_info(device: int = 0) -> GpuInfo:
    prop = check(cudart().cudaGetDeviceProperties(device))
    name = prop.name.decode() if isinstance(prop.name, bytes) else str(prop.name)
    return GpuInfo(name.strip("\x00"), f"{prop.major}.{prop.minor}", int(prop.totalGlobalMem))


class DeviceArray:
    """A device buffer with a shape and dtype. ``capacity`` bytes are allocated, so a buffer sized
    for the profile maximum (a KV cache) serves every smaller shape without reallocation."""

    def __init__(self, shape, dtype, capacity: int | None = None):
        self.dtype = np.dtype(dtype)
        self.shape = tuple(int(s) for s in shape)
        self.capacity = max(capacity or 0, self.nbytes, 1)
        self.ptr = int(check(cudart().cudaMalloc(self.capacity)))

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def reshape(self, shape) -> "DeviceArray":
        """Set a new logical shape within the allocation (no copy)."""
        need = int(np.prod(shape, dtype=np.int64)) * self.dtype.itemsize
        if need > self.capacity:
            raise EngineError(f"shape {tuple(shape)} needs {need} bytes, buffer holds {self.capacity}")
        self.shape = tuple(int(s) for s in shape)
        return self

    def upload(self, host: np.ndarray, stream) -> "DeviceArray":
        host = np.ascontiguousarray(host, self.dtype)
        self.reshape(host.shape)
        rt = cudart()
        check(rt.cudaMemcpyAsync(self.ptr, host.ctypes.data, host.nbytes, rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream))
        return self

    def download(self, stream) -> np.ndarray:
        host = np.empty(self.shape, self.dtype)
        rt = cudart()
        check(rt.cudaMemcpyAsync(host.ctypes.data, self.ptr, host.nbytes, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream))
        check(rt.cudaStreamSynchronize(stream))
        return host

    def free(self) -> None:
        if self.ptr:
            check(cudart().cudaFree(self.ptr))
            self.ptr = 0
