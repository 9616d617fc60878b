"""Answer a question about a video from an artifact folder (torch-free with ONNX Runtime or TensorRT).

  python scripts/infer.py --artifacts artifacts/tiny --video clip.mp4 --question "What happens?"
  python scripts/infer.py --artifacts artifacts/7b-random --backend torch --device cuda ...  # reference backend

Prints the answer on stdout and one timing line on stderr; bad input exits non-zero with a
one-line error.
"""
import argparse
import os
import sys


def print_profiles(pipe, top: int = 6) -> None:
    from runtime.engines.ort_profile import op_time_shares

    for role, engine in pipe.engines.items():
        trace = engine.end_profiling()
        ops = op_time_shares(trace)
        total = sum(ms for _, ms, _ in ops)
        shares = ", ".join(f"{op} {share:.0%}" for op, _, share in ops[:top])
        print(f"[profile] {role}: {total / 1000:.2f} s in nodes: {shares} ({trace})", file=sys.stderr)


def torch_reference_pipeline(folder: str, device: str):
    from runtime.errors import EngineError
    from runtime.manifest import load_manifest
    try:
        import torch
        from export.torch_engine import torch_pipeline
    except ImportError as e:
        raise EngineError(f"the torch backend needs the export extra (pip install -e '.[export]'): {e}") from None
    if device == "cuda" and not torch.cuda.is_available():
        raise EngineError("--device cuda: torch sees no CUDA device")
    return torch_pipeline(load_manifest(folder), device=device)


