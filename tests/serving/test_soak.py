"""200 requests through the official client (plain, streaming, file:// and data: URLs, some
refused) against one server process: every one answered correctly, RSS growth under 10%."""
import base64
import concurrent.futures as cf

import pytest

openai = pytest.importorskip("openai")
psutil = pytest.importorskip("psutil")
pytest.importorskip("fastapi")

from runtime.video import write_test_video  # noqa: E402

from .conftest import QUESTION, start  # noqa: E402

REQUESTS, WARMUP, CLIENTS = 200, 50, 4


def test_soak_200_requests_rss_growth_under_10_percent(tiny_artifacts, tmp_path_factory):
    media = tmp_path_factory.mktemp("soak")
    clip = write_test_video(str(media / "small.mp4"), num_frames=8, size=(64, 48), fps=4.0)
    data = "data:video/mp4;base64," + base64.b64encode(open(clip, "rb").read()).decode()
    server = start(tiny_artifacts, tmp_path_factory, "--media-dir", str(media), "--workers", "2", "--threads", "1",
                   "--queue-size", "64", "--default-frames", "2", "--default-max-tokens", "2")
    proc = psutil.Process(server.proc.pid)
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)

    def one(i: int) -> str:
        url = data if i % 2 else "file://" + clip
        if i % 10 == 7:  # a refused one now and then: the error path must not leak either
            url = "file:///etc/hostname"
        messages = [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": url}},
                                                 {"type": "text", "text": QUESTION}]}]
        try:
            if i % 3 == 0:
                chunks = client.chat.completions.create(model="tiny", messages=messages, stream=True)
                return "ok" if [c for c in chunks if c.choices and c.choices[0].finish_reason] else "no finish"
            r = client.chat.completions.create(model="tiny", messages=messages)
            return "ok" if r.usage.completion_tokens == 2 else "bad usage"
        except openai.PermissionDeniedError:
            return "ok" if i % 10 == 7 else "403"
        except openai.APIError as e:
            return f"{type(e).__name__}: {e}"

    try:
        with cf.ThreadPoolExecutor(CLIENTS) as ex:
            assert set(ex.map(one, range(WARMUP))) == {"ok"}
            before = proc.memory_info().rss
            outcomes = list(ex.map(one, range(REQUESTS)))
        after = proc.memory_info().rss
        assert outcomes.count("ok") == REQUESTS, [o for o in outcomes if o != "ok"][:5]
        growth = after / before - 1
        print(f"soak: {REQUESTS} requests, RSS {before / 2**20:.1f} -> {after / 2**20:.1f} MiB ({growth:+.1%})")
        assert growth < 0.10
        assert server.alive
    finally:
        server.stop()
