"""Build TensorRT engines from an artifact folder (TensorRT Python API; runs on Jetson, no PyTorch).

One engine per graph: ONNX parser (external weights next to the graph), optimization profiles
from ``profiles.derive_profiles``, a workspace limit, a timing cache shared by every build in the
folder, and a progress bar. Engines and the updated manifest are written under temp names and
renamed when complete, so a failed build leaves the previous state intact.

Precision lives in the graph, not in builder flags. TensorRT 11 removed weak typing (the FP16,
BF16, INT8, FP8 builder flags, the precision-constraint flags and the implicit INT8 calibrator):
every network is strongly typed and runs each tensor in the type the ONNX graph gives it. So
fp16/bf16 engines come from graphs converted with ``scripts/convert_precision.py`` (fp32 islands
for the overflow-prone ops) and int8/fp8 engines from the Q/DQ graphs of ``scripts/calibrate.py
quantize``. On TensorRT 10.x the same strongly typed build is the default; the old weak-typing
flags and the entropy calibrator are used only when asked for (``weak_typing``), with a warning.
"""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass

from ..errors import EngineError
from ..fileio import write_atomic
from ..manifest import MANIFEST_NAME, Manifest, sha256_file
from .cuda_mem import GpuInfo, gpu_info
from .profiles import ProfileLimits, derive_profiles

PRECISIONS = ("fp32", "fp16", "bf16", "fp8", "int8")
_MIN_CC = {"fp16": (5, 3), "bf16": (8, 0), "fp8": (8, 9), "int8": (6, 1)}
# TensorRT 10.x weak typing: builder flags per requested precision (removed in TensorRT 11).
_WEAK_FLAGS = {"fp16": ("FP16",), "bf16": ("BF16",), "int8": ("INT8", "FP16")}  # int8 falls back to fp16, not fp32
_CONVERT = {"fp16": "python scripts/convert_precision.py --precision fp16",
            "bf16": "python scripts/convert_precision.py --precision bf16",
            "int8": "python scripts/calibrate.py quantize --mode int8",
            "fp8": "python scripts/calibrate.py quantize --mode fp8"}


def trt_version(version: str) -> tuple[int, ...]:
    """'10.3.0.26' -> (10, 3, 0, 26); unparsable parts end the tuple."""
    out = []
    for part in str(version).split("."):
        if not part.isdigit():
            break
        out.append(int(part))
    if not out:
        raise EngineError(f"cannot read the TensorRT version {version!r}")
    return tuple(out)


@dataclass(frozen=True)
class BuildOptions:
    precision: str | None = None  # None: what the graphs hold; else must match them (or weak_typing on 10.x)
    workspace_gb: float = 4.0
    limits: ProfileLimits = ProfileLimits()
    roles: tuple[str, ...] | None = None  # None: every graph
    opt_level: int = 3  # builder optimization level 0..5
    weak_typing: bool = False  # TensorRT 10.x only: builder precision flags (+ entropy calibrator for int8)
    version_compatible: bool = False  # BuilderFlag.VERSION_COMPATIBLE: runs on later TensorRT and the lean runtime


@dataclass(frozen=True)
class BuildSettings:
    """What one build does: network mode, builder flag names, whether it calibrates, and why."""
    precision: str  # the engine's precision (recorded)
    strongly_typed: bool
    builder_flags: tuple[str, ...]
    calibrate: bool
    warnings: tuple[str, ...] = ()


def graph_precision(manifest: Manifest, role: str) -> str:
    """The precision a graph carries: fp32 as exported, fp16/bf16 after convert_precision.py, int8/fp8
    (Q/DQ) or int4 (MatMulNBits, ONNX Runtime only) after calibrate.py quantize."""
    quant = manifest.data.get("quantization") or {}
    if role in quant.get("roles", ()):
        return quant["mode"]
    half = manifest.data.get("half_precision") or {}
    if role in half.get("roles", ()):
        return half["precision"]
    return "fp32"


