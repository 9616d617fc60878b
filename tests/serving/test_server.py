"""The OpenAI-compatible server on the tiny export, through the official ``openai`` client:
answers equal the in-process pipeline's, streaming adds up to the same text, every error status
is a clean JSON error and the process survives it."""
import base64
import concurrent.futures as cf
import os

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

from runtime.options import Options
from runtime.pipeline import load_pipeline  # noqa: E402
from runtime.video import write_test_video  # noqa: E402

from .conftest import QUESTION, start  # noqa: E402

LIMITS = ("--workers", "1", "--queue-size", "2", "--max-upload-mb", "0.5", "--max-duration", "10",
          "--default-frames", "4", "--default-max-tokens", "6", "--timeout", "120")


@pytest.fixture(scope="module")
def server(tiny_artifacts, tmp_path_factory, media):
    s = start(tiny_artifacts, tmp_path_factory, "--media-dir", str(media), *LIMITS)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def pipe(tiny_artifacts):
    return load_pipeline(tiny_artifacts)


def video_msg(url: str, question: str = QUESTION) -> list:
    return [{"role": "system", "content": "You are terse."},
            {"role": "user", "content": [{"type": "video_url", "video_url": {"url": url}},
                                         {"type": "text", "text": question}]}]


def file_url(path) -> str:
    return "file://" + os.path.abspath(path)


def data_url(data: bytes, mime: str = "video/mp4") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def ask(client, url: str, **kw):
    return client.chat.completions.create(model="tiny", messages=video_msg(url), **kw)


def status_of(client, url: str, **kw) -> tuple[int, str]:
    with pytest.raises(openai.APIStatusError) as e:
        ask(client, url, **kw)
    return e.value.status_code, e.value.message


def test_models_and_health(server, client):
    assert [m.id for m in client.models.list().data] == ["tiny"]
    health = httpx.get(server.url + "/health").json()
    assert health["status"] == "ok" and health["workers"] == 1


def test_answer_equals_the_pipeline(client, pipe, media):
    want = pipe.answer(str(media / "clip.mp4"), QUESTION, Options(num_frames=4, max_new_tokens=6))
    for url in (file_url(media / "clip.mp4"), data_url((media / "clip.mp4").read_bytes())):
        r = ask(client, url)
        assert r.choices[0].message.content == want.text
        assert r.choices[0].finish_reason == ("stop" if want.token_ids[-1] in pipe.prompt.eos_ids else "length")
        u = r.usage
        assert u.completion_tokens == len(want.token_ids)
        assert (u.visual_tokens_kept, u.visual_tokens_total) == want.visual_tokens
        text_tokens = len(pipe.prompt.input_ids(QUESTION, 0)[0])
        assert u.prompt_tokens == text_tokens + want.visual_tokens[0]
        assert u.total_tokens == u.prompt_tokens + u.completion_tokens


def test_compression_knobs_per_request(client, pipe, media):
    knobs = {"method": "uniform", "retention": 0.5, "assistant": False, "frames": 6}
    want = pipe.answer(str(media / "clip.mp4"), QUESTION,
                       Options(num_frames=6, method="uniform", retention=0.5, assistant=False, max_new_tokens=3))
    r = ask(client, file_url(media / "clip.mp4"), max_tokens=3, extra_body=knobs)
    assert r.choices[0].message.content == want.text
    assert (r.usage.visual_tokens_kept, r.usage.visual_tokens_total) == want.visual_tokens
    assert want.visual_tokens[0] != pipe.answer(str(media / "clip.mp4"), QUESTION, Options(num_frames=6, max_new_tokens=1)
                                                ).visual_tokens[0]  # the knobs changed something


