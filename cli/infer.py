"""Answer a question about a video (torch-free on ONNX Runtime or TensorRT).

  python scripts/infer.py --video clip.mp4 --question "What colour is the star?"
  python scripts/infer.py --artifacts artifacts/qwen7b --video clip.mp4 --question "What happens?" --retention 0.1
  python scripts/infer.py --artifacts artifacts/7b-random --backend torch --device cuda ...  # PyTorch engines

Without --artifacts it answers with the demo model (artifacts/needle, exported on first use): a
2M-parameter Qwen2.5-VL trained on synthetic needle videos, which answers only their questions.
For real videos export a local checkpoint first (README, "Your own video"). Prints the answer on
stdout and one timing line on stderr; bad input exits with code 2 and one line naming the flag.
"""
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


def timing_line(result, method: str) -> str:
    t = result.timings
    kept, total = result.visual_tokens
    n = t["decode_tokens"]
    decode = f"decode {n / t['decode']:.1f} tok/s" if n >= 4 and t["decode"] > 0 else f"decode {n + 1} token(s)"
    return (f"timing: video {t['decode_video']:.3f}s preprocess {t['preprocess']:.3f}s assistant {t['assistant']:.3f}s "
            f"vision {t['vision']:.3f}s compress {t['compress']:.3f}s prefill {t['prefill']:.3f}s {decode} "
            f"end-to-end {t['end_to_end']:.3f}s | visual tokens {kept}/{total} ({method})"
            + (f" | DyCoke KV pruned {int(t['kv_pruned_steps'])} of {n} steps" if "kv_pruned_steps" in t else ""))


