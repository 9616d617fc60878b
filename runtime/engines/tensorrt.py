"""Native TensorRT backend (TensorRT Python API + cuda-python; no PyTorch).

Engines come from ``scripts/build_engines.py``, which records in the manifest, per graph, the
engine file and its hash, the ONNX graph's hash, the TensorRT version, the GPU and the profiles.
Loading checks that record first, so an engine built for another GPU, another TensorRT or
another export fails with an error that says to rebuild, not with TensorRT's own deserialiser.

Inputs may be NumPy arrays (uploaded) or ``DeviceArray`` outputs of a previous call (used in
place). Outputs listed in ``keep_on_device`` come back as ``DeviceArray``: the LLM's present KV
is written into buffers preallocated at the profile maximum and fed back as the next past
without leaving the GPU. Two buffer sets alternate, so a device output stays valid until the
call after next.
"""
from __future__ import annotations

import os

import numpy as np

from ..errors import EngineError
from ..manifest import Manifest, sha256_file
from .base import Engine
from .cuda_mem import DeviceArray, GpuInfo, check, cudart, gpu_info
from .profiles import check_shapes_fit

REBUILD = "rebuild with: python scripts/build_engines.py --artifacts {folder}"


def check_engine_record(record: dict | None, role: str, graph: dict, trt_version: str, gpu: GpuInfo, folder: str) -> None:
    """Refuse an engine built from another graph, with another TensorRT or for another GPU."""
    hint = REBUILD.format(folder=folder)
    if not record:
        raise EngineError(f"no TensorRT engine for {role!r} in {folder}; {hint}")
    if record.get("onnx_sha256") != graph["sha256"]:
        raise EngineError(f"TensorRT engine for {role!r} was built from another export of the graph; {hint}")
    if record.get("tensorrt") != trt_version:
        raise EngineError(f"TensorRT engine for {role!r} was built with TensorRT {record.get('tensorrt')}, "
                          f"this is {trt_version}; {hint}")
    if record.get("compute_capability") != gpu.compute_capability or record.get("gpu") != gpu.name:
        raise EngineError(f"TensorRT engine for {role!r} was built for {record.get('gpu')} (sm {record.get('compute_capability')}), "
                          f"this GPU is {gpu.name} (sm {gpu.compute_capability}); {hint}")


