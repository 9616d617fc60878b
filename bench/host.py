"""What a benchmark ran on: CPU model and its vector/matrix extensions, thread counts, library
versions, the GPU. Every report carries it, so figures from different hosts are not mixed up (the
same ONNX Runtime int8 graphs ran 1.4-1.6x slower on an AVX2-only host than on one with AVX-512 VNNI)."""
from __future__ import annotations

import importlib.util
import os
import platform

# /proc/cpuinfo flags (x86) and Features (Arm) that decide which kernels ONNX Runtime and PyTorch pick
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni",
             "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16",
             "asimd", "asimddp", "sve", "sve2", "i8mm", "bf16")


def cpu_info(path: str = "/proc/cpuinfo") -> tuple[str, list[str]]:
    """(CPU model name, the ISA_FLAGS it has) from /proc/cpuinfo; ("", []) where it cannot be read."""
    model, flags = "", set()
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key in ("model name", "hardware", "cpu model") and not model:
                    model = value.strip()
                elif key in ("flags", "features"):
                    flags.update(value.split())
    except OSError:
        pass
    return model, [f for f in ISA_FLAGS if f in flags]


def _version(module: str) -> str | None:
    if importlib.util.find_spec(module) is None:
        return None
    return getattr(__import__(module), "__version__", None)


def machine_info(threads: int | None = None) -> dict:
    """The host record of a benchmark run. ``threads``: the intra-op threads the run asked for
    (None: each library's default)."""
    import numpy
    import onnxruntime

    model, isa = cpu_info()
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_model": model or platform.machine(), "isa": isa, "cpu_count": os.cpu_count(),
            "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "threads_requested": threads, "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "python": platform.python_version(), "numpy": numpy.__version__, "onnxruntime": onnxruntime.__version__,
            "onnxruntime_providers": onnxruntime.get_available_providers(),
            "torch": _version("torch"), "transformers": _version("transformers")}
    if info["torch"] is not None:
        import torch
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
            info["cuda"] = torch.version.cuda
    return info


def describe(m: dict) -> str:
    """One line for a report header. Runs saved before the host record name only the processor."""
    cpu = m.get("cpu_model") or m["processor"]
    isa = m.get("isa")
    out = f"{cpu} x{m['cpu_count']}" + (f" ({' '.join(isa)})" if isa else "")
    return out