def build_settings(version: str, graph: str, requested: str | None = None, weak_typing: bool = False,
                   version_compatible: bool = False) -> BuildSettings:
    """Pure decision of how to build a graph of precision ``graph`` on TensorRT ``version``.

    Strongly typed, no precision flags, whenever the graph already holds the precision (always on
    TensorRT 11+). Weak typing (a precision flag over an fp32 graph, the entropy calibrator for
    int8) only on 10.x and only when ``weak_typing`` asks for it."""
    major = trt_version(version)[0]
    if graph == "int4":
        raise EngineError("int4 graphs use ONNX Runtime's MatMulNBits, which TensorRT cannot parse; "
                          "run them on ONNX Runtime, or quantize with --mode int8/fp8 for TensorRT")
    if graph not in PRECISIONS:
        raise EngineError(f"graph precision {graph!r}: expected one of {PRECISIONS}")
    if requested is not None and requested not in PRECISIONS:
        raise EngineError(f"precision {requested!r}: expected one of {PRECISIONS}")
    extra = ("VERSION_COMPATIBLE",) if version_compatible else ()
    if requested in (None, graph) and not weak_typing:
        return BuildSettings(graph, True, extra, False)
    if not weak_typing:
        raise EngineError(f"the graphs are {graph} and the precision comes from the graph (strongly typed networks); "
                          f"for {requested} convert them first: {_CONVERT.get(requested, '')}"
                          + (" (or, on TensorRT 10.x only, --weak-typing)" if requested in _WEAK_FLAGS else ""))
    if major >= 11:
        raise EngineError(f"TensorRT {version} has no weak typing (BuilderFlag.FP16/BF16/INT8 and the INT8 calibrator "
                          f"were removed in TensorRT 11); convert the graphs instead: {_CONVERT.get(requested or graph, '')}")
    target = requested or graph
    if graph != "fp32" or target not in _WEAK_FLAGS:
        raise EngineError(f"--weak-typing applies builder flags to an fp32 graph for fp16/bf16/int8; the graph is "
                          f"{graph} and {target} was asked for")
    note = (f"weak typing on TensorRT {version}: BuilderFlag {'+'.join(_WEAK_FLAGS[target])} lets TensorRT pick "
            f"layer precisions, so RMSNorm variances and SwiGLU products may overflow in fp16 (docs/calibration.md: half precision); "
            f"this API is gone in TensorRT 11")
    return BuildSettings(target, False, _WEAK_FLAGS[target] + extra, target == "int8", (note,))


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


def network_flags(trt, strongly_typed: bool) -> int:
    """``create_network`` flags: STRONGLY_TYPED on 10.x; TensorRT 11 networks are always strongly typed
    (the enum member may be gone). Explicit batch is the only mode since TensorRT 10."""
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return 1 << int(flag) if strongly_typed and flag is not None else 0


