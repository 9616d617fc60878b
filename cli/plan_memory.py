"""Will the deployment fit? The primary model AND its assistant: weights, KV cache at the profile
maximum and every engine's activation peak, summed, against a device.

  python scripts/plan_memory.py --model qwen2.5-vl-7b --precision int8 --frames 32 --device orin-nx-16gb
  python scripts/plan_memory.py --model qwen2.5-vl-7b --precision int8 --frames 16 --max-pixels 200704 \\
      --assistant qwen2.5-vl-3b --assistant-precision int8 --assistant-frames 8 --assistant-max-pixels 50176 --device orin-nx-16gb
  python scripts/plan_memory.py --artifacts artifacts/small --precision fp16 --frames 16 --device orin-nano-8gb
  # the DyToK paper's pair: LLaVA-OneVision 7B in int4 with the 0.5B assistant (every frame 384 x 384)
  python scripts/plan_memory.py --model llava-onevision-qwen2-7b --precision int4 --assistant-precision fp16 \\
      --frames 32 --device orin-nx-16gb

The assistant defaults to the model's default (3B for 7B and 32B, 7B for 72B, LLaVA-OV 0.5B for LLaVA-OV
7B; --assistant none for none; either family for either) at the primary's precision, frames and pixels;
the --assistant-* flags set its own. Pixel flags do not apply to LLaVA-OneVision (384 x 384 frames).
Computed from the configs (formulas in runtime/memory_plan.py); prints the --max-context to give
scripts/build_engines.py. With --device, exits 1 when the sum does not fit.
"""
import sys


DEFAULT_ASSISTANT = {"qwen2.5-vl-7b": "qwen2.5-vl-3b", "qwen2.5-vl-32b": "qwen2.5-vl-3b", "qwen2.5-vl-72b": "qwen2.5-vl-7b",
                     "llava-onevision-qwen2-7b": "llava-onevision-qwen2-0.5b"}


def _manifest_config(m, which: str) -> dict:
    pre, model = m.section(which, "preprocess"), m.model(which)
    pixels = {k: pre[k] for k in ("max_pixels", "min_pixels", "temporal_patch_size") if k in pre}
    return dict(model, vision_heads=model["vision_hidden_size"] // model["vision_key_dim"], **pixels,
                family=m.family_name(which), tie_word_embeddings=False)


def _frames(config: dict, frames: int, pixels: int | None) -> str:
    if config.get("family") == "llava_onevision":
        return f"{frames} frames at {config['image_size']}x{config['image_size']}"
    return f"{frames} frames at <= {pixels or config['max_pixels']} px"


def size(b: float) -> str:
    """Bytes as a fixed-width figure: MB below 1 GB, else GB."""
    return f"{b / 1e6:8.1f} MB" if b < 1e9 else f"{b / 1e9:8.2f} GB"


SMALLER = {"fp32": ("bf16", "int8", "int4"), "bf16": ("int8", "int4"), "fp16": ("int8", "int4"), "int8": ("int4",),
           "fp8": ("int4",), "int4": ()}


def hints(p: dict, assistant: bool) -> str:
    """The flags that shrink the two largest parts a flag can shrink, of a plan that does not fit."""
    parts = {(role, kind, what): b for role, part in p["parts"].items()
             for kind in ("weights", "activations") for what, b in part[kind].items()}
    parts.update({(role, "KV", "cache"): part["kv_cache"] for role, part in p["parts"].items()})
    out = []
    for role, kind, what in sorted(parts, key=parts.get, reverse=True):
        prefix = "--assistant-" if role == "assistant" else "--"
        if kind == "weights":
            lower = SMALLER[p["parts"][role]["precision"]]
            flags = [f"{prefix}precision {'/'.join(lower)}"] if lower else []
        elif kind == "KV":
            flags = ["--retention", "--new-tokens"] if role == "primary" else [f"{prefix}frames", "--prior-depth"]
        else:
            flags = [f"{prefix}frames", f"{prefix}max-pixels"] + (["--vision-chunk 1"] if what == "vision" else [])
        if assistant and role == "assistant":
            flags.append("--assistant none")
        if flags and len(out) < 2:
            out.append(f"{role} {kind} {what} ({size(parts[role, kind, what]).strip()}): {', '.join(flags)}")
    return "largest parts: " + ("; ".join(out) if out else "none that a flag shrinks; a smaller model or a larger device")