def main() -> int:
    from runtime.admission import parse_bytes
    from runtime.compression import METHODS
    from runtime.options import Options
    from runtime.pipeline import load_pipeline

    D = Options()  # the defaults of every request option
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--artifacts", required=True)
    ap.add_argument("--video", required=True)
    ap.add_argument("--question", required=True)
    ap.add_argument("--method", default=D.method, choices=METHODS)
    ap.add_argument("--retention", type=float, default=D.retention)
    ap.add_argument("--budget", type=int, help="average tokens per temporal group (overrides --retention)")
    ap.add_argument("--cap", type=int, help="max tokens per temporal group")
    ap.add_argument("--frames", type=int, default=D.num_frames, help="frames to sample uniformly (0: Qwen fps sampling)")
    ap.add_argument("--fps", type=float, default=D.fps)
    ap.add_argument("--max-pixels", type=int)
    ap.add_argument("--min-pixels", type=int)
    ap.add_argument("--no-assistant", action="store_true", help="uniform budgets, no keyframe prior")
    ap.add_argument("--assistant-frames", type=int)
    ap.add_argument("--assistant-max-pixels", type=int)
    ap.add_argument("--max-new-tokens", type=int, default=D.max_new_tokens)
    ap.add_argument("--dycoke-kv", action="store_true", help="DyCoke's decode-time KV pruning (needs a folder "
                    "exported with --fastv-layer K; plain attention)")
    ap.add_argument("--kv-prune-ratio", type=float, default=D.kv_prune_ratio, help="DyCoke's p: visual KV rows dropped per step")
    ap.add_argument("--encoder-slack", type=float, help="budget-aware encoder resolution: encode each temporal group at the "
                                                        "smallest grid holding budget x SLACK tokens (>= 1; visionzip, uniform, dyntok)")
    ap.add_argument("--vision-chunk", type=int, help="temporal groups per vision-engine call (bounds memory on small devices)")
    ap.add_argument("--max-frames", type=int, default=D.max_frames, help="most frames fps sampling takes (--frames 0)")
    ap.add_argument("--prefill-chunk", type=int, default=D.prefill_chunk,
                    help="prompt tokens per prefill call, primary and assistant prior (memory linear in the prompt; 0: one call)")
    ap.add_argument("--memory-budget", type=parse_bytes, help="peak process memory allowed, e.g. 12G (default: memory in use + available)")
    ap.add_argument("--fit", default=D.fit, choices=["off", "auto"],
                    help="auto: lower pixels, then frames, until the request fits the context and the memory budget")
    ap.add_argument("--temperature", type=float, default=D.temperature)
    ap.add_argument("--top-p", type=float, default=D.top_p)
    ap.add_argument("--seed", type=int, default=D.seed)
    ap.add_argument("--provider", action="append", help="ONNX Runtime provider: cpu, cuda, tensorrt (repeatable)")
    ap.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "tensorrt", "torch"],
                    help="tensorrt: native engines built by scripts/build_engines.py; torch: the PyTorch reference "
                         "engines (needs the export extra; the only one for --torch-only folders)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="device of the torch backend")
    ap.add_argument("--trt-cache", help="engine cache folder for ONNX Runtime's TensorRT provider")
    ap.add_argument("--fp16", action="store_true", help="fp16 in ONNX Runtime's TensorRT provider")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--stream", action="store_true", help="print tokens as they come")
    ap.add_argument("--profile", metavar="DIR", help="ONNX Runtime per-node traces into DIR; prints the top operators per graph")
    ap.add_argument("--visualize", metavar="PNG", help="write a contact sheet of frames, weights, budgets and kept tokens")
    args = ap.parse_args()

    from runtime.encoder_plan import check_slack
    from runtime.errors import DyTokError

    if args.encoder_slack is not None:  # before any engine loads
        try:
            check_slack(args.encoder_slack)
        except DyTokError as e:
            print(f"error: --encoder-slack: {e}", file=sys.stderr)
            return 2

    opts = Options(num_frames=args.frames or None, fps=args.fps, max_pixels=args.max_pixels, min_pixels=args.min_pixels,
                   method=args.method, retention=args.retention, budget=args.budget, cap=args.cap,
                   assistant=not args.no_assistant, assistant_num_frames=args.assistant_frames,
                   assistant_max_pixels=args.assistant_max_pixels, max_new_tokens=args.max_new_tokens,
                   temperature=args.temperature, top_p=args.top_p, seed=args.seed,
                   vision_chunk=args.vision_chunk, max_frames=args.max_frames, prefill_chunk=args.prefill_chunk or None,
                   fit=args.fit, memory_budget=args.memory_budget,
                   dycoke_kv=args.dycoke_kv, kv_prune_ratio=args.kv_prune_ratio, encoder_slack=args.encoder_slack)
    try:
        if args.profile:
            os.makedirs(args.profile, exist_ok=True)
        if args.backend == "torch":
            pipe = torch_reference_pipeline(args.artifacts, args.device)
        else:
            pipe = load_pipeline(args.artifacts, tuple(args.provider or ["cpu"]), args.threads, profile_dir=args.profile,
                                 backend=args.backend, trt_cache=args.trt_cache, fp16=args.fp16)
        stream = (lambda s: print(s, end="", flush=True)) if args.stream else None
        result = pipe.answer(args.video, args.question, opts, on_token=stream)
        if args.visualize:
            from runtime.visualize import write_contact_sheet
            write_contact_sheet(args.visualize, result)
        if args.profile:
            print_profiles(pipe)
    except DyTokError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("" if args.stream else result.text)
    t = result.timings
    tps = t["decode_tokens"] / t["decode"] if t["decode"] > 0 else float("nan")
    kept, total = result.visual_tokens
    print(f"timing: video {t['decode_video']:.3f}s preprocess {t['preprocess']:.3f}s assistant {t['assistant']:.3f}s "
          f"vision {t['vision']:.3f}s compress {t['compress']:.3f}s prefill {t['prefill']:.3f}s "
          f"decode {tps:.1f} tok/s end-to-end {t['end_to_end']:.3f}s | visual tokens {kept}/{total} ({args.method})"
          + (f" | DyCoke KV pruned {int(t['kv_pruned_steps'])} of {t['decode_tokens']} steps" if "kv_pruned_steps" in t else ""),
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
