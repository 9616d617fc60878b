"""Build TensorRT engines from an artifact folder (TensorRT Python API; runs on Jetson, no PyTorch).

One engine per graph: ONNX parser (external weights next to the graph), optimization profiles
from ``profiles.derive_profiles``, precision flags checked against the GPU, a workspace limit, a
timing cache shared by every build in the folder, and a progress bar. Engines and the updated
manifest are written under temp names and renamed when complete, so a failed build leaves the
previous state intact.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

from ..errors import EngineError
from ..manifest import MANIFEST_NAME, Manifest, sha256_file
from .cuda_mem import GpuInfo, gpu_info
from .profiles import ProfileLimits, derive_profiles

PRECISIONS = ("fp32", "fp16", "bf16", "fp8", "int8")
_MIN_CC = {"fp16": (5, 3), "bf16": (8, 0), "fp8": (8, 9), "int8": (6, 1)}


@dataclass(frozen=True)
class BuildOptions:
    precision: str = "fp16"
    workspace_gb: float = 4.0
    limits: ProfileLimits = ProfileLimits()
    roles: tuple[str, ...] | None = None  # None: every graph
    calibration: str | None = None  # calibration set folder (int8)
    opt_level: int = 3  # builder optimization level 0..5


def check_precision(precision: str, gpu: GpuInfo) -> None:
    """fp8 needs Ada/Hopper (sm 8.9+), bf16 Ampere (sm 8.0+): say so before a long build fails."""
    if precision not in PRECISIONS:
        raise EngineError(f"precision {precision!r}: expected one of {PRECISIONS}")
    need = _MIN_CC.get(precision)
    have = tuple(int(x) for x in gpu.compute_capability.split("."))
    if need and have < need:
        raise EngineError(f"{precision} needs compute capability {need[0]}.{need[1]}+, {gpu.name} is {gpu.compute_capability}")


def _progress_monitor(trt, label: str):
    from tqdm import tqdm

    class Progress(trt.IProgressMonitor):
        """TensorRT build phases as nested tqdm bars."""

        def __init__(self):
            trt.IProgressMonitor.__init__(self)
            self.bars = {}

        def phase_start(self, phase_name, parent_phase, num_steps):
            self.bars[phase_name] = tqdm(total=num_steps, desc=f"{label}: {phase_name}", leave=parent_phase is None,
                                         position=len(self.bars))

        def step_complete(self, phase_name, step):
            bar = self.bars.get(phase_name)
            if bar is not None:
                bar.update(step + 1 - bar.n)
            return True  # False would cancel the build

        def phase_finish(self, phase_name):
            bar = self.bars.pop(phase_name, None)
            if bar is not None:
                bar.close()

    return Progress()


def build_graph(trt, onnx_path: str, engine_path: str, profiles: dict, opts: BuildOptions, cache_path: str,
                calibrator=None, label: str = "") -> None:
    """Parse one ONNX graph and write its serialized engine to ``engine_path`` (atomically)."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if opts.precision == "fp8" else 0
    network = builder.create_network(flags)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(onnx_path):  # reads external weights beside the file
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineError(f"TensorRT's ONNX parser rejected {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(opts.workspace_gb * (1 << 30)))
    config.builder_optimization_level = opts.opt_level
    if opts.precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif opts.precision == "bf16":
        config.set_flag(trt.BuilderFlag.BF16)
    elif opts.precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        config.set_flag(trt.BuilderFlag.FP16)  # layers INT8 cannot run fall back to fp16, not fp32
        config.int8_calibrator = calibrator
    # fp8: the graph carries explicit Q/DQ nodes (calibration/fp8.py); a strongly typed network keeps them
    for shapes in profiles.values():
        profile = builder.create_optimization_profile()
        for tensor, (lo, opt, hi) in shapes.items():
            profile.set_shape(tensor, lo, opt, hi)
        config.add_optimization_profile(profile)
    if calibrator is not None:
        calib = builder.create_optimization_profile()  # calibration runs at the calibration set's shapes
        for tensor, shape in calibrator.shapes.items():
            calib.set_shape(tensor, shape, shape, shape)
        config.set_calibration_profile(calib)
    cache_bytes = open(cache_path, "rb").read() if os.path.isfile(cache_path) else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)
    config.progress_monitor = _progress_monitor(trt, label)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineError(f"TensorRT failed to build {onnx_path} (see the log above); try a larger --workspace-gb "
                          f"or narrower --max-frames/--max-context")
    write_atomic(engine_path, bytes(serialized))
    write_atomic(cache_path, bytes(config.get_timing_cache().serialize()))


def write_atomic(path: str, data: bytes) -> None:
    """Write under a temp name and rename, so a reader never sees a half-written file."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def check_trt_graphs(manifest: Manifest) -> None:
    """TensorRT parses standard ONNX only: refuse ONNX Runtime contrib-op graphs up front."""
    manifest.require_onnx("TensorRT")
    fused = [role for role, graph in manifest.data["graphs"].items() if graph.get("attention") == "gqa"]
    if fused:
        raise EngineError(f"{', '.join(fused)} in {manifest.folder} use ONNX Runtime's GroupQueryAttention, which "
                          f"TensorRT cannot parse; re-export with --llm-attention plain for TensorRT")


def build_engines(manifest: Manifest, opts: BuildOptions = BuildOptions(), device: int = 0) -> dict:
    """Build every graph's engine into ``<folder>/engines/`` and record them in the manifest."""
    check_trt_graphs(manifest)
    try:
        import tensorrt as trt
    except ImportError:
        raise EngineError("TensorRT is not installed: install it from NVIDIA's index or JetPack "
                          "(README: 'Jetson'); CI never installs it") from None
    gpu = gpu_info(device)
    check_precision(opts.precision, gpu)
    all_profiles = derive_profiles(manifest, opts.limits)
    folder = os.path.join(manifest.folder, "engines")
    os.makedirs(folder, exist_ok=True)
    cache_path = os.path.join(folder, "timing.cache")
    records = dict(manifest.data.get("engines", {}).get("tensorrt", {}))
    for role, graph in manifest.data["graphs"].items():
        if opts.roles and role not in opts.roles:
            continue
        calibrator = None
        if opts.precision == "int8":
            from calibration.trt_calibrator import make_entropy_calibrator
            if not opts.calibration:
                raise EngineError("int8 needs --calibration DIR (python scripts/calibrate.py --collect ...)")
            calibrator = make_entropy_calibrator(opts.calibration, role, os.path.join(folder, f"{role}.int8.cache"))
        engine_file = os.path.join("engines", f"{role}.{opts.precision}.plan")
        profiles = all_profiles[role]
        build_graph(trt, manifest.onnx_path(role), manifest.path(engine_file), profiles, opts, cache_path,
                    calibrator, label=role)
        records[role] = {
            "file": engine_file, "sha256": sha256_file(manifest.path(engine_file)), "onnx_sha256": graph["sha256"],
            "tensorrt": trt.__version__, "gpu": gpu.name, "compute_capability": gpu.compute_capability,
            "precision": opts.precision, "workspace_gb": opts.workspace_gb,
            "profiles": [{"name": name, "shapes": {t: [list(s) for s in triple] for t, triple in shapes.items()}}
                         for name, shapes in profiles.items()],
        }
    data = dict(manifest.data)
    data["engines"] = {**data.get("engines", {}), "tensorrt": records}
    write_atomic(os.path.join(manifest.folder, MANIFEST_NAME), json.dumps(data, indent=1).encode())
    return records
