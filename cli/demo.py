"""The main job on the embedded default, offline: export the trained ``needle`` pair (a tiny
Qwen2.5-VL primary and its smaller assistant, committed in weights/needle) to ONNX, generate a
needle video from the test split, and answer its question with DyToK + VisionZip on ONNX Runtime.
Prints the question, the right answer, the model's answers (all tokens and compressed), the frame
weights and where the token budget went. Re-running reuses the unchanged graphs.

``--model tiny`` runs the random-weight preset instead (mechanics only: its words are noise).
"""
import os
import sys
from dataclasses import replace


def main() -> int:
    from cli.common import DEFAULT_ARTIFACTS, export_preset, parser, quiet

    ap = parser(__doc__)
    ap.add_argument("--model", default="needle", choices=["needle", "tiny"], help="the trained needle pair, or the "
                                                                                  "random-weight tiny preset")
    ap.add_argument("--artifacts", help="artifact folder (default: the default model's folder for needle, "
                                        "artifacts/tiny for tiny)")
    ap.add_argument("--index", type=int, default=0, help="test-split video index (needle)")
    ap.add_argument("--retention", type=float, default=0.1, help="share of the visual tokens DyToK keeps")
    ap.add_argument("--video", help="tiny only: video file (default: a generated sample in out/)")
    ap.add_argument("--question", default="What happens in the video?", help="tiny only")
    args = ap.parse_args()
    quiet(args.verbose)

    from runtime.errors import DyTokError
    from runtime.options import Options
    from runtime.pipeline import load_pipeline

    out = args.artifacts or (DEFAULT_ARTIFACTS if args.model == "needle" else os.path.join("artifacts", args.model))
    print(f"1. export {args.model} -> {out}")
    try:
        export_preset(args.model, out, log=lambda s: print("   " + s))
    except DyTokError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    pipe = load_pipeline(out)
    if args.model == "tiny":
        return _tiny(pipe, args)

    import numpy as np

    from synthetic.needle import make_video, split_seed, write_video
    from runtime.video import sample_video

    video = make_video(split_seed("test", args.index))
    os.makedirs("out", exist_ok=True)
    path = write_video(video, os.path.join("out", "needle_sample.avi"))
    print(f"2. video {path}: test seed {video.seed}, {len(video.frames)} frames of {video.frames.shape[2]}x"
          f"{video.frames.shape[1]} ({video.num_groups} temporal groups of 2 frames), family {video.family}")
    frames = sample_video(path, num_frames=len(video.frames))  # every frame, decoded back (lossless)
    assert np.array_equal(frames.frames, video.frames)
    opts = Options(num_frames=len(video.frames), retention=args.retention, max_new_tokens=4)
    full = pipe.answer(frames, video.question, replace(opts, method="none"))
    result = pipe.answer(frames, video.question, opts)
    kept, total = result.visual_tokens
    needle = list(video.needle_groups)
    on_needle = int(result.budgets[needle].sum())
    print(f"3. question     : {video.question}")
    print(f"   right answer : {video.answer}   (held by temporal group(s) {needle})")
    print(f"   model, all {total} visual tokens           : {full.text!r}"
          f" {'(right)' if full.text.strip() == video.answer else '(wrong)'}")
    print(f"   model, DyToK + VisionZip at {args.retention:.0%} ({kept} kept): {result.text!r}"
          f" {'(right)' if result.text.strip() == video.answer else '(wrong)'}")
    own = pipe.answer(frames, video.question, replace(opts, method="self"))
    print(f"   model, its own prior at {args.retention:.0%} (--method self, {own.visual_tokens[0]} kept): {own.text!r}"
          f" {'(right)' if own.text.strip() == video.answer else '(wrong)'}")
    w = result.frame_weights
    print(f"   frame weights (assistant prior): {[round(float(x), 3) for x in w]}")
    print(f"   budgets per temporal group     : {result.budgets.tolist()}")
    print(f"   where the budget went: {on_needle}/{int(result.budgets.sum())} tokens "
          f"({on_needle / result.budgets.sum():.0%}) on the answer's group(s), which hold "
          f"{len(needle) / video.num_groups:.0%} of the video; the prior's top group is {int(np.argmax(w))}")
    t = result.timings
    print("   timings (s): " + ", ".join(f"{k} {v:.3f}" for k, v in t.items() if k != "decode_tokens"))
    return 0


def _tiny(pipe, args) -> int:
    from runtime.options import Options
    from runtime.video import write_test_video

    video = args.video
    if not video:
        os.makedirs("out", exist_ok=True)
        video = write_test_video(os.path.join("out", "sample.mp4"))
    print(f"2. video {video}")
    opts = Options(num_frames=16, retention=args.retention, min_pixels=16 * 784, max_pixels=64 * 784, max_new_tokens=16)
    full = pipe.answer(video, args.question, replace(opts, method="none"))
    result = pipe.answer(video, args.question, opts)
    kept, total = result.visual_tokens
    print(f"3. question: {args.question!r} (random weights: the words are noise, the mechanics are real)")
    print(f"   frame weights (assistant prior): {[round(float(w), 3) for w in result.frame_weights]}")
    print(f"   budgets per temporal group     : {result.budgets.tolist()}  -> {kept}/{total} visual tokens kept")
    print(f"   answer (DyToK + VisionZip)     : {result.text!r}")
    print(f"   answer (all tokens)            : {full.text!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
