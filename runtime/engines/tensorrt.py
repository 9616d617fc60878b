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

Only TensorRT's runtime API is used here (``Runtime``, ``ICudaEngine``, ``IExecutionContext``), so
the backend runs on the full TensorRT or, where only that is installed, on the lean runtime
(``tensorrt_lean``; the 11.x pip wheels name it ``tensorrt_lean_bindings``). The lean runtime runs
version-compatible engines only (``build_engines.py --version-compatible``, recorded in the
manifest). ``tests/engines/test_trt_api.py`` checks every call below against the real bindings.
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
NOT_INSTALLED = "TensorRT is not installed: install it from NVIDIA's index or JetPack (docs/tensorrt-jetson.md); CI never installs it"
# Module names of TensorRT's Python runtime, full first: (module, kind).
TRT_MODULES = (("tensorrt", "full"), ("tensorrt_lean", "lean"), ("tensorrt_lean_bindings", "lean"))


def import_tensorrt():
    """(module, "full" | "lean"): the full TensorRT if installed, else its lean runtime."""
    import importlib

    for name, kind in TRT_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        # a full package without a builder is the runtime alone
        return module, kind if kind == "lean" or hasattr(module, "Builder") else "lean"
    raise EngineError(NOT_INSTALLED)


def _version(v: str) -> tuple[int, ...]:
    from .trt_build import trt_version
    return trt_version(v)


def check_engine_record(record: dict | None, role: str, graph: dict, trt_version: str, gpu: GpuInfo | None, folder: str,
                        runtime_kind: str = "full") -> None:
    """Refuse an engine built from another graph, with another TensorRT or for another GPU.

    A version-compatible engine runs on its TensorRT version or a later one (TensorRT's rule), and
    it is the only kind the lean runtime runs; any other engine needs the exact version. ``gpu``
    None skips the GPU check (done before CUDA is touched)."""
    hint = REBUILD.format(folder=folder)
    if not record:
        raise EngineError(f"no TensorRT engine for {role!r} in {folder}; {hint}")
    if record.get("onnx_sha256") != graph["sha256"]:
        raise EngineError(f"TensorRT engine for {role!r} was built from another export of the graph; {hint}")
    compatible = bool(record.get("version_compatible"))
    if runtime_kind == "lean" and not compatible:
        raise EngineError(f"TensorRT engine for {role!r} is not version-compatible, and the lean runtime runs only "
                          f"version-compatible engines; {hint} --version-compatible")
    built = str(record.get("tensorrt"))
    if compatible:
        if _version(trt_version) < _version(built):
            raise EngineError(f"TensorRT engine for {role!r} was built with TensorRT {built}, newer than this "
                              f"{trt_version}: version-compatible engines run on their version or later; {hint}")
    elif built != trt_version:
        raise EngineError(f"TensorRT engine for {role!r} was built with TensorRT {built}, "
                          f"this is {trt_version}; {hint}")
    if gpu is None:
        return
    if record.get("compute_capability") != gpu.compute_capability or record.get("gpu") != gpu.name:
        raise EngineError(f"TensorRT engine for {role!r} was built for {record.get('gpu')} (sm {record.get('compute_capability')}), "
                          f"this GPU is {gpu.name} (sm {gpu.compute_capability}); {hint}")


class TensorRTEngine(Engine):
    def __init__(self, manifest: Manifest, role: str, keep_on_device: tuple[str, ...] = (), device: int = 0):
        trt, kind = import_tensorrt()
        record = manifest.data.get("engines", {}).get("tensorrt", {}).get(role)
        check_engine_record(record, role, manifest.graph(role), trt.__version__, None, manifest.folder, kind)  # before CUDA
        check_engine_record(record, role, manifest.graph(role), trt.__version__, gpu_info(device), manifest.folder, kind)
        path = manifest.path(record["file"])
        if not os.path.isfile(path) or sha256_file(path) != record["sha256"]:
            raise EngineError(f"TensorRT engine {path} is missing or modified; {REBUILD.format(folder=manifest.folder)}")
        check(cudart().cudaSetDevice(device))
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        if record.get("version_compatible"):
            # the plan embeds a lean runtime (host code); trusted: its sha256 matched the manifest above
            self.runtime.engine_host_code_allowed = True
        with open(path, "rb") as f:
            self.engine = self.runtime.deserialize_cuda_engine(f.read())
        if self.engine is None:
            raise EngineError(f"TensorRT could not deserialize {path}; {REBUILD.format(folder=manifest.folder)}")
        self.context = self.engine.create_execution_context()
        self.stream = check(cudart().cudaStreamCreate())
        self.name = f"tensorrt[{record['precision']}]" if kind == "full" else f"tensorrt-lean[{record['precision']}]"
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

    def host(self, value) -> np.ndarray:
        return value.download(self.stream) if isinstance(value, DeviceArray) else np.asarray(value)

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
