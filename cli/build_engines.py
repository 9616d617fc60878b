"""Build TensorRT engines for an artifact folder (on the GPU that will run them).

  python scripts/build_engines.py --artifacts artifacts/qwen2.5-vl-7b-bf16 --version-compatible
  python scripts/build_engines.py --artifacts DIR --lint          # CPU only: parser support check
  python scripts/build_engines.py --artifacts DIR --show-profiles # CPU only: the derived profiles

Profiles come from the manifest (--min/opt/max-frames, --max-pixels, --max-context narrow them
for small devices). Engines go to DIR/engines/, and the manifest records TensorRT version, GPU,
compute capability, profiles and precision; the runtime refuses engines that do not match.

Networks are strongly typed: the precision is the graphs' (scripts/convert_precision.py for
fp16/bf16, scripts/calibrate.py quantize for int8/fp8 Q/DQ). --weak-typing (TensorRT 10.x only)
applies the old builder precision flags to fp32 graphs instead, with a warning.
"""
import argparse
import sys


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--artifacts", required=True)
    ap.add_argument("--precision", choices=["fp32", "fp16", "bf16", "fp8", "int8"],
                    help="expected engine precision (default: what the graphs hold; a mismatch is an error)")
    ap.add_argument("--weak-typing", action="store_true",
                    help="TensorRT 10.x only: builder precision flags over fp32 graphs (int8: entropy calibrator)")
    ap.add_argument("--calibration", help="calibration set folder (--weak-typing int8; scripts/calibrate.py collect)")
    ap.add_argument("--version-compatible", action="store_true",
                    help="BuilderFlag.VERSION_COMPATIBLE: runs on later TensorRT versions and on the lean runtime")
    ap.add_argument("--workspace-gb", type=float, default=4.0)
    ap.add_argument("--opt-level", type=int, default=3, choices=range(6))
    ap.add_argument("--graphs", help="comma-separated roles to build (default: all)")
    ap.add_argument("--min-frames", type=int, default=2)
    ap.add_argument("--opt-frames", type=int, default=16)
    ap.add_argument("--max-frames", type=int, default=64)
    ap.add_argument("--max-pixels", type=int, help="per frame (default: the manifest's)")
    ap.add_argument("--max-context", type=int, help="LLM tokens (default: the model's context length)")
    ap.add_argument("--trt-version", default="10.1", help="parser support table for --lint")
    ap.add_argument("--lint", action="store_true", help="only check every node against TensorRT's ONNX parser")
    ap.add_argument("--show-profiles", action="store_true", help="only print the derived profiles as JSON")
    args = ap.parse_args()

    from runtime.engines.profiles import ProfileLimits, derive_profiles
    from runtime.errors import DyTokError
    from runtime.manifest import load_manifest

    try:
        manifest = load_manifest(args.artifacts)
        limits = ProfileLimits(min_frames=args.min_frames, opt_frames=min(args.opt_frames, args.max_frames), max_frames=args.max_frames,
                               max_pixels=args.max_pixels, max_context=args.max_context)
        if args.show_profiles:
            for role, per in derive_profiles(manifest, limits).items():
                for name, shapes in per.items():
                    print(f"{role} [{name}]")
                    for tensor, (lo, opt, hi) in shapes.items():
                        print(f"  {tensor:<16} min {list(lo)}  opt {list(opt)}  max {list(hi)}")
            return 0
        from runtime.engines.trt_build import check_trt_graphs
        from runtime.engines.trt_lint import lint_artifacts

        if not args.lint:
            check_trt_graphs(manifest)  # the actionable error before the parser findings
        findings = [f for found in lint_artifacts(manifest, args.trt_version).values() for f in found]
        for f in findings:
            print(f"lint: {f}", file=sys.stderr)
        if args.lint or findings:
            print(f"{len(findings)} TensorRT {args.trt_version} parser problems in {len(manifest.data['graphs'])} graphs")
            return 1 if findings else 0
        from runtime.engines.trt_build import BuildOptions, build_engines

        opts = BuildOptions(args.precision, args.workspace_gb, limits, tuple(args.graphs.split(",")) if args.graphs else None,
                            args.opt_level, args.weak_typing, args.version_compatible)
        factory = None
        if args.calibration:
            from functools import partial

            from calibration.trt_calibrator import make_entropy_calibrator
            factory = partial(make_entropy_calibrator, args.calibration)
        records = build_engines(manifest, opts, calibrator_factory=factory,
                                warn=lambda m: print(f"warning: {m}", file=sys.stderr))
    except DyTokError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for role, r in records.items():
        print(f"{role}: {r['file']} ({r['precision']}, {r['typing']}ly typed{', version-compatible' if r['version_compatible'] else ''}, "
              f"TensorRT {r['tensorrt']}, {r['gpu']} sm {r['compute_capability']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
