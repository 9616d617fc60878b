"""The same app on Ray Serve (local cluster, 2 pipeline replicas): the openai client gets the
pipeline's answer, plain and streamed; scripts/loadtest.py SIGKILLs one replica mid-run and
every request still succeeds (retried on the other replica); Serve brings the replica back.
About a minute on 2 cores, most of it Ray's start."""
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

pytest.importorskip("ray.serve", reason="Ray Serve is not installed (pip install -e '.[ray]')")
openai = pytest.importorskip("openai")
psutil = pytest.importorskip("psutil")

from runtime.options import Options
from runtime.pipeline import load_pipeline  # noqa: E402

from .conftest import QUESTION, REPO, free_port  # noqa: E402


def replica_pids(root: psutil.Process) -> list[int]:
    out = []
    for p in root.children(recursive=True):
        try:
            if " ".join(p.cmdline()).startswith("ray::ServeReplica:dytok:PipelineReplica"):
                out.append(p.pid)
        except psutil.NoSuchProcess:
            pass
    return out


@pytest.fixture(scope="module")
def ray_server(tiny_artifacts, media, tmp_path_factory):
    port = free_port()
    log_path = tmp_path_factory.mktemp("ray") / "serve_ray.log"
    log = open(log_path, "w")
    # Ray's memory monitor kills actors (the Serve controller and proxy first) when the *node* is
    # at 95% memory, whoever uses it; on a shared machine that is not this test's subject.
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_memory_monitor_refresh_ms": "0"}
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, "scripts", "serve_ray.py"), "--artifacts", tiny_artifacts,
                             "--host", "127.0.0.1", "--port", str(port), "--media-dir", str(media), "--replicas", "2",
                             "--num-cpus", "1", "--workers", "1", "--queue-size", "4", "--default-frames", "4",
                             "--default-max-tokens", "4"], stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
    root = psutil.Process(proc.pid)
    family: set[int] = set()
    try:
        deadline = time.time() + 240
        while True:
            assert proc.poll() is None, open(log_path).read()[-3000:]
            assert time.time() < deadline, "Ray Serve did not come up in 240 s: " + open(log_path).read()[-3000:]
            family |= {p.pid for p in root.children(recursive=True)}
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read()
                if len(replica_pids(root)) == 2:
                    break
            except OSError:
                pass
            time.sleep(1)
        yield proc, root, f"http://127.0.0.1:{port}"
    finally:
        family |= {p.pid for p in root.children(recursive=True)} if proc.poll() is None else set()
        proc.send_signal(signal.SIGTERM)  # serve.shutdown() + ray.shutdown()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for pid in family:  # whatever Ray left behind
            try:
                psutil.Process(pid).kill()
            except psutil.NoSuchProcess:
                pass
        log.close()


def test_ray_serve_answers_like_the_pipeline(ray_server, tiny_artifacts, media):
    _, _, url = ray_server
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)
    want = load_pipeline(tiny_artifacts).answer(str(media / "clip.mp4"), QUESTION, Options(num_frames=4, max_new_tokens=4))
    messages = [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": f"file://{media}/clip.mp4"}},
                                             {"type": "text", "text": QUESTION}]}]
    r = client.chat.completions.create(model="tiny", messages=messages)
    assert r.choices[0].message.content == want.text
    assert (r.usage.visual_tokens_kept, r.usage.visual_tokens_total) == want.visual_tokens
    chunks = list(client.chat.completions.create(model="tiny", messages=messages, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == want.text
    # a replica's runtime error, through Ray, as 400: FastV needs split LLM graphs the tiny folder lacks
    with pytest.raises(openai.BadRequestError, match="LLM split"):
        client.chat.completions.create(model="tiny", messages=messages, extra_body={"method": "fastv"})
    with pytest.raises(openai.PermissionDeniedError):  # the same media rules at the ingress
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": [
            {"type": "video_url", "video_url": {"url": f"file://{media}/../secret.txt"}}, {"type": "text", "text": "?"}]}])


def test_replica_killed_mid_run_loses_no_request(ray_server, media, tmp_path):
    proc, root, url = ray_server
    report = tmp_path / "load.json"
    run = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "loadtest.py"), "--url", url + "/v1",
                          "--video", str(media / "clip.mp4"), "--clients", "4", "--requests", "40", "--frames", "8",
                          "--max-tokens", "16", "--rss-pid", str(proc.pid), "--kill-replica-after", "8",
                          "--json", str(report)], capture_output=True, text=True, timeout=300, cwd=REPO)
    r = json.loads(report.read_text())
    assert r["killed"] and r["killed"][0][1] is not None, run.stderr
    assert (r["requests"], r["ok"], r["errors"]) == (40, 40, {}), run.stdout + run.stderr
    deadline = time.time() + 120  # Serve replaces the dead replica
    while len(replica_pids(root)) < 2 and time.time() < deadline:
        time.sleep(1)
    assert len(replica_pids(root)) == 2 and r["killed"][0][1] not in replica_pids(root)
    health = json.loads(urllib.request.urlopen(url + "/health").read())
    assert health["status"] == "ok" and health["retried"] >= 1  # the kill did hit requests in flight
