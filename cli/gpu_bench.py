"""The GPU suite in one command: parity of the fast PyTorch path, the device's rates, then the
real-size Qwen2.5-VL-7B + 3B pair (random bf16 weights drawn on the GPU) at 32 and 96 frames,
every stage against its floor; writes docs/gpu/<gpu>-<date>.json and .md. Installs nothing and
needs no network; prints the versions it ran with.

  python scripts/gpu_bench.py                                      # make gpu-bench: cuda, 7B + 3B
  python scripts/gpu_bench.py --device cpu --model small --frames 16 --runs 1   # the same suite on the CPU
  python scripts/gpu_bench.py --device cpu --model tiny --dtype bfloat16 ...    # the GPU's bf16 paths, on the CPU
"""
import sys


def main() -> int:
    from cli.common import TORCH_DTYPES, parser, quiet

    ap = parser(__doc__)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="where everything runs")
    ap.add_argument("--model", default="qwen2.5-vl-7b-random", help="preset (its default assistant comes with it)")
    ap.add_argument("--frames", default="32,96", help="comma-separated frame counts")
    ap.add_argument("--runs", type=int, default=3, help="timed runs per row")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs per row first")
    ap.add_argument("--dtype", choices=TORCH_DTYPES,
                    help="weights of the benchmarked pair (default: bfloat16 on cuda, float32 on cpu)")
    ap.add_argument("--max-new-tokens", type=int, default=16, help="tokens decoded per answer")
    ap.add_argument("--max-pixels", type=int, default=200704, help="most pixels per frame (448x448)")
    ap.add_argument("--out", default="docs/gpu", help="folder of the JSON and Markdown results")
    ap.add_argument("--work", default="artifacts", help="folder for the exported models and the test video")
    args = ap.parse_args()
    quiet(args.verbose)

    from bench.gpu_suite import run_suite
    from runtime.errors import DyTokError

    if args.device == "cuda":
        import torch
        if not torch.cuda.is_available():
            print("error: --device cuda: torch sees no CUDA device (use --device cpu for the CPU suite)", file=sys.stderr)
            return 2
    try:
        frames = tuple(int(f) for f in args.frames.split(","))
        record = run_suite(args.device, args.model, frames, args.runs, args.warmup, args.max_new_tokens, args.max_pixels,
                           args.out, args.work, dtype=args.dtype)
    except (DyTokError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0 if record["parity"].get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
