"""Video input with OpenCV: probe metadata, choose frame indices, decode only those frames.

Frames come back as RGB uint8 ``[N, H, W, 3]`` with their timestamps in seconds.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace

# FFmpeg's own log lines (e.g. "moov atom not found") would add to our one-line errors.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from .errors import VideoError  # noqa: E402
from .fileio import atomic_path  # noqa: E402
from .notes import note

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
    if os.path.isdir(path):
        raise VideoError(f"video {path!r} is a folder; give one video file (mp4, mkv, avi, webm, ...)")
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
    if not ok:
        raise VideoError(f"video {path!r}: no decodable frames (header frame count {count})")
    if not math.isfinite(fps) or fps <= 0:
        raise VideoError(f"video {path!r}: invalid frame rate {fps}")
    if count <= 0:  # no count in the header (some streams): count what decodes
        real = count_frames(path)
        note(f"video {path!r}: the header gives no frame count; {real} frames decode")
        count = real
    return VideoInfo(path=path, frame_count=count, fps=fps, width=width, height=height)


class _Undecodable(VideoError):
    """A frame the header promises does not decode (``read_frames``); ``sample_video`` recounts."""


def count_frames(path: str) -> int:
    """Frames that really decode, read sequentially (``grab``: decoded, never converted)."""
    cap = _open(path)
    try:
        n = 0
        while cap.grab():
            n += 1
        return n
    finally:
        cap.release()


def read_frames_sequential(path: str, indices: np.ndarray, info: VideoInfo) -> SampledFrames:
    """Like ``read_frames``, in one sequential pass from the start (no seeks): for files whose
    index or header cannot be trusted."""
    indices = np.asarray(indices, dtype=np.int64)
    wanted = set(indices.tolist())
    last = int(indices.max())
    decoded: dict[int, np.ndarray] = {}
    cap = _open(path)
    try:
        for position in range(last + 1):
            if not cap.grab():
                break
            if position in wanted:
                ok, frame = cap.retrieve()
                if ok and frame is not None:
                    decoded[position] = frame
    finally:
        cap.release()
    missing = sorted(wanted - decoded.keys())
    if missing:
        raise VideoError(f"video {path!r}: frame {missing[0]} could not be decoded even sequentially "
                         f"(file truncated or corrupt)")
    return _assemble(path, decoded, indices, info)


def _assemble(path: str, decoded: dict[int, np.ndarray], indices: np.ndarray, info: VideoInfo) -> SampledFrames:
    """BGR frames by index -> RGB ``SampledFrames`` in ``indices`` order; frames whose size differs
    from the first (a stream that changes resolution) are resized to it."""
    first = decoded[int(indices[0])]
    if first.ndim != 3 or first.shape[2] != 3:
        raise VideoError(f"video {path!r}: decoded frames have shape {first.shape}, expected H x W x 3")
    out = []
    for i in indices.tolist():
        frame = decoded[i]
        if frame.shape != first.shape:
            frame = cv2.resize(frame.reshape(frame.shape[0], frame.shape[1], -1)[..., :3],
                               (first.shape[1], first.shape[0]), interpolation=cv2.INTER_AREA)
        out.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    return SampledFrames(frames=np.stack(out), indices=indices, timestamps=indices / info.fps, fps=info.fps)


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
    if n <= 0:  # fewer frames than one temporal group: all of them (preprocessing pads the group)
        return np.arange(min(total, max(1, max_frames)), dtype=np.int64)
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
                raise _Undecodable(
                    f"video {path!r}: frame {target} could not be decoded "
                    f"(header says {info.frame_count} frames; file truncated or corrupt)"
                )
            position = target + 1
            decoded[target] = frame
    finally:
        cap.release()
    return _assemble(path, decoded, indices, info)


def sample_video(
    path: str,
    num_frames: int | None = None,
    fps: float | None = 2.0,
    min_frames: int = 4,
    max_frames: int = 768,
    temporal_patch_size: int = 2,
) -> SampledFrames:
    """Probe, choose indices (``num_frames`` uniform, else Qwen fps rules) and decode.

    Headers lie: when a frame the header promises does not decode, the frames that really decode
    are counted, the indices are chosen again from that count, and those frames are read in one
    sequential pass (one stderr note). A clip with fewer frames than ``num_frames`` gives all of
    its frames (one note; preprocessing pads the last temporal group). Only a file with no
    decodable frame is an error.
    """
    if num_frames is None and fps is None:
        raise VideoError("give num_frames or fps")
    if num_frames is not None and num_frames <= 0:
        raise VideoError(f"num_frames must be positive, got {num_frames}")
    info = probe(path)

    def choose(count: int) -> tuple[np.ndarray, str | None]:
        if num_frames is not None:
            if num_frames > count:
                return np.arange(count, dtype=np.int64), f"asked for {num_frames} frames but it has {count}; using all {count}"
            return uniform_indices(count, num_frames), None
        idx = fps_indices(replace(info, frame_count=count), fps, min_frames, max_frames, temporal_patch_size)
        short = len(idx) < temporal_patch_size
        return idx, f"{count} frame(s), fewer than one temporal group of {temporal_patch_size}; using all" if short else None

    idx, message = choose(info.frame_count)
    try:
        frames = read_frames(path, idx, info)
    except _Undecodable:
        real = count_frames(path)
        if real == 0:
            raise VideoError(f"video {path!r}: no decodable frames (header frame count {info.frame_count})") from None
        header, info = info.frame_count, replace(info, frame_count=real)
        idx, message = choose(real)
        message = f"the header says {header} frames but {real} decode; sampling from those {real}" + (
            f" ({message})" if message else "")
        frames = read_frames_sequential(path, idx, info)
    if message:
        note(f"video {path!r}: {message}")
    return frames


def write_test_video(path: str, num_frames: int = 48, size: tuple[int, int] = (160, 120), fps: float = 12.0) -> str:
    """Write a small synthetic MP4 (moving shapes on a gradient) for demos and tests.

    The content changes over time so frame weights and temporal merging have something to see.
    """
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width]
    with atomic_path(path, ".mp4") as tmp:
        writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
        if not writer.isOpened():
            raise VideoError(f"cannot write video {path!r}: OpenCV has no mp4v encoder")
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
    return path