class TensorRTEngine(Engine):
    def __init__(self, manifest: Manifest, role: str, keep_on_device: tuple[str, ...] = (), device: int = 0):
        try:
            import tensorrt as trt
        except ImportError:
            raise EngineError("TensorRT is not installed: install it from NVIDIA's index or JetPack "
                              "(README: 'Jetson'); CI never installs it") from None
        record = manifest.data.get("engines", {}).get("tensorrt", {}).get(role)
        check_engine_record(record, role, manifest.graph(role), trt.__version__, gpu_info(device), manifest.folder)
        path = manifest.path(record["file"])
        if not os.path.isfile(path) or sha256_file(path) != record["sha256"]:
            raise EngineError(f"TensorRT engine {path} is missing or modified; {REBUILD.format(folder=manifest.folder)}")
        check(cudart().cudaSetDevice(device))
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        with open(path, "rb") as f:
            self.engine = self.runtime.deserialize_cuda_engine(f.read())
        if self.engine is None:
            raise EngineError(f"TensorRT could not deserialize {path}; {REBUILD.format(folder=manifest.folder)}")
        self.context = self.engine.create_execution_context()
        self.stream = check(cudart().cudaStreamCreate())
        self.name = f"tensorrt[{record['precision']}]"
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = lambda n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT  # noqa: E731
        self._inputs = [n for n in names if is_input(n)]
        self._outputs = [n for n in names if not is_input(n)]
        self.dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        self.profiles = record["profiles"]  # [{"name", "shapes": {input: [min, opt, max]}}] in engine order
        self.profile = -1
        self.keep_on_device = set(keep_on_device)
        self.inputs: dict[str, DeviceArray] = {}
        self.outputs: dict[str, DeviceArray] = {}
        self.kept: list[dict[str, DeviceArray]] = [{}, {}]  # alternating sets for outputs that stay on device
        self.calls = 0
        self._max_shapes: dict[int, dict[str, tuple[int, ...]]] = {}

    def _pick_profile(self, feeds: dict) -> int:
        for index, profile in enumerate(self.profiles):
            if check_shapes_fit(profile["shapes"], feeds) is None:
                return index
        shapes = {n: tuple(feeds[n].shape) for n in self._inputs}
        raise EngineError(f"{self.name}: input shapes {shapes} fit none of the engine's profiles "
                          f"{[p['name'] for p in self.profiles]}; rebuild with wider --max-* limits")

    def _buffer(self, pool: dict, name: str, shape: tuple, alloc_shape: tuple | None = None) -> DeviceArray:
        """``pool[name]`` holding ``shape``, reallocated (at ``alloc_shape`` if given) only when too small."""
        buf = pool.get(name)
        if buf is None or buf.capacity < int(np.prod(shape, dtype=np.int64)) * self.dtypes[name].itemsize:
            if buf is not None:
                buf.free()
            buf = pool[name] = DeviceArray(alloc_shape or shape, self.dtypes[name])
        return buf.reshape(shape)

    def _output_max_shapes(self, profile: int) -> dict[str, tuple[int, ...]]:
        """Each output's shape with every input at the profile's maximum (sizes the KV buffers once)."""
        if profile not in self._max_shapes:
            for n, (_, _, hi) in self.profiles[profile]["shapes"].items():
                self.context.set_input_shape(n, tuple(hi))
            self._max_shapes[profile] = {n: tuple(self.context.get_tensor_shape(n)) for n in self._outputs}
        return self._max_shapes[profile]

    def _run(self, feeds: dict[str, np.ndarray | DeviceArray]) -> dict[str, np.ndarray | DeviceArray]:
        profile = self._pick_profile(feeds)
        if profile != self.profile:
            self.context.set_optimization_profile_async(profile, self.stream)
            self.profile = profile
        biggest = self._output_max_shapes(profile) if self.keep_on_device else {}
        for n in self._inputs:
            value = feeds[n]
            if not isinstance(value, DeviceArray):
                value = self._buffer(self.inputs, n, value.shape).upload(value, self.stream)
            self.context.set_input_shape(n, value.shape)
            self.context.set_tensor_address(n, value.ptr)
        slot = self.kept[self.calls % 2]
        for n in self._outputs:
            shape = tuple(self.context.get_tensor_shape(n))
            if n in self.keep_on_device:  # sized once for the profile maximum: no regrowth per decode step
                big = max(biggest.get(n, shape), shape, key=lambda x: int(np.prod(x, dtype=np.int64)))
                buf = self._buffer(slot, n, shape, big)
            else:
                buf = self._buffer(self.outputs, n, shape)
            self.context.set_tensor_address(n, buf.ptr)
        if not self.context.execute_async_v3(self.stream):
            raise EngineError(f"{self.name}: TensorRT execution failed")
        self.calls += 1
        out = {}
        for n in self._outputs:
            if n in self.keep_on_device:
                out[n] = slot[n]
            else:
                out[n] = self.outputs[n].download(self.stream)  # synchronises the stream
        check(cudart().cudaStreamSynchronize(self.stream))
        return out

    def close(self) -> None:
        for buf in (*self.inputs.values(), *self.outputs.values(), *self.kept[0].values(), *self.kept[1].values()):
            buf.free()
        self.inputs, self.outputs, self.kept = {}, {}, [{}, {}]
        if getattr(self, "stream", None) is not None:
            check(cudart().cudaStreamDestroy(self.stream))
            self.stream = None


def tensorrt_engines(manifest: Manifest, device: int = 0) -> dict[str, Engine]:
    """One TensorRT engine per graph; the LLM keeps its KV cache on the device between steps."""
    engines = {}
    for role in manifest.data["graphs"]:
        keep = tuple(o["name"] for o in manifest.graph(role)["outputs"] if o["name"].startswith("present")) \
            if role.startswith("primary_llm") else ()  # the one-graph LLM and its split segments
        engines[role] = TensorRTEngine(manifest, role, keep, device)
    return engines
