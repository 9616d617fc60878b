"""Export Qwen2.5-VL or LLaVA-OneVision (primary + assistant) to an ONNX artifact folder.

  python scripts/export.py --model tiny --out artifacts/tiny
  python scripts/export.py --model needle --out artifacts/needle   # the trained needle pair (weights/needle)
  python scripts/export.py --model qwen2.5-vl-7b --checkpoint /models/Qwen2.5-VL-7B-Instruct --out artifacts/7b
  python scripts/export.py --model qwen2.5-vl-7b-random --torch-only --dtype bfloat16 --out artifacts/7b-random
  python scripts/export.py --model llava-onevision-tiny --out artifacts/llava-tiny
  python scripts/export.py --model llava-onevision-qwen2-7b-ov --checkpoint /models/llava-onevision-qwen2-7b-ov-hf \
      --assistant-checkpoint /models/llava-onevision-qwen2-0.5b-ov-hf --out artifacts/llava-7b
"""
import os
import sys
import time


def main() -> int:
    from cli.common import TORCH_DTYPES, parser, quiet

    ap = parser(__doc__)
    ap.add_argument("--model", default="tiny", help="preset: needle (trained, committed), tiny, small, qwen2.5-vl-3b/7b/32b/72b, "
                                                    "qwen2.5-vl-3b/7b-random (real sizes, random weights); LLaVA-OneVision: "
                                                    "llava-onevision-tiny/small, llava-onevision-qwen2-7b-ov/0.5b-ov, "
                                                    "llava-onevision-qwen2-7b/0.5b-random")
    ap.add_argument("--assistant", default="default", help="assistant preset for the keyframe prior, or 'none'")
    ap.add_argument("--checkpoint", help="local folder with config.json + *.safetensors for --model")
    ap.add_argument("--assistant-checkpoint", help="local folder for the assistant's weights")
    ap.add_argument("--layers", default=None, help="assistant layers for the prior: none, last_third, k or a.bb "
                                                   "(default: the assistant preset's choice, else last_third)")
    ap.add_argument("--seed", type=int, default=0, help="seed of random-weight presets")
    ap.add_argument("--out", help="artifact folder to write (default: artifacts/<model>)")
    ap.add_argument("--skip-validate", action="store_true", help="skip the ONNX-vs-torch check at other shapes")
    ap.add_argument("--llm-attention", default="plain", choices=["plain", "gqa"],
                    help="attention of the LLM graphs (primary LLM, assistant prior): plain ONNX (every runtime, "
                         "TensorRT included) or ONNX Runtime's fused GroupQueryAttention (faster there; not TensorRT)")
    ap.add_argument("--torch-only", action="store_true",
                    help="no ONNX graphs: a folder for the PyTorch engine backend (real-size GPU benchmarks)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                    help="where a random preset draws its weights, for a --torch-only folder (a GPU draws a 7B in seconds)")
    ap.add_argument("--dtype", default="float32", choices=TORCH_DTYPES,
                    help="weights' dtype of a --torch-only folder (ONNX graphs are always fp32)")
    ap.add_argument("--fastv-layer", metavar="K", help="also export the primary LLM split at layer K (an integer, or "
                    "'default' = 3) as primary_llm_lo/_hi, with the final norm's weight: needed by --method fastv, "
                    "--method dart (the paper's K is 2) and --dycoke-kv")
    args = ap.parse_args()
    quiet(args.verbose)
    from export.exporter import export_artifacts
    from runtime.errors import DyTokError

    t0 = time.perf_counter()
    try:
        out = export_artifacts(args.model, args.out or os.path.join("artifacts", args.model), args.assistant, args.checkpoint, args.assistant_checkpoint,
                               args.layers, args.seed, validate=not args.skip_validate, torch_only=args.torch_only,
                               dtype=args.dtype, llm_attention=args.llm_attention,
                               fastv_layer=args.fastv_layer, device=args.device)
    except DyTokError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out} in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
