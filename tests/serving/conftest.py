"""Servers for the serving tests: scripts/serve.py as a real subprocess on 127.0.0.1 and a free
port, over the session's tiny export; stopped at the end of the module that started them."""
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QUESTION = "What happens in the video?"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, artifacts: str, log_path: str, *args: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen([sys.executable, os.path.join(REPO, "scripts", "serve.py"), "--artifacts", artifacts,
                                      "--host", "127.0.0.1", "--port", str(self.port), *args],
                                     stdout=self.log, stderr=subprocess.STDOUT, cwd=REPO)
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {open(log_path).read()[-2000:]}")
            try:
                urllib.request.urlopen(self.url + "/health", timeout=2).read()
                return
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"server did not come up in 120 s: {open(log_path).read()[-2000:]}")

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.alive:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def media(tmp_path_factory, video_path):
    """A media folder with the sample video, a symlink that leaves it, and a secret beside it."""
    root = tmp_path_factory.mktemp("serve")
    folder = root / "media"
    folder.mkdir()
    shutil.copy(video_path, folder / "clip.mp4")
    (root / "secret.txt").write_text("not for clients")
    shutil.copy(video_path, root / "outside.mp4")
    os.symlink(root / "outside.mp4", folder / "link.mp4")
    return folder


def start(tiny_artifacts, tmp_path_factory, *args) -> Server:
    return Server(tiny_artifacts, str(tmp_path_factory.mktemp("log") / "server.log"), *args)