def build_graph(trt, onnx_path: str, engine_path: str, profiles: dict, opts: BuildOptions, settings: BuildSettings,
                cache_path: str, calibrator=None, label: str = "") -> None:
    """Parse one ONNX graph and write its serialized engine to ``engine_path`` (atomically)."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt, settings.strongly_typed))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(onnx_path):  # reads external weights beside the file
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineError(f"TensorRT's ONNX parser rejected {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(opts.workspace_gb * (1 << 30)))
    config.builder_optimization_level = opts.opt_level
    for name in settings.builder_flags:  # VERSION_COMPATIBLE; precision flags only under 10.x weak typing
        config.set_flag(getattr(trt.BuilderFlag, name))
    for shapes in profiles.values():
        profile = builder.create_optimization_profile()
        for tensor, (lo, opt, hi) in shapes.items():
            profile.set_shape(tensor, lo, opt, hi)
        config.add_optimization_profile(profile)
    if settings.calibrate:  # TensorRT 10.x implicit quantization, on request only
        config.int8_calibrator = calibrator
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


def check_trt_graphs(manifest: Manifest) -> None:
    """TensorRT parses standard ONNX only: refuse ONNX Runtime contrib-op graphs up front."""
    manifest.require_onnx("TensorRT")
    fused = [role for role, graph in manifest.data["graphs"].items() if graph.get("attention") == "gqa"]
    if fused:
        raise EngineError(f"{', '.join(fused)} in {manifest.folder} use ONNX Runtime's GroupQueryAttention, which "
                          f"TensorRT cannot parse; re-export with --llm-attention plain for TensorRT")


def build_engines(manifest: Manifest, opts: BuildOptions = BuildOptions(), device: int = 0,
                  calibrator_factory=None, warn=None) -> dict:
    """Build every graph's engine into ``<folder>/engines/`` and record them in the manifest.

    ``calibrator_factory(role, cache_path)`` makes the INT8 calibrator for a TensorRT 10.x weak-typed
    int8 build (``calibration.trt_calibrator.make_entropy_calibrator``); nothing else calibrates."""
    check_trt_graphs(manifest)
    try:
        import tensorrt as trt
    except ImportError:
        raise EngineError("TensorRT is not installed: install it from NVIDIA's index or JetPack "
                          "(docs/tensorrt-jetson.md); CI never installs it") from None
    if not hasattr(trt, "Builder"):
        raise EngineError(f"this TensorRT ({trt.__file__}) has no builder (a lean or dispatch runtime?); build on a "
                          f"machine with the full TensorRT")
    roles = [r for r in manifest.data["graphs"] if not opts.roles or r in opts.roles]
    settings = {r: build_settings(trt.__version__, graph_precision(manifest, r), opts.precision, opts.weak_typing,
                                  opts.version_compatible) for r in roles}  # every refusal before the first build
    gpu = gpu_info(device)
    for s in settings.values():
        check_precision(s.precision, gpu)
        for note in s.warnings:
            (warn or (lambda m: warnings.warn(m, stacklevel=2)))(note)
        if s.calibrate and calibrator_factory is None:
            raise EngineError("a weak-typed int8 build needs a calibration set: --calibration DIR "
                              "(python scripts/calibrate.py collect ...)")
    all_profiles = derive_profiles(manifest, opts.limits)
    folder = os.path.join(manifest.folder, "engines")
    os.makedirs(folder, exist_ok=True)
    cache_path = os.path.join(folder, "timing.cache")
    records = dict(manifest.data.get("engines", {}).get("tensorrt", {}))
    for role in roles:
        graph, s = manifest.data["graphs"][role], settings[role]
        calibrator = calibrator_factory(role, os.path.join(folder, f"{role}.int8.cache")) if s.calibrate else None
        engine_file = os.path.join("engines", f"{role}.{s.precision}.plan")
        profiles = all_profiles[role]
        build_graph(trt, manifest.onnx_path(role), manifest.path(engine_file), profiles, opts, s, cache_path,
                    calibrator, label=role)
        records[role] = {
            "file": engine_file, "sha256": sha256_file(manifest.path(engine_file)), "onnx_sha256": graph["sha256"],
            "tensorrt": trt.__version__, "gpu": gpu.name, "compute_capability": gpu.compute_capability,
            "precision": s.precision, "typing": "strong" if s.strongly_typed else "weak",
            "version_compatible": opts.version_compatible, "workspace_gb": opts.workspace_gb,
            "profiles": [{"name": name, "shapes": {t: [list(d) for d in triple] for t, triple in shapes.items()}}
                         for name, shapes in profiles.items()],
        }
    data = dict(manifest.data)
    data["engines"] = {**data.get("engines", {}), "tensorrt": records}
    write_atomic(os.path.join(manifest.folder, MANIFEST_NAME), json.dumps(data, indent=1).encode())
    return records