def main() -> int:
    from cli.common import parser, quiet
    from runtime.admission import parse_bytes
    from runtime.compression import METHODS
    from runtime.options import FITS, Options

    D = Options()  # the defaults of every request option
    ap = parser(__doc__)
    ap.add_argument("--artifacts", help="artifact folder from scripts/export.py (default: the needle demo model, exported "
                                        "on first use)")
    ap.add_argument("--video", required=True, help="video file (any container OpenCV decodes)")
    ap.add_argument("--question", required=True, help="what to ask about the video")
    ap.add_argument("--method", default=D.method, choices=METHODS, help="visual-token compression method")
    ap.add_argument("--retention", type=float, default=D.retention, help="share of the visual tokens kept, in (0, 1]")
    ap.add_argument("--budget", type=int, help="tokens per temporal group on average, instead of --retention")
    ap.add_argument("--cap", type=int, help="most tokens one temporal group may keep (default: all of its tokens)")
    ap.add_argument("--frames", type=int, default=D.num_frames, help="frames sampled uniformly; 0: Qwen's fps sampling "
                                                                     "(--fps, --max-frames)")
    ap.add_argument("--fps", type=float, default=D.fps, help="frames per second of fps sampling (--frames 0)")
    ap.add_argument("--max-frames", type=int, default=D.max_frames, help="most frames fps sampling takes (--frames 0)")
    ap.add_argument("--max-pixels", type=int, help="most pixels per frame for the primary (default: the folder's)")
    ap.add_argument("--min-pixels", type=int, help="fewest pixels per frame (default: the folder's)")
    ap.add_argument("--no-assistant", action="store_true", help="no keyframe prior: every group gets the same budget")
    ap.add_argument("--assistant-frames", type=int, help="frames the assistant's prior sees (default: the primary's)")
    ap.add_argument("--assistant-max-pixels", type=int, help="most pixels per frame for the assistant (default: "
                                                             "the primary's)")
    ap.add_argument("--max-new-tokens", type=int, default=D.max_new_tokens, help="most tokens of the answer")
    ap.add_argument("--dycoke-kv", action="store_true", help="DyCoke's decode-time KV pruning (needs a folder exported "
                                                             "with --fastv-layer K and plain attention)")
    ap.add_argument("--kv-prune-ratio", type=float, default=D.kv_prune_ratio, help="DyCoke's p: share of the visual KV "
                                                                                   "rows dropped per decode step")
    ap.add_argument("--encoder-slack", type=float, help="budget-aware encoder resolution: encode each temporal group at "
                                                        "the smallest grid holding budget x SLACK tokens (>= 1)")
    ap.add_argument("--vision-chunk", type=int, help="temporal groups per vision-engine call (bounds memory)")
    ap.add_argument("--prefill-chunk", type=int, default=D.prefill_chunk, help="prompt tokens per prefill call "
                                                                               "(memory linear in the prompt; 0: one call)")
    ap.add_argument("--memory-budget", type=parse_bytes, help="peak process memory allowed, e.g. 12G (default: memory in "
                                                              "use + available)")
    ap.add_argument("--fit", default=D.fit, choices=FITS, help="auto: fewer pixels, then frames, until the request fits "
                                                               "the context and memory (one note); strict: an error")
    ap.add_argument("--temperature", type=float, default=D.temperature, help="0: greedy decoding")
    ap.add_argument("--top-p", type=float, default=D.top_p, help="nucleus sampling mass (with --temperature > 0)")
    ap.add_argument("--seed", type=int, default=D.seed, help="sampling seed")
    ap.add_argument("--provider", action="append", help="ONNX Runtime provider: cpu, cuda, tensorrt (repeatable; "
                                                        "default: cpu)")
    ap.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "tensorrt", "torch"],
                    help="engines: tensorrt = native engines from scripts/build_engines.py; torch = the PyTorch "
                         "engines (export extra; the only one for --torch-only folders)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="device of the torch backend")
    ap.add_argument("--trt-cache", help="engine cache folder for ONNX Runtime's TensorRT provider")
    ap.add_argument("--fp16", action="store_true", help="fp16 in ONNX Runtime's TensorRT provider")
    ap.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads (default: its own)")
    ap.add_argument("--stream", action="store_true", help="print the answer as it is generated")
    ap.add_argument("--profile", metavar="DIR", help="ONNX Runtime per-node traces into DIR; prints the top operators")
    ap.add_argument("--visualize", metavar="PNG", help="write a contact sheet of frames, weights, budgets and kept tokens")
    args = ap.parse_args()
    quiet(args.verbose)

    from cli.common import artifacts_or_default, model_note, torch_backend_pipeline
    from runtime.encoder_plan import check_slack
    from runtime.errors import DyTokError
    from runtime.notes import note
    from runtime.options import check_request
    from runtime.pipeline import load_pipeline

    try:
        if args.frames < 0:
            raise DyTokError(f"--frames {args.frames}: expected a positive count, or 0 for fps sampling")
        opts = Options(num_frames=args.frames or None, fps=args.fps, max_pixels=args.max_pixels,
                       min_pixels=args.min_pixels, method=args.method, retention=args.retention, budget=args.budget,
                       cap=args.cap, assistant=not args.no_assistant, assistant_num_frames=args.assistant_frames,
                       assistant_max_pixels=args.assistant_max_pixels, max_new_tokens=args.max_new_tokens,
                       temperature=args.temperature, top_p=args.top_p, seed=args.seed, vision_chunk=args.vision_chunk,
                       max_frames=args.max_frames, prefill_chunk=args.prefill_chunk or None, fit=args.fit,
                       memory_budget=args.memory_budget, dycoke_kv=args.dycoke_kv, kv_prune_ratio=args.kv_prune_ratio,
                       encoder_slack=args.encoder_slack)
        check_request(args.question, opts)  # before any model loads
        if args.encoder_slack is not None:
            check_slack(args.encoder_slack)
        folder = artifacts_or_default(args.artifacts)
        if args.profile:
            os.makedirs(args.profile, exist_ok=True)
        if args.backend == "torch":
            pipe = torch_backend_pipeline(folder, args.device)
        else:
            pipe = load_pipeline(folder, tuple(args.provider or ["cpu"]), args.threads, profile_dir=args.profile,
                                 backend=args.backend, trt_cache=args.trt_cache, fp16=args.fp16)
        random = not any((pipe.m.data.get("checkpoints") or {}).values())
        stream = (lambda s: print(s, end="", flush=True)) if args.stream and not random else None
        result = pipe.answer(args.video, args.question, opts, on_token=stream)
        if args.visualize:
            from runtime.visualize import write_contact_sheet
            write_contact_sheet(args.visualize, result)
        if args.profile:
            print_profiles(pipe)
        if (line := model_note(pipe.m)) is not None:  # after the answer, so that a bad input stays one line
            note(line)
    except DyTokError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if random:
        print(f"({len(result.token_ids)} tokens from random weights: not text)")
    else:
        print("" if args.stream else result.text)
    print(timing_line(result, args.method), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
