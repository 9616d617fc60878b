"""Accuracy against retention on the needle test videos, through an exported artifact folder.

  python scripts/evaluate.py --artifacts artifacts/needle --json out/needle_eval.json --plot out/needle_eval.png
  python scripts/evaluate.py --artifacts artifacts/needle --videos 30 --methods visionzip,uniform \\
      --retentions 0.1,0.05 --assistants full,none --set max_pixels=3136 --json out/variant.json

Every method x retention x assistant setting (full, reduced = half the frames and a quarter of the
pixels, F:P = the prior at 1/F of the frames and 1/P of the pixels, none) on the test split (or --split val), on ONNX Runtime. JSON rows: method, retention,
assistant, accuracy, hit_rate (share of the kept tokens on the answer's temporal groups), n, per
family, and the --set overrides of runtime.pipeline.Options under "options".

--backend torch runs the same grid on the PyTorch engines (the export extra), e.g. in bf16 to see
what a GPU's bf16 numerics do to accuracy:
  python scripts/evaluate.py --artifacts artifacts/needle --backend torch --dtype bfloat16 --json out/bf16.json
"""
import argparse
import sys
import time


def _list(text, cast=str):
    return tuple(cast(x) for x in text.split(",") if x)


def main() -> int:
    from cli.common import TORCH_DTYPES

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--artifacts", help="artifact folder (e.g. from scripts/export.py --model needle)")
    ap.add_argument("--merge", nargs="+", metavar="JSON", help="combine reports of disjoint --seed ranges instead")
    ap.add_argument("--videos", type=int, default=300, help="number of videos (families rotate)")
    ap.add_argument("--seed", type=int, default=None, help="index of the first seed within the split (default 0)")
    ap.add_argument("--split", default="test", choices=["test", "val"])
    ap.add_argument("--methods", default="visionzip,uniform,dycoke,dyntok,none")
    ap.add_argument("--retentions", default="1.0,0.5,0.25,0.1,0.05")
    ap.add_argument("--assistants", default="full,reduced,none",
                    help="prior settings: full, reduced (= 2:4), none, or F:P (1/F of the frames, 1/P of the pixels)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a field of runtime.pipeline.Options (repeatable), e.g. cap=8, max_pixels=3136")
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    ap.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "torch"],
                    help="engines: ONNX Runtime (default) or the PyTorch engines (export extra)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="device of the torch backend")
    ap.add_argument("--dtype", choices=TORCH_DTYPES,
                    help="weights of the torch backend (default: the folder's)")
    ap.add_argument("--variant", help="weights label written into every row (e.g. dynamic-int8 for a quantized folder), "
                                      "what scripts/benchmark.py --accuracy joins on")
    ap.add_argument("--json", required=True, help="report to write")
    ap.add_argument("--plot", help="PNG of accuracy and hit rate against retention")
    args = ap.parse_args()

    from evaluation.evaluate import grid, merge, parse_options, plot, run
    from runtime.fileio import write_json
    from runtime.errors import DyTokError

    t0 = time.perf_counter()
    try:
        if args.videos < 1:
            raise DyTokError(f"--videos {args.videos}: expected at least 1")
        if args.seed is not None and args.seed < 0:
            raise DyTokError(f"--seed {args.seed}: expected a non-negative index")
        if args.merge:
            import json
            report = merge([json.load(open(p)) for p in args.merge])
        elif not args.artifacts:
            raise DyTokError("--artifacts is required (or --merge)")
        else:
            if args.backend != "torch" and (args.dtype or args.device != "cpu"):
                raise DyTokError("--dtype and --device are for --backend torch")
            methods, retentions, assistants = _list(args.methods), _list(args.retentions, float), _list(args.assistants)
            overrides = parse_options(args.set)
            grid(methods, retentions, assistants)  # bad names fail before any model loads
            pipe = None
            if args.backend == "torch":
                from cli.common import torch_backend_pipeline
                pipe = torch_backend_pipeline(args.artifacts, args.device, args.dtype)
            report = run(args.artifacts, args.videos, args.seed, args.split, methods, retentions, assistants,
                         overrides, args.threads, pipe=pipe)
    except (DyTokError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.variant:
        for r in report["rows"]:
            r["variant"] = args.variant
    write_json(args.json, report)
    if args.plot:
        plot(report["rows"], args.plot, f"{report['preset']}: {report['videos']} {report['split']} videos")
    print(f"{'method':<32} {'retention':>9} {'accuracy':>9} {'hit rate':>9} {'n':>5}")
    for r in report["rows"]:
        print(f"{r['label']:<32} {r['retention']:>9.2f} {r['accuracy']:>9.3f} {r['hit_rate']:>9.3f} {r['n']:>5}")
    print(f"wrote {args.json}" + (f" and {args.plot}" if args.plot else "") + f" in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
