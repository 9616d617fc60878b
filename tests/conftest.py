import pytest

from runtime.video import write_test_video


@pytest.fixture(scope="session")
def video_path(tmp_path_factory):
    """A generated 48-frame 160x120 MP4 at 12 fps (4 s)."""
    return write_test_video(str(tmp_path_factory.mktemp("video") / "sample.mp4"))