def main() -> int:
    from runtime.memory_plan import DEVICES, DTYPES, Workload, folder_precision, plan_deployment
    from runtime.models import REAL_MODELS

    from cli.common import parser

    ap = parser(__doc__)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", choices=sorted(REAL_MODELS))
    src.add_argument("--artifacts", help="read the configs from an artifact folder's manifest")
    ap.add_argument("--precision", choices=sorted(DTYPES), help="weights' precision (default: the folder's with "
                                                                 "--artifacts, else bf16)")
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--max-pixels", type=int, help="per frame (default: the model's)")
    ap.add_argument("--retention", type=float, default=0.25)
    ap.add_argument("--text-tokens", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--vision-chunk", type=int, default=2, help="temporal groups per ViT call (0: all at once)")
    ap.add_argument("--assistant", help="assistant model, or 'none' (default: the model's default assistant)")
    ap.add_argument("--assistant-precision", choices=sorted(DTYPES), help="default: --precision")
    ap.add_argument("--assistant-frames", type=int, help="default: --frames")
    ap.add_argument("--assistant-max-pixels", type=int, help="default: --max-pixels")
    ap.add_argument("--prior-depth", type=int, help="assistant LLM layers up to the deepest prior layer (default: all)")
    ap.add_argument("--device", choices=sorted(DEVICES))
    ap.add_argument("--reserve-gb", type=float, help="memory kept by OS/CUDA/TensorRT (default: per device)")
    args = ap.parse_args()

    assistant = assistant_name = None
    if args.model:
        config, name = REAL_MODELS[args.model], args.model
        assistant_name = DEFAULT_ASSISTANT.get(args.model) if args.assistant is None else args.assistant
        if assistant_name and assistant_name != "none":
            if assistant_name not in REAL_MODELS:
                print(f"error: --assistant {assistant_name!r}: expected 'none' or one of {sorted(REAL_MODELS)}", file=sys.stderr)
                return 2
            assistant = REAL_MODELS[assistant_name]
    else:
        from runtime.errors import DyTokError
        from runtime.manifest import load_manifest
        try:
            m = load_manifest(args.artifacts, verify_hashes=False)
        except DyTokError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        config, name = _manifest_config(m, "primary"), m.data["preset"]
        args.precision = args.precision or folder_precision(m)
        if args.assistant not in ("none",) and "assistant" in m.data["models"]:
            if args.assistant not in (None, "manifest"):
                print("error: with --artifacts the assistant comes from the folder: use --assistant none or leave it out",
                      file=sys.stderr)
                return 2
            assistant, assistant_name = _manifest_config(m, "assistant"), "assistant"
    args.precision = args.precision or "bf16"
    w = Workload(args.frames, args.max_pixels, args.retention, args.text_tokens, args.new_tokens, args.vision_chunk or None)
    aw = Workload(args.assistant_frames or args.frames, args.assistant_max_pixels or args.max_pixels, 1.0, args.text_tokens, 0,
                  args.vision_chunk or None)
    try:
        p = plan_deployment(config, args.precision, w, assistant, args.assistant_precision, aw, args.prior_depth,
                            args.device, args.reserve_gb)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for role, part in p["parts"].items():
        label = name if role == "primary" else assistant_name
        cfg, work = (config, w) if role == "primary" else (assistant, aw)
        extra = (f"{args.retention:.0%} kept, context {part['context']}" if role == "primary"
                 else f"all tokens seen, prior over {part['context']} tokens, {part['prior_depth']} layers")
        print(f"{role}: {label}, {part['precision']}, {_frames(cfg, work.frames, work.max_pixels)} -> "
              f"{part['visual_tokens']} visual tokens, {extra}")
        rows = [(f"weights {what}", b) for what, b in part["weights"].items()]
        if role == "primary":
            rows.append((f"KV cache (2 sets, --max-context {part['context']})", part["kv_cache"]))
        else:
            rows.append((f"KV cache (2 sets, prior over {part['context']} tokens)", part["kv_cache"]))
        rows += [(f"activations {what}", b) for what, b in part["activations"].items()]
        rows.append(("subtotal", part["total"]))
        for label, b in rows:
            print(f"  {label:<44}{size(b)}")
        print(f"  {'embedding table (memory-mapped, not counted)':<44}{size(part['embeddings_mapped'])}")
    if "assistant" not in p["parts"]:
        print("assistant: none")
    print(f"{'total (all engines resident)':<46}{size(p['total'])}")
    if args.device:
        print(f"{args.device + ' usable':<46}{size(p['usable'])} -> {'fits' if p['fits'] else 'does NOT fit'}")
        if not p["fits"]:
            print(hints(p, "assistant" in p["parts"]))
        return 0 if p["fits"] else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
