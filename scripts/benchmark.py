"""Latency of the compiled runtime against PyTorch eager, side by side in one process.

  python scripts/benchmark.py --model small --frames 16 --runs 3 --json bench.json --plot bench.png
  # GPU, real-size Qwen2.5-VL-7B + 3B architectures with random bf16 weights, no ONNX needed:
  python scripts/benchmark.py --model qwen2.5-vl-7b-random --device cuda --frames 32 --max-pixels 200704

Exports the preset first if --artifacts has none (real-size random presets: --torch-only, bf16).
Prints a Markdown table (ratios against eager full tokens first), and with --project 7b a
FLOPs-based projection for the real 7B/3B pair. --report re-prints a saved run (its table, and
the projection with today's --accuracy rows) without measuring:

  python scripts/benchmark.py --report docs/results/bench_small.json --accuracy docs/results/needle_prior_shapes.json --project 7b
"""
import argparse
import os
import sys

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="small")
    ap.add_argument("--checkpoint")
    ap.add_argument("--artifacts", help="artifact folder (default artifacts/<model>; exported if missing)")
    ap.add_argument("--video", help="default: a generated sample")
    ap.add_argument("--question", default="What happens in the video?")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--max-pixels", type=int, default=192 * 28 * 28)
    ap.add_argument("--min-pixels", type=int, default=16 * 28 * 28)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--runtime-backend", default="auto", choices=["auto", "onnxruntime", "tensorrt", "torch"],
                    help="engines of the runtime rows (auto: torch for --torch-only folders or a GPU without "
                         "onnxruntime-gpu, else onnxruntime; tensorrt: engines from build_engines.py)")
    ap.add_argument("--attn", choices=["eager", "sdpa"], help="transformers attention of the eager rows (default: sdpa, "
                                                              "transformers' own default; a row with eager attention "
                                                              "is added, labelled)")
    ap.add_argument("--variants", default="", help="comma-separated CPU speed forms to add rows for: dynamic-int8, int4 "
                                                   "(quantized copies <artifacts>-<mode>, made if missing)")
    ap.add_argument("--encoder-slack", type=float, default=1.0, help="slack of the budget-aware rows of --variants")
    ap.add_argument("--prior", default="2,4", help="frames,pixels divisors of the cheap prior in the --variants rows")
    ap.add_argument("--accuracy", help="JSON rows from scripts/evaluate.py (method, retention, assistant, variant, "
                                       "encoder_slack, accuracy): printed beside each matching speed row")
    ap.add_argument("--sequential", action="store_true", help="each configuration's runs back to back (default: "
                                                               "interleaved rounds, fairer on a shared machine)")
    ap.add_argument("--only", action="append", metavar="TEXT",
                    help="run only the configurations whose name contains TEXT or matches it as a regular expression "
                         "(repeatable), e.g. --only FastV --only 'runtime full'")
    ap.add_argument("--json")
    ap.add_argument("--plot")
    ap.add_argument("--project", choices=["7b"])
    ap.add_argument("--report", metavar="JSON", help="a saved run (from --json) to print instead of measuring")
    args = ap.parse_args()

    from export import benchmark as B
    from runtime.errors import DyTokError

    accuracy_rows = None
    try:
        report = load_report(args.report) if args.report else measure(args, B)
        if args.accuracy:
            accuracy_rows = load_accuracy(args.accuracy)
            print(f"accuracy: joined {B.join_accuracy(report, accuracy_rows)} rows from {args.accuracy}", file=sys.stderr)
    except DyTokError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    m = report["machine"]
    print(f"{report['model']} (+{report['assistant']}), {report['frames']} frames, {report['max_new_tokens']} new tokens, "
          f"medians of {report['runs']} runs after {report['warmup']} warm-up | {m['processor']} x{m['cpu_count']}, "
          f"torch {m['torch']} ({m['torch_threads']} threads), onnxruntime {m['onnxruntime']}, transformers {m['transformers']}"
          + (f" | {m['gpu']}" if report.get("device") == "cuda" and "gpu" in m else "")
          + f" | runtime rows on {report['runtime_backend']} (LLM attention: {report['llm_attention']}), "
            f"eager attention {report['attn']}" + (f" | saved run {args.report}" if args.report else ""))
    print(B.markdown_table(report))
    if args.project:
        print()
        for variant in dict.fromkeys(r.get("variant", "fp32") for r in report["configs"] if r["backend"] == "runtime"):
            print(B.project_7b(report, variant=variant, accuracy_rows=accuracy_rows))
            print()
    if args.json and not args.report:
        B.write_json(report, args.json)
    if args.plot:
        B.plot(report, args.plot)
    return 0


def read_json(path: str, option: str):
    """The JSON in ``path``; a DyTokError naming ``option`` if it cannot be read or parsed."""
    import json
    from runtime.errors import DyTokError
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise DyTokError(f"{option} {path}: not a readable JSON file ({e})") from None


def load_report(path: str) -> dict:
    """A run saved with --json."""
    from runtime.errors import DyTokError
    report = read_json(path, "--report")
    if not isinstance(report, dict) or "configs" not in report or "machine" not in report:
        raise DyTokError(f"--report {path}: not a benchmark run (no configs/machine; write one with --json)")
    return report


def load_accuracy(path: str) -> list[dict]:
    """scripts/evaluate.py rows (a report, or a list of rows)."""
    rows = read_json(path, "--accuracy")
    return rows.get("rows", rows) if isinstance(rows, dict) else rows


def measure(args, B) -> dict:
    """Export the preset if needed, then run every configuration (the run itself)."""
    from export.exporter import export_artifacts
    from runtime.video import write_test_video

    folder = args.artifacts or os.path.join("artifacts", args.model)
    if not os.path.isfile(os.path.join(folder, "manifest.json")):
        real_size = args.model.endswith("-random")  # billions of parameters: no fp32 ONNX export
        # ONNX Runtime's fused GroupQueryAttention: the fastest LLM graph for the runtime rows
        export_artifacts(args.model, folder, checkpoint=args.checkpoint, validate=False, torch_only=real_size,
                         dtype="bfloat16" if real_size else "float32", llm_attention="gqa",
                         fastv_layer="default")  # the split LLM graphs for the FastV rows
    video = args.video
    if not video:
        os.makedirs("out", exist_ok=True)
        video = write_test_video(os.path.join("out", "bench.mp4"), num_frames=96, size=(448, 336), fps=24.0)
    variants, configs = {}, B.default_configs()
    prior = tuple(int(x) for x in args.prior.split(","))
    for mode in filter(None, args.variants.split(",")):
        variants[mode] = B.quantized_folder(folder, mode, log=lambda s: print(s, file=sys.stderr))
        configs += B.variant_configs(mode, args.encoder_slack, prior)
    if args.variants:  # fp32 with the same cheap prior and encoder resolution, for the lossless comparison
        configs += B.variant_configs("fp32", args.encoder_slack, prior)[1:]
    if args.only:
        import re
        configs = [c for c in configs if any(t in c.name or re.search(t, c.name) for t in args.only)]
    return B.run_benchmark(folder, video, args.question, args.frames, args.runs, args.warmup, args.max_new_tokens,
                           args.max_pixels, args.min_pixels, args.threads, args.device, configs=configs,
                           runtime_backend=args.runtime_backend, attn=args.attn, variants=variants,
                           interleave=not args.sequential, log=lambda s: print(s, file=sys.stderr))


if __name__ == "__main__":
    sys.exit(main())
