"""Will it fit? Weights, KV cache at the profile maximum and activation peak for a device.

  python scripts/plan_memory.py --model qwen2.5-vl-7b --precision int4 --frames 32 --device orin-nx-16gb
  python scripts/plan_memory.py --artifacts artifacts/small --precision fp16 --frames 16 --device orin-nano-8gb

Computed from the model config (formulas in runtime/memory_plan.py); prints the --max-context
to give scripts/build_engines.py. Exits 1 when it does not fit.
"""
import argparse
import os
import sys

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository


def main() -> int:
    from runtime.memory_plan import BYTES, DEVICES, GB, REAL_MODELS, Workload, plan

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", choices=sorted(REAL_MODELS))
    src.add_argument("--artifacts", help="read the config from an artifact folder's manifest")
    ap.add_argument("--precision", default="fp16", choices=sorted(BYTES))
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--max-pixels", type=int, help="per frame (default: the model's)")
    ap.add_argument("--retention", type=float, default=0.25)
    ap.add_argument("--text-tokens", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--vision-chunk", type=int, default=2, help="temporal groups per ViT call (0: all at once)")
    ap.add_argument("--device", choices=sorted(DEVICES))
    ap.add_argument("--reserve-gb", type=float, help="memory kept by OS/CUDA/TensorRT (default: per device)")
    args = ap.parse_args()

    if args.model:
        config = REAL_MODELS[args.model]
        name = args.model
    else:
        from runtime.errors import DyTokError
        from runtime.manifest import load_manifest
        try:
            m = load_manifest(args.artifacts, verify_hashes=False)
        except DyTokError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        pre, model = m.data["preprocess"], m.model("primary")
        vision_heads = model["vision_hidden_size"] // model["vision_key_dim"]
        config = dict(model, vision_heads=vision_heads, max_pixels=pre["max_pixels"], min_pixels=pre["min_pixels"],
                      temporal_patch_size=pre["temporal_patch_size"], tie_word_embeddings=False)
        name = m.data["preset"]
    w = Workload(args.frames, args.max_pixels, args.retention, args.text_tokens, args.new_tokens, args.vision_chunk or None)
    p = plan(config, args.precision, w, args.device, args.reserve_gb)
    gb = lambda b: f"{b / GB:7.2f} GB"  # noqa: E731
    print(f"{name} (primary model; plan the assistant separately), {args.precision}, {args.frames} frames -> {p['visual_tokens']} visual tokens, "
          f"{args.retention:.0%} kept, context {p['context']}")
    for part, b in p["weights"].items():
        print(f"  weights {part:<16}{gb(b)}")
    print(f"  KV cache (2 sets)    {gb(p['kv_cache'])}   at --max-context {p['context']}")
    for part, b in p["activations"].items():
        print(f"  activations {part:<12}{gb(b)}")
    print(f"  total (peak)         {gb(p['total'])}")
    if args.device:
        verdict = "fits" if p["fits"] else "does NOT fit"
        print(f"{args.device}: {gb(p['usable'])} usable -> {verdict}")
        return 0 if p["fits"] else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
