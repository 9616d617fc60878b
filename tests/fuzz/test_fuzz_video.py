"""Fuzz the video reader: mutated AVI/MP4 files (flipped bytes, truncation, lying header counts)
and random bytes give frames or one VideoError, never another exception, a crash or a hang.

Bounded: 500 examples per container (~5-15 s each on 2 cores). FUZZ_EXAMPLES raises it."""
import os
import struct

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.errors import VideoError
from runtime.video import sample_video

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "500"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))


def _base(kind: str) -> bytes:
    path = f"/tmp/dytok-fuzz-base-{os.getpid()}.{kind}"
    fourcc = "MJPG" if kind == "avi" else "mp4v"
    w = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*fourcc), 8, (48, 32))
    for t in range(12):
        frame = np.zeros((32, 48, 3), np.uint8)
        frame[..., t % 3] = 20 * t
        cv2.circle(frame, (4 * t, 16), 6, (255, 255, 255), -1)
        w.write(frame)
    w.release()
    data = open(path, "rb").read()
    os.remove(path)
    return data


BASES = {kind: _base(kind) for kind in ("avi", "mp4")}
HEADER_FIELDS = {"avi": [(b"avih", 8 + 16, "<I"), (b"strh", 8 + 32, "<I"), (b"strh", 8 + 20, "<I")],
                 "mp4": [(b"stsz", 12, ">I"), (b"stts", 12, ">I"), (b"mvhd", 24, ">I")]}


@st.composite
def mutated(draw, kind):
    data = bytearray(BASES[kind])
    for tag, offset, fmt in HEADER_FIELDS[kind]:
        if draw(st.booleans()) and tag in data:
            value = draw(st.sampled_from([0, 1, 2, 7, 11, 13, 444, 2 ** 31 - 1, 2 ** 32 - 1]))
            struct.pack_into(fmt, data, data.index(tag) + offset, value)
    for _ in range(draw(st.integers(0, 12))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


def check(tmp_path_factory, data: bytes, suffix: str, num_frames):
    path = str(tmp_path_factory.mktemp("fuzz") / f"clip.{suffix}")
    with open(path, "wb") as f:
        f.write(data)
    try:
        got = sample_video(path, num_frames=num_frames, fps=2.0, max_frames=16)
    except VideoError as e:
        assert "\n" not in str(e)
        return
    n = len(got.frames)
    assert got.frames.dtype == np.uint8 and got.frames.ndim == 4 and got.frames.shape[-1] == 3 and n >= 1
    assert len(got.indices) == len(got.timestamps) == n and np.all(got.indices >= 0)
    assert n <= (num_frames or 16)


@pytest.mark.parametrize("kind", ["avi", "mp4"])
def test_mutated_containers(tmp_path_factory, kind):
    @SETTINGS
    @given(data=mutated(kind), num_frames=st.sampled_from([None, 1, 4, 8, 30]))
    def run(data, num_frames):
        check(tmp_path_factory, data, kind, num_frames)

    run()


@SETTINGS
@given(data=st.binary(max_size=4096), suffix=st.sampled_from(["mp4", "avi", "mkv"]))
def test_random_bytes(tmp_path_factory, data, suffix):
    check(tmp_path_factory, data, suffix, 8)
