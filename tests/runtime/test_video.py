"""Video probing, sampling rules and decoding; every bad-input path gives a VideoError."""
import math
import struct

import cv2
import numpy as np
import pytest

from runtime.errors import VideoError
from runtime.video import VideoInfo, fps_indices, probe, read_frames, sample_video, uniform_indices, write_test_video


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


def test_frames_fewer_than_asked_uses_all_with_one_note(video_path, capsys):
    got = sample_video(video_path, num_frames=64)
    assert got.indices.tolist() == list(range(48)) and len(got.frames) == 48
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "asked for 64 frames but it has 48" in err[0]
    with pytest.raises(VideoError, match="out of range"):
        read_frames(video_path, np.array([48]))


def test_one_frame_clip(tmp_path, capsys):
    from runtime.preprocess import PreprocessConfig, preprocess_video
    path = write_test_video(str(tmp_path / "one.mp4"), num_frames=1)
    for kw in (dict(num_frames=8), dict(num_frames=None, fps=2.0)):
        got = sample_video(path, **kw)
        assert got.frames.shape == (1, 120, 160, 3)
        assert len(capsys.readouterr().err.strip().splitlines()) == 1
        assert preprocess_video(got.frames, PreprocessConfig()).grid_thw[0] == 1  # padded to one temporal group


# ---- files whose header lies about the frame count ------------------------------------------

def write_mjpg_avi(path, n=68, size=(96, 64)):
    w = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 10, size)
    for t in range(n):
        w.write(np.full((size[1], size[0], 3), (t * 3) % 256, np.uint8))
    w.release()
    return path


def lying_avi(tmp_path, claimed=444):
    """An MJPG AVI holding 68 frames whose main and stream headers (avih dwTotalFrames, strh
    dwLength, OpenDML dmlh) claim ``claimed``."""
    path = write_mjpg_avi(str(tmp_path / "true.avi"))
    data = bytearray(open(path, "rb").read())
    struct.pack_into("<I", data, data.index(b"avih") + 8 + 16, claimed)
    struct.pack_into("<I", data, data.index(b"strh") + 8 + 32, claimed)
    if b"dmlh" in data:
        struct.pack_into("<I", data, data.index(b"dmlh") + 8, claimed)
    out = tmp_path / "lying.avi"
    out.write_bytes(bytes(data))
    return str(out)


def lying_mp4(tmp_path):
    """A playable MP4 whose last sample has size 0 in ``stsz``: the header counts 24 frames, 22 decode."""
    path = write_test_video(str(tmp_path / "true.mp4"), num_frames=24)
    data = bytearray(open(path, "rb").read())
    i = data.index(b"stsz")
    count = struct.unpack_from(">I", data, i + 12)[0]
    struct.pack_into(">I", data, i + 16 + 4 * (count - 1), 0)
    out = tmp_path / "lying.mp4"
    out.write_bytes(bytes(data))
    return str(out)


@pytest.mark.parametrize("kind,num_frames", [("avi", 8), ("avi", None), ("mp4", 24)])
def test_lying_header_samples_from_frames_that_decode(tmp_path, capsys, kind, num_frames):
    path = lying_avi(tmp_path) if kind == "avi" else lying_mp4(tmp_path)
    header, real = (444, 68) if kind == "avi" else (24, 22)
    every = decode_all(path)
    assert probe(path).frame_count == header and len(every) == real  # the lie is really there
    got = sample_video(path, num_frames=num_frames, fps=2.0)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"header says {header} frames but {real} decode" in err[0]
    if num_frames:
        assert got.indices.tolist() == uniform_indices(real, min(num_frames, real)).tolist()
    else:
        assert got.indices.tolist() == fps_indices(VideoInfo(path, real, 10.0, 96, 64), 2.0).tolist()
    np.testing.assert_array_equal(got.frames, every[got.indices])


def test_no_decodable_frame_is_the_only_error(tmp_path):
    path = write_mjpg_avi(str(tmp_path / "x.avi"), n=3)
    data = bytearray(open(path, "rb").read())
    i = data.index(b"movi")
    data[i + 4:] = b"\x00" * (len(data) - i - 4)  # every frame's data zeroed
    (tmp_path / "dead.avi").write_bytes(bytes(data))
    with pytest.raises(VideoError, match="no decodable|cannot open|corrupt"):
        sample_video(str(tmp_path / "dead.avi"), num_frames=2)
