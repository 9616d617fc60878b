"""Video probing, sampling rules and decoding; every bad-input path gives a VideoError."""
import math

import cv2
import numpy as np
import pytest

from runtime.errors import VideoError
from runtime.video import VideoInfo, fps_indices, probe, read_frames, sample_video, uniform_indices


def decode_all(path):
    cap = cv2.VideoCapture(path)
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            return np.stack(frames)
        frames.append(cv2.cvtColor(f, cv2.COLOR_BGR2RGB))


def test_probe(video_path):
    info = probe(video_path)
    assert (info.frame_count, info.width, info.height) == (48, 160, 120)
    assert info.fps == pytest.approx(12.0) and info.duration == pytest.approx(4.0)


def test_read_frames_equal_sequential_decode(video_path):
    every = decode_all(video_path)
    idx = np.array([47, 0, 3, 30, 3, 45])  # any order, repeats, forward hops and long seeks
    got = read_frames(video_path, idx)
    np.testing.assert_array_equal(got.frames, every[idx])
    np.testing.assert_allclose(got.timestamps, idx / 12.0)


def test_uniform_indices():
    assert uniform_indices(48, 4).tolist() == [0, 15, 31, 47]
    with pytest.raises(VideoError, match="only 48"):
        uniform_indices(48, 49)


def reference_fps_indices(total, video_fps, fps, min_frames=4, max_frames=768, tp=2):
    """transformers 5.23 Qwen2VLVideoProcessor.sample_frames, restated (it cannot be imported
    without torchvision, which must not be installed here)."""
    max_frames = math.floor(min(max_frames, total) / tp) * tp
    n = min(max(total / video_fps * fps, min_frames), max_frames, total)
    n = math.floor(n / tp) * tp
    import torch
    return torch.arange(0, total, total / n).int().tolist()


@pytest.mark.parametrize("total,vfps,fps", [(48, 12.0, 2.0), (100, 25.0, 2.0), (7, 30.0, 2.0), (3000, 29.97, 1.0),
                                            (90, 30.0, 0.5)])
def test_fps_indices_match_transformers_rule(total, vfps, fps):
    info = VideoInfo("x", total, vfps, 10, 10)
    assert fps_indices(info, fps).tolist() == reference_fps_indices(total, vfps, fps)
    assert len(fps_indices(info, fps)) % 2 == 0


def test_sample_video_fps(video_path):
    got = sample_video(video_path, fps=2.0)
    assert got.frames.shape == (8, 120, 160, 3) and got.frames.dtype == np.uint8
    assert got.indices.tolist() == [0, 6, 12, 18, 24, 30, 36, 42]
    assert got.sampled_fps == pytest.approx(2.0)



def test_missing_file(tmp_path):
    with pytest.raises(VideoError, match="not found"):
        probe(str(tmp_path / "nope.mp4"))


def test_empty_file(tmp_path):
    p = tmp_path / "empty.mp4"
    p.write_bytes(b"")
    with pytest.raises(VideoError, match="empty"):
        probe(str(p))


def test_corrupt_file(tmp_path):
    p = tmp_path / "corrupt.mp4"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(VideoError, match="corrupt|no decodable"):
        probe(str(p))


def test_truncated_file(video_path, tmp_path):
    data = open(video_path, "rb").read()
    p = tmp_path / "truncated.mp4"
    p.write_bytes(data[: len(data) // 3])
    with pytest.raises(VideoError):
        info = probe(str(p))
        read_frames(str(p), np.arange(info.frame_count), info)


def test_frames_fewer_than_asked(video_path):
    with pytest.raises(VideoError, match="only 48"):
        sample_video(video_path, num_frames=64)
    with pytest.raises(VideoError, match="out of range"):
        read_frames(video_path, np.array([48]))

