"""Latency of the compiled runtime against PyTorch eager, side by side in one process.

  python scripts/benchmark.py --model small --frames 16 --runs 3 --json bench.json --plot bench.png
  # GPU, real-size Qwen2.5-VL-7B + 3B architectures with random bf16 weights, no ONNX needed:
  python scripts/benchmark.py --model qwen2.5-vl-7b-random --device cuda --frames 32 --max-pixels 200704

Exports the preset first if --artifacts has none (real-size random presets: --torch-only, bf16).
Prints a table (ratios against eager full tokens first; --format markdown for every column), and with --project 7b a
FLOPs-based projection for the real 7B/3B pair. --report re-prints a saved run (its table, and
the projection with today's --accuracy rows) without measuring:

  python scripts/benchmark.py --report docs/results/bench_small.json --accuracy docs/results/needle_prior_shapes.json --project 7b
"""
import os
import sys


def main() -> int:
    from cli.common import DEFAULT_PRESET, parser, quiet

    ap = parser(__doc__)
    ap.add_argument("--model", default=DEFAULT_PRESET, help="preset to benchmark (small: the CPU speed stand-in; "
                                                            "qwen2.5-vl-7b-random with --device cuda: real size)")
    ap.add_argument("--checkpoint")
    ap.add_argument("--artifacts", help="artifact folder (default artifacts/<model>; exported if missing)")
    ap.add_argument("--video", help="default: a generated sample")
    ap.add_argument("--question", default="What happens in the video?")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--max-pixels", type=int, help="most pixels per frame (default: the folder's; the committed CPU runs "
                                                   "of small used 150528 = 192x28x28)")
    ap.add_argument("--min-pixels", type=int, help="fewest pixels per frame (default: the folder's; the committed CPU "
                                                   "runs of small used 12544 = 16x28x28)")
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
    ap.add_argument("--format", default="terminal", choices=["terminal", "markdown"],
                    help="the table: compact fixed-width columns, or Markdown (every column, for docs)")
    args = ap.parse_args()
    quiet(args.verbose)

    from bench import report as R
    from bench.accuracy import join_accuracy
    from bench.projection import project_7b
    from runtime.errors import DyTokError
    from runtime.fileio import write_json

    accuracy_rows = None
    try:
        report = R.load_report(args.report) if args.report else measure(args)
        if args.accuracy:
            accuracy_rows = R.load_accuracy(args.accuracy)
            print(f"accuracy: joined {join_accuracy(report, accuracy_rows)} rows from {args.accuracy}", file=sys.stderr)
    except DyTokError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(R.header(report, args.report))
    print(R.markdown_table(report) if args.format == "markdown" else R.terminal_table(report))
    if args.project:
        print()
        for variant in dict.fromkeys(r.get("variant", "fp32") for r in report["configs"] if r["backend"] == "runtime"):
            print(project_7b(report, variant=variant, accuracy_rows=accuracy_rows))
            print()
    if args.json and not args.report:
        write_json(args.json, report)
    if args.plot:
        R.plot(report, args.plot)
    return 0


def measure(args) -> dict:
    """Export the preset if needed, then run every configuration (the run itself)."""
    from bench import configs as BC
    from bench.run import run_benchmark
    from export.exporter import export_artifacts
    from runtime.video import write_test_video

    folder = args.artifacts or os.path.join("artifacts", args.model)
    if not os.path.isfile(os.path.join(folder, "manifest.json")):
        real_size = args.model.endswith("-random")  # billions of parameters: no fp32 ONNX export
        # ONNX Runtime's fused GroupQueryAttention: the fastest LLM graph for the runtime rows
        export_artifacts(args.model, folder, checkpoint=args.checkpoint, validate=False, torch_only=real_size,
                         dtype="bfloat16" if real_size else "float32", llm_attention="gqa",
                         fastv_layer="default",  # the split LLM graphs for the FastV rows
                         device=args.device if real_size else "cpu")  # real-size random weights drawn where they run
    video = args.video
    if not video:
        os.makedirs("out", exist_ok=True)
        video = write_test_video(os.path.join("out", "bench.mp4"), num_frames=96, size=(448, 336), fps=24.0)
    variants, configs = {}, BC.default_configs()
    prior = tuple(int(x) for x in args.prior.split(","))
    for mode in filter(None, args.variants.split(",")):
        variants[mode] = BC.quantized_folder(folder, mode, log=lambda s: print(s, file=sys.stderr))
        configs += BC.variant_configs(mode, args.encoder_slack, prior)
    if args.variants:  # fp32 with the same cheap prior and encoder resolution, for the lossless comparison
        configs += BC.variant_configs("fp32", args.encoder_slack, prior)[1:]
    if args.only:
        import re
        configs = [c for c in configs if any(t in c.name or re.search(t, c.name) for t in args.only)]
    return run_benchmark(folder, video, args.question, args.frames, args.runs, args.warmup, args.max_new_tokens,
                         args.max_pixels, args.min_pixels, args.threads, args.device, configs=configs,
                         runtime_backend=args.runtime_backend, attn=args.attn, variants=variants,
                         interleave=not args.sequential, log=lambda s: print(s, file=sys.stderr))


if __name__ == "__main__":
    sys.exit(main())
