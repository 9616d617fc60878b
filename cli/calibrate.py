"""Calibration data from real video, ONNX Runtime quantization, and its accuracy/size/speed report.

  python scripts/calibrate.py collect  --artifacts artifacts/small --videos clips/ --out calib/small
  python scripts/calibrate.py quantize --artifacts artifacts/small --calibration calib/small --mode int8 --out artifacts/small-int8
  python scripts/calibrate.py quantize --artifacts artifacts/small --mode int4 --out artifacts/small-int4
  python scripts/calibrate.py quantize --artifacts artifacts/small --mode dynamic-int8 --out artifacts/small-dyn8
  python scripts/calibrate.py report   --artifacts artifacts/small --quantized artifacts/small-int8 --calibration calib/small --speed

``collect`` runs the fp32 pipeline (DyToK + VisionZip) over every clip and records each graph's
feeds; whole videos are held out for ``report``. With no --videos, sample videos are generated.
"""
import argparse
import os
import statistics
import sys
import time


def speed(engines: dict, calib, roles, runs: int = 3) -> dict[str, float]:
    """Median seconds per recorded held-out call, per role (after one warm-up call)."""
    out = {}
    for role in roles:
        feeds = list(calib.feeds(role, "heldout"))[:4]
        if not feeds:
            continue
        engines[role].run(feeds[0])
        times = []
        for _ in range(runs):
            for f in feeds:
                t0 = time.perf_counter()
                engines[role].run(f)
                times.append(time.perf_counter() - t0)
        out[role] = statistics.median(times)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    c = sub.add_parser("collect")
    c.add_argument("--artifacts", required=True)
    c.add_argument("--videos", help="folder of videos (default: 5 generated samples)")
    c.add_argument("--out", required=True)
    c.add_argument("--clips", type=int, default=2)
    c.add_argument("--frames", type=int, default=8)
    c.add_argument("--holdout", type=int, default=4, help="every k-th video is held out")
    c.add_argument("--max-pixels", type=int)
    q = sub.add_parser("quantize")
    q.add_argument("--artifacts", required=True)
    q.add_argument("--calibration")
    q.add_argument("--mode", required=True, choices=["int8", "int4", "fp8", "dynamic-int8"],
                   help="int8/fp8: static QDQ (TensorRT); dynamic-int8, int4: CPU speed forms (no calibration)")
    q.add_argument("--graphs", help="comma-separated roles (default: int8/fp8 vision+LLM, int4 LLM, "
                                    "dynamic-int8 all four)")
    q.add_argument("--block-size", type=int, default=128)
    q.add_argument("--out", required=True)
    r = sub.add_parser("report")
    r.add_argument("--artifacts", required=True, help="fp32 reference")
    r.add_argument("--quantized", required=True)
    r.add_argument("--calibration", required=True)
    r.add_argument("--speed", action="store_true", help="also time both on the held-out feeds (benchmark)")
    r.add_argument("--threads", type=int)
    args = ap.parse_args()

    from runtime.errors import DyTokError

    try:
        if args.command == "collect":
            from calibration.dataset import CollectOptions, collect
            from runtime.pipeline import load_pipeline

            videos = args.videos
            if videos is None:
                from runtime.video import write_test_video
                videos = os.path.join(args.out + ".videos")
                os.makedirs(videos, exist_ok=True)
                for k in range(5):
                    write_test_video(os.path.join(videos, f"sample{k}.mp4"), num_frames=40 + 8 * k)  # motion speeds differ
            index = collect(load_pipeline(args.artifacts), videos, args.out,
                            CollectOptions(clips=args.clips, frames=args.frames, holdout=args.holdout, max_pixels=args.max_pixels))
            counts = {role: len(s) for role, s in index["samples"].items()}
            print(f"{args.out}: {len(index['videos'])} videos, feeds per graph {counts}")
        elif args.command == "quantize":
            from calibration.ort_quant import quantize_artifacts
            quantize_artifacts(args.artifacts, args.out, args.mode, args.calibration,
                               tuple(args.graphs.split(",")) if args.graphs else None, args.block_size,
                               log=lambda s: print(s, file=sys.stderr))
            print(args.out)
        else:
            from calibration.accuracy import accuracy_report
            from calibration.dataset import CalibrationSet
            from calibration.ort_quant import graph_bytes
            from runtime.engines.ort import OrtEngine
            from runtime.manifest import load_manifest

            ref, cand = load_manifest(args.artifacts), load_manifest(args.quantized)
            roles = cand.data.get("quantization", {}).get("roles") or list(cand.data["graphs"])
            load = lambda m: {role: OrtEngine(m.onnx_path(role), threads=args.threads) for role in roles}  # noqa: E731
            ref_engines, cand_engines = load(ref), load(cand)
            calib = CalibrationSet(args.calibration)
            report = accuracy_report(ref_engines, cand_engines, calib)
            mode = cand.data.get("quantization", {}).get("mode", "?")
            print(f"{mode} vs fp32 on held-out clips ({report.samples}):")
            for line in report.lines():
                print(f"  {line}")
            for role in roles:
                a, b = graph_bytes(ref, role), graph_bytes(cand, role)
                print(f"  {role}: {a / 1e6:.1f} MB -> {b / 1e6:.1f} MB ({b / a:.2f}x)")
            if args.speed:
                t_ref, t_cand = speed(ref_engines, calib, roles), speed(cand_engines, calib, roles)
                for role in t_ref:
                    print(f"  {role}: median {t_ref[role] * 1e3:.1f} ms -> {t_cand[role] * 1e3:.1f} ms "
                          f"(speed-up {t_ref[role] / t_cand[role]:.2f}x; below 1 is slower)")
    except DyTokError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