def test_streaming_adds_up_to_the_plain_answer(client, media):
    url = file_url(media / "clip.mp4")
    plain = ask(client, url, max_tokens=12)
    chunks = list(ask(client, url, max_tokens=12, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == [plain.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    assert chunks[-1].usage.visual_tokens_kept == plain.usage.visual_tokens_kept


def test_error_statuses(server, client, media, tmp_path):
    root = media.parent
    # 403: outside the media folder, by plain path, by .. traversal (also %-encoded), by symlink; no URL fetching
    for url in (file_url(root / "secret.txt"), f"file://{media}/../secret.txt", f"file://{media}/%2e%2e/secret.txt",
                file_url(media / "link.mp4"), "file:///etc/passwd", "http://127.0.0.1:1/clip.mp4"):
        status, message = status_of(client, url)
        assert status == 403, (url, message)
        assert "not for clients" not in message
    # 400: not a video, truncated video, bad base64, wrong media type, bad knobs, no video, missing file
    clip = (media / "clip.mp4").read_bytes()
    for url, kw in ((data_url(b"\x00not a video" * 100), {}), (data_url(clip[: len(clip) // 3]), {}),
                    ("data:video/mp4;base64,@@@", {}), (data_url(clip, "text/plain"), {}),
                    (file_url(media / "missing.mp4"), {}), ("ftp://x/y.mp4", {}),
                    (file_url(media / "clip.mp4"), {"extra_body": {"retention": 2}}),
                    (file_url(media / "clip.mp4"), {"extra_body": {"method": "magic"}}),
                    (file_url(media / "clip.mp4"), {"extra_body": {"frames": 1000}}),
                    (file_url(media / "clip.mp4"), {"extra_body": {"frames": 200}}),
                    (file_url(media / "clip.mp4"), {"n": 2})):
        status, message = status_of(client, url, **kw)
        assert status == 400 and "\n" not in message and "Traceback" not in message, (url[:40], kw, message)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "no video here"}])
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4o", messages=video_msg(file_url(media / "clip.mp4")))
    # 413: upload over 0.5 MB, body over its limit, video longer than 10 s
    status, message = status_of(client, data_url(os.urandom(600 * 1024)))
    assert status == 413, message
    r = httpx.post(server.url + "/v1/chat/completions", content=b"x" * (2 << 20), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "limit" in r.json()["error"]["message"]
    long = write_test_video(str(media / "long.mp4"), num_frames=40, size=(64, 48), fps=2.0)  # 20 s
    status, message = status_of(client, file_url(long))
    assert status == 413 and "20.0 s" in message
    # malformed JSON, wrong types
    for body in (b"{", b"[]", b'{"model": "tiny", "messages": "hi"}', b'{"model": "tiny", "messages": []}'):
        r = httpx.post(server.url + "/v1/chat/completions", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 400 and "message" in r.json()["error"], body
    assert server.alive and httpx.get(server.url + "/health").json()["status"] == "ok"
    # the error counters saw them
    metrics = httpx.get(server.url + "/metrics").text
    for status in (400, 403, 404, 413):
        assert f'dytok_requests_total{{status="{status}"}}' in metrics
    assert "dytok_in_flight 0.0" in metrics


def test_queue_full_gives_429_with_retry_after(server, media):
    url = file_url(media / "clip.mp4")
    body = {"model": "tiny", "messages": video_msg(url), "max_tokens": 24, "frames": 8}

    def post(_):
        r = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=120)
        return r.status_code, r.headers.get("retry-after")

    with cf.ThreadPoolExecutor(8) as ex:
        results = list(ex.map(post, range(8)))
    codes = [c for c, _ in results]
    assert set(codes) <= {200, 429} and codes.count(200) >= 3 and 429 in codes, codes  # 1 worker + queue of 2
    assert all(ra == "1" for c, ra in results if c == 429)
    assert httpx.get(server.url + "/health").json()["running"] == 0


def test_timeout_gives_504_and_frees_the_worker(tiny_artifacts, tmp_path_factory, media):
    s = start(tiny_artifacts, tmp_path_factory, "--media-dir", str(media), "--timeout", "1", "--max-frames", "64")
    try:
        c = openai.OpenAI(base_url=s.url + "/v1", api_key="unused", max_retries=0, timeout=60)
        status, message = status_of(c, file_url(media / "clip.mp4"), max_tokens=400, extra_body={"frames": 24})
        assert status == 504 and "timed out" in message
        import time
        deadline = time.time() + 60
        while httpx.get(s.url + "/health").json()["running"] and time.time() < deadline:
            time.sleep(0.2)
        assert httpx.get(s.url + "/health").json()["running"] == 0  # the cancelled run stopped
        assert s.alive
    finally:
        s.stop()
