"""The main job on the embedded default, offline: export the ``tiny`` random-weight Qwen2.5-VL
(primary + assistant) to ONNX, generate a sample video, and answer a question about it with
DyToK + VisionZip on ONNX Runtime. Re-running reuses the unchanged graphs."""
import argparse
import os
from dataclasses import replace
import sys

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--artifacts", default="artifacts/tiny")
    ap.add_argument("--video", help="video file (default: a generated sample in out/)")
    ap.add_argument("--question", default="What happens in the video?")
    ap.add_argument("--retention", type=float, default=0.25)
    args = ap.parse_args()

    from export.exporter import export_artifacts
    from runtime.pipeline import Options, load_pipeline
    from runtime.video import write_test_video

    print(f"1. export tiny -> {args.artifacts}")
    export_artifacts("tiny", args.artifacts, log=lambda s: print("   " + s))
    video = args.video
    if not video:
        os.makedirs("out", exist_ok=True)
        video = write_test_video(os.path.join("out", "sample.mp4"))
    print(f"2. video {video}")
    pipe = load_pipeline(args.artifacts)
    opts = Options(num_frames=16, retention=args.retention, min_pixels=16 * 784, max_pixels=64 * 784, max_new_tokens=16)
    full = pipe.answer(video, args.question, replace(opts, method="none"))
    result = pipe.answer(video, args.question, opts)
    kept, total = result.visual_tokens
    print(f"3. question: {args.question!r} (random weights: the words are noise, the mechanics are real)")
    print(f"   frame weights (assistant prior): {[round(float(w), 3) for w in result.frame_weights]}")
    print(f"   budgets per temporal group     : {result.budgets.tolist()}  -> {kept}/{total} visual tokens kept")
    print(f"   answer (DyToK + VisionZip)     : {result.text!r}")
    print(f"   answer (all tokens)            : {full.text!r}")
    t = result.timings
    print("   timings (s): " + ", ".join(f"{k} {v:.3f}" for k, v in t.items() if k != "decode_tokens"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
