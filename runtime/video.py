"""Video input with OpenCV: probe metadata, choose frame indices, decode only those frames.

Frames come back as RGB uint8 ``[N, H, W, 3]`` with their timestamps in seconds.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

# FFmpeg's own log lines (e.g. "moov atom not found") would add to our one-line errors.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from .errors import VideoError

# Forward gaps up to this many frames are decoded with grab() rather than a seek: a seek lands on
# the previous keyframe and decodes forward anyway, so short hops are cheaper sequentially.
_SEQUENTIAL_GAP = 16


@dataclass(frozen=True)
class VideoInfo:
    path: str
    frame_count: int
    fps: float
    width: int
    height: int

    @property
    def duration(self) -> float:
        return self.frame_count / self.fps


@dataclass(frozen=True)
class SampledFrames:
    frames: np.ndarray  # [N, H, W, 3] uint8, RGB
    indices: np.ndarray  # [N] int64, source frame numbers
    timestamps: np.ndarray  # [N] float64, seconds
    fps: float  # source frame rate

    @property
    def sampled_fps(self) -> float:
        """Frames per second of the sampled sequence (what Qwen2.5-VL's second_per_grid_ts uses)."""
        if len(self.indices) < 2:
            return self.fps
        span = (self.indices[-1] - self.indices[0]) / self.fps
        return (len(self.indices) - 1) / span if span > 0 else self.fps


def _open(path: str) -> cv2.VideoCapture:
    if not os.path.exists(path):
        raise VideoError(f"video {path!r}: file not found")
    if os.path.getsize(path) == 0:
        raise VideoError(f"video {path!r}: file is empty (0 bytes)")
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        raise VideoError(f"video {path!r}: OpenCV cannot open it (corrupt or unsupported container/codec)")
    return cap


def probe(path: str) -> VideoInfo:
    """Read frame count, fps and size from the container, and check that a first frame decodes."""
    cap = _open(path)
    try:
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = float(cap.get(cv2.CAP_PROP_FPS))
        width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        ok, _ = cap.read()
    finally:
        cap.release()
    if count <= 0 or not ok:
        raise VideoError(f"video {path!r}: no decodable frames (header frame count {count})")
    if not math.isfinite(fps) or fps <= 0:
        raise VideoError(f"video {path!r}: invalid frame rate {fps}")
    return VideoInfo(path=path, frame_count=count, fps=fps, width=width, height=height)


def uniform_indices(frame_count: int, num_frames: int) -> np.ndarray:
    """``linspace(0, frame_count-1, num_frames)`` truncated to int (DyToK / LLaVA-OV sampling). [num_frames]"""
    if num_frames <= 0:
        raise VideoError(f"num_frames must be positive, got {num_frames}")
    if num_frames > frame_count:
        raise VideoError(f"asked for {num_frames} frames but the video has only {frame_count}")
    return np.linspace(0, frame_count - 1, num_frames).astype(np.int64)


def fps_indices(
    info: VideoInfo,
    fps: float = 2.0,
    min_frames: int = 4,
    max_frames: int = 768,
    temporal_patch_size: int = 2,
) -> np.ndarray:
    """Qwen2.5-VL's fps sampling (transformers 5.23 ``Qwen2VLVideoProcessor.sample_frames``).

    ``n = clamp(frames / video_fps * fps, min_frames, min(max_frames, frames))`` floored to a
    multiple of ``temporal_patch_size``; indices ``arange(0, frames, frames / n)`` truncated. [n]
    """
    total = info.frame_count
    cap = math.floor(min(max_frames, total) / temporal_patch_size) * temporal_patch_size
    n = total / info.fps * fps
    n = min(max(n, min_frames), cap, total)
    n = math.floor(n / temporal_patch_size) * temporal_patch_size
    if n <= 0:
        raise VideoError(
            f"video {info.path!r}: {total} frames is too short to sample a multiple of {temporal_patch_size}"
        )
    return np.arange(0, total, total / n).astype(np.int64)[:n]


def read_frames(path: str, indices: np.ndarray, info: VideoInfo | None = None) -> SampledFrames:
    """Decode exactly the frames at ``indices`` (any order, repeats allowed); never the whole file."""
    info = info or probe(path)
    indices = np.asarray(indices, dtype=np.int64)
    if indices.ndim != 1 or len(indices) == 0:
        raise VideoError(f"video {path!r}: frame indices must be a non-empty 1-D array")
    if indices.min() < 0 or indices.max() >= info.frame_count:
        raise VideoError(
            f"video {path!r}: frame index {int(indices.max())} out of range (video has {info.frame_count} frames)"
        )
    wanted = np.unique(indices)
    decoded: dict[int, np.ndarray] = {}
    cap = _open(path)
    try:
        position = 0  # index of the frame the next grab() returns
        for target in wanted.tolist():
            if target < position or target - position > _SEQUENTIAL_GAP:
                cap.set(cv2.CAP_PROP_POS_FRAMES, target)
                position = target
            while position < target:
                if not cap.grab():
                    break
                position += 1
            ok = cap.grab()
            ok, frame = cap.retrieve() if ok else (False, None)
            if not ok or frame is None:
                raise VideoError(
                    f"video {path!r}: frame {target} could not be decoded "
                    f"(header says {info.frame_count} frames; file truncated or corrupt)"
                )
            position = target + 1
            decoded[target] = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    finally:
        cap.release()
    frames = np.stack([decoded[i] for i in indices.tolist()])
    return SampledFrames(frames=frames, indices=indices, timestamps=indices / info.fps, fps=info.fps)


def sample_video(
    path: str,
    num_frames: int | None = None,
    fps: float | None = 2.0,
    min_frames: int = 4,
    max_frames: int = 768,
    temporal_patch_size: int = 2,
) -> SampledFrames:
    """Probe, choose indices (``num_frames`` uniform, else Qwen fps rules) and decode."""
    info = probe(path)
    if num_frames is not None:
        idx = uniform_indices(info.frame_count, num_frames)
    elif fps is not None:
        idx = fps_indices(info, fps, min_frames, max_frames, temporal_patch_size)
    else:
        raise VideoError("give num_frames or fps")
    return read_frames(path, idx, info)


def write_test_video(path: str, num_frames: int = 48, size: tuple[int, int] = (160, 120), fps: float = 12.0) -> str:
    """Write a small synthetic MP4 (moving shapes on a gradient) for demos and tests.

    The content changes over time so frame weights and temporal merging have something to see.
    """
    width, height = size
    tmp = path + ".partial.mp4"
    writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise VideoError(f"cannot write video {path!r}: OpenCV has no mp4v encoder")
    yy, xx = np.mgrid[0:height, 0:width]
    for t in range(num_frames):
        frame = np.zeros((height, width, 3), np.uint8)
        frame[..., 0] = (xx * 255 // max(width - 1, 1)).astype(np.uint8)
        frame[..., 1] = (yy * 255 // max(height - 1, 1)).astype(np.uint8)
        frame[..., 2] = (t * 255 // max(num_frames - 1, 1))
        cx = int((0.1 + 0.8 * t / max(num_frames - 1, 1)) * width)
        cv2.circle(frame, (cx, height // 2), max(4, height // 6), (255, 255, 255), -1)
        if t % 12 >= 6:  # a scene that flips: some frames differ sharply from their neighbours
            cv2.rectangle(frame, (width // 8, height // 8), (width // 3, height // 3), (0, 0, 255), -1)
        writer.write(frame)
    writer.release()
    os.replace(tmp, path)
    return path
