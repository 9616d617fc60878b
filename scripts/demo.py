"""Runtime-core demo on a generated video: decode -> preprocess -> budgets -> VisionZip -> positions.

No model runs here: the frame prior is a stand-in (how much each temporal group changes from
the previous one), and VisionZip works on the raw patch vectors. It shows the NumPy path that
runs between engine calls, with the numbers it produces.
"""
import argparse
import os

import numpy as np

from runtime.compression import allocate_budgets, budget_for_retention, visionzip_groups
from runtime.positions import gather_positions, kept_sequence_indices, mrope_positions, next_position
from runtime.preprocess import PreprocessConfig, preprocess_video
from runtime.video import sample_video, write_test_video


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--video", help="video file (default: a generated sample)")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--retention", type=float, default=0.25)
    args = ap.parse_args()
    path = args.video
    if not path:
        os.makedirs("out", exist_ok=True)
        path = write_test_video(os.path.join("out", "sample.mp4"))
    clip = sample_video(path, num_frames=args.frames)
    patches = preprocess_video(clip.frames, PreprocessConfig(min_pixels=16 * 784, max_pixels=64 * 784))
    t, h, w = patches.grid_thw
    per_group = patches.tokens_per_group
    units = patches.pixel_values.reshape(t * per_group, -1)  # one row per 2x2 merge unit
    change = np.abs(np.diff(units.reshape(t, per_group, -1), axis=0, prepend=units[None, :per_group])).mean(axis=(1, 2))
    weights = (change + 1e-3) / (change + 1e-3).sum()
    budget = budget_for_retention(per_group, args.retention)
    budgets = allocate_budgets(weights.astype(np.float32), budget, per_group)
    kept = visionzip_groups(units, units.var(axis=1), units[:, :64], budgets)
    ids = np.array([1, 2, 3, 10] + [11] * (t * per_group) + [12, 4, 5, 6])
    pos, _ = mrope_positions(ids, 11, [patches.grid_thw], [2 / clip.sampled_fps])
    kept_pos = gather_positions(pos, kept_sequence_indices(len(ids), 4, t * per_group, kept.source))
    print(f"video {path}: {len(clip.frames)} frames sampled, resized to {patches.resized_hw}, grid {patches.grid_thw}")
    print(f"{t} temporal groups x {per_group} tokens; retention {args.retention} -> {budget} tokens/group on average")
    print("frame weights :", np.round(weights, 3).tolist())
    print("budgets       :", budgets.tolist(), f"(sum {budgets.sum()} = {budget} x {t})")
    print(f"kept {len(kept.tokens)} of {t * per_group} visual tokens ({kept.dominant.sum()} dominant); "
          f"sequence {len(ids)} -> {kept_pos.shape[1]} positions, decode starts at {next_position(pos)}")


if __name__ == "__main__":
    main()
