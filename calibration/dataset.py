"""A calibration set: the inputs every graph sees when the real pipeline runs on real video.

Each video of a folder gives ``clips`` clips (consecutive spans, frames sampled uniformly
inside each); every clip runs through the fp32 pipeline with DyToK compression, so the LLM is
calibrated on compressed video tokens and real prompts, not on random tensors. A recording
wrapper around each engine stores the feeds of its calls as ``.npz`` files (no pickle):

    <out>/index.json                       videos, clips, split, feeds per role
    <out>/<role>/<split>-<clip>-<call>.npz  one engine call's feeds

Whole videos are held out (every ``holdout``-th), so the accuracy report never sees a clip
from a video it was calibrated on.
"""
from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from runtime.engines.base import Engine
from runtime.errors import ManifestError, VideoError
from runtime.options import Options
from runtime.pipeline import Pipeline
from runtime.video import probe, read_frames

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v")
QUESTIONS = ("What happens in the video?", "Describe the main object and how it moves.",
             "What changes between the beginning and the end?", "How many distinct scenes are there?")


class Recorder(Engine):
    """Passes calls through to an engine and keeps copies of the first ``limit`` feeds per clip."""

    def __init__(self, inner: Engine, limit: int):
        self.inner, self.limit = inner, limit
        self.name, self._inputs, self._outputs = inner.name, inner.input_names, inner.output_names
        self.calls: list[dict[str, np.ndarray]] = []

    def _run(self, feeds):
        if len(self.calls) < self.limit:
            self.calls.append({n: np.array(feeds[n]) for n in self._inputs})
        return self.inner.run(feeds)


@dataclass(frozen=True)
class CollectOptions:
    clips: int = 2  # per video
    frames: int = 8  # per clip
    decode_steps: int = 3  # LLM calls recorded per clip: the prefill, then decode steps
    holdout: int = 4  # every k-th video is held out for the accuracy report
    method: str = "visionzip"
    retention: float = 0.25
    max_pixels: int | None = None


def list_videos(folder: str) -> list[str]:
    if not os.path.isdir(folder):
        raise VideoError(f"calibration video folder {folder!r} does not exist")
    videos = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.lower().endswith(VIDEO_EXTENSIONS))
    if not videos:
        raise VideoError(f"no videos ({', '.join(VIDEO_EXTENSIONS)}) in {folder!r}")
    return videos


def clip_indices(frame_count: int, clips: int, frames: int) -> list[np.ndarray]:
    """``clips`` consecutive equal spans of a video, ``frames`` indices spread uniformly in each."""
    bounds = np.linspace(0, frame_count, clips + 1)
    return [np.linspace(lo, max(lo, hi - 1), frames).round().astype(np.int64) for lo, hi in zip(bounds[:-1], bounds[1:])]


def collect(pipeline: Pipeline, videos: str, out: str, opts: CollectOptions = CollectOptions()) -> dict:
    """Run the pipeline over every clip, recording each graph's feeds into ``out`` (atomically)."""
    paths = list_videos(videos)
    limits = {role: (opts.decode_steps if role == "primary_llm" else 1) for role in pipeline.engines}
    originals = dict(pipeline.engines)
    tmp = f"{out.rstrip('/')}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    index = {"options": opts.__dict__, "videos": [], "samples": {role: [] for role in originals}}
    run_opts = Options(num_frames=opts.frames, method=opts.method, retention=opts.retention, max_pixels=opts.max_pixels,
                       max_new_tokens=opts.decode_steps, ignore_eos=True)
    try:
        clip_id = 0
        for v, path in enumerate(paths):
            split = "heldout" if opts.holdout and v % opts.holdout == opts.holdout - 1 else "calib"
            info = probe(path)
            index["videos"].append({"file": os.path.basename(path), "split": split})
            for k, idx in enumerate(clip_indices(info.frame_count, opts.clips, opts.frames)):
                recorders = {role: Recorder(engine, limits[role]) for role, engine in originals.items()}
                pipeline.engines = recorders
                pipeline.answer(read_frames(path, idx, info), QUESTIONS[(clip_id + k) % len(QUESTIONS)], run_opts)
                for role, rec in recorders.items():
                    os.makedirs(os.path.join(tmp, role), exist_ok=True)
                    for c, feeds in enumerate(rec.calls):
                        name = f"{role}/{split}-{clip_id:04d}-{c}.npz"
                        np.savez(os.path.join(tmp, name), **feeds)
                        index["samples"][role].append({"file": name, "split": split})
                clip_id += 1
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        pipeline.engines = originals
    if not any(s["split"] == "calib" for s in index["samples"]["primary_llm"]):
        raise VideoError(f"{videos!r}: every video was held out; add videos or raise holdout")
    json.dump(index, open(os.path.join(tmp, "index.json"), "w"), indent=1)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return index


class CalibrationSet:
    """Read access to a collected set: feeds per role and split."""

    def __init__(self, folder: str):
        path = os.path.join(folder, "index.json")
        if not os.path.isfile(path):
            raise VideoError(f"{folder!r} is not a calibration set (no index.json); run scripts/calibrate.py collect")
        self.folder = folder
        self.index = json.load(open(path))

    def files(self, role: str, split: str = "calib") -> list[str]:
        return [os.path.join(self.folder, s["file"]) for s in self.index["samples"].get(role, []) if s["split"] == split]

    def feeds(self, role: str, split: str = "calib") -> Iterator[dict[str, np.ndarray]]:
        for f in self.files(role, split):
            with np.load(f, allow_pickle=False) as z:
                yield {k: z[k] for k in z.files}


def common_shape_files(calib: CalibrationSet, role: str) -> tuple[list[str], dict[str, tuple[int, ...]]]:
    """The calibration files of ``role`` whose feeds share the most common shape, and that shape."""
    files = calib.files(role, "calib")
    if not files:
        raise ManifestError(f"calibration set {calib.folder!r} has no samples for {role!r}")
    shapes = []
    for f in files:
        with np.load(f, allow_pickle=False) as z:
            shapes.append(tuple(sorted((k, z[k].shape) for k in z.files)))
    common, _ = Counter(shapes).most_common(1)[0]
    return [f for f, s in zip(files, shapes) if s == common], dict(common)
