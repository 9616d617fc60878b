"""Half-precision graphs for strongly typed TensorRT builds: fp16 or bf16 with fp32 islands.

  python scripts/convert_precision.py --artifacts artifacts/7b --precision bf16 --out artifacts/7b-bf16
  python scripts/build_engines.py --artifacts artifacts/7b-bf16 --version-compatible

RMSNorm variances and means, softmax, the SwiGLU product (in fp16 also the down projection after
it) and the rotary angles stay fp32 (export/half.py); graph inputs and outputs stay fp32, so the
runtime is unchanged. Writes a new, complete artifact folder (other files hard-linked) with a
``half_precision`` record holding each graph's cosine against fp32 on the validation feeds.
Needs the ``half`` extra (NVIDIA ModelOpt AutoCast). --no-islands writes the naive all-half graph,
for comparison only.
"""
import argparse
import sys


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--artifacts", required=True, help="an fp32 artifact folder (scripts/export.py)")
    ap.add_argument("--precision", default="bf16", choices=["bf16", "fp16"],
                    help="bf16 (default: fp32's range, needs sm 8.0+) or fp16 (any GPU; more fp32 weights)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--graphs", help="comma-separated roles (default: all)")
    ap.add_argument("--no-islands", action="store_true", help="naive all-half graphs (comparison only)")
    args = ap.parse_args()

    from runtime.errors import DyTokError

    try:
        from export.half import convert_artifacts
        from export.validate import ParityError

        manifest = convert_artifacts(args.artifacts, args.out, args.precision,
                                     tuple(args.graphs.split(",")) if args.graphs else None, not args.no_islands)
    except (DyTokError, ParityError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {manifest.folder} ({args.precision})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
