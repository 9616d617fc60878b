"""Where answers come from: ``LocalBackend`` runs the pipeline on this process's worker pool
(the single-process server, and each Ray replica); ``serving.ray_app`` has the Ray one.

A backend's ``stream(job)`` is an async iterator of text pieces ending with one ``Summary``,
and raises ``ServeError`` for anything that goes wrong, so the routes treat both alike.
"""
from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from dataclasses import dataclass, field

from runtime import llm_split
from runtime.errors import DyTokError, EngineError, ManifestError
from runtime.options import Options

from .config import ServerConfig
from .pool import QueueFull, WorkerPool
from .protocol import ServeError

log = logging.getLogger("dytok.serve")


@dataclass
class Job:
    video_path: str
    question: str
    options: Options
    timeout_s: float  # queue wait + run
    stream: bool = False  # pieces go to the client as they come (a lost replica cannot be retried after one)


@dataclass
class Summary:
    completion_tokens: int
    finish_reason: str  # "stop" (EOS) or "length"
    prompt_tokens: int  # text tokens + kept visual tokens, as prefilled
    kept: int
    total: int
    timings: dict = field(default_factory=dict)  # the pipeline's stages, seconds
    queue_s: float = 0.0


class _Cancelled(Exception):
    """Raised from the token callback to stop a run whose client is gone or timed out."""


def as_serve_error(exc: BaseException, video_path: str = "") -> ServeError:
    """Pipeline exceptions -> HTTP: bad input 400 (one line), server-side state 500."""
    if isinstance(exc, ServeError):
        return exc
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if video_path:
        message = message.replace(video_path, "the video")
    if isinstance(exc, (EngineError, ManifestError)):
        return ServeError(500, f"engine error: {message}", type="server_error")
    if isinstance(exc, DyTokError):
        return ServeError(400, message)
    if isinstance(exc, MemoryError):
        return ServeError(503, "out of memory while answering; retry with fewer frames", type="server_error")
    log.error("unexpected %s: %s", type(exc).__name__, message)
    return ServeError(500, f"internal error ({type(exc).__name__})", type="server_error")


def answer_job(pipe, job: Job, on_token) -> Summary:
    """Run one job on a pipeline (blocking) and summarise the result."""
    result = pipe.answer(job.video_path, job.question, job.options, on_token=on_token)
    text_tokens = len(pipe.prompt.input_ids(job.question, 0)[0])
    ids = result.token_ids
    stopped = bool(ids) and ids[-1] in pipe.prompt.eos_ids
    kept, total = result.visual_tokens
    timings = {k: float(v) for k, v in result.timings.items() if k != "decode_tokens"}
    return Summary(len(ids), "stop" if stopped else "length", text_tokens + kept, kept, total, timings)


def load_pipelines(cfg: ServerConfig) -> list:
    """One shared pipeline (ONNX Runtime sessions are thread-safe), else one per worker."""
    from runtime.pipeline import load_pipeline

    count = 1 if cfg.backend == "onnxruntime" else cfg.workers
    return [load_pipeline(cfg.artifacts, cfg.providers, cfg.threads, backend=cfg.backend) for _ in range(count)]


def model_name(cfg: ServerConfig, pipe) -> str:
    if cfg.model_name:
        return cfg.model_name
    return pipe.m.data.get("preset") or os.path.basename(os.path.normpath(cfg.artifacts))


class LocalBackend:
    def __init__(self, cfg: ServerConfig, pipelines: list | None = None):
        self.cfg = cfg
        self.pipelines = pipelines or load_pipelines(cfg)
        self.model_name = model_name(cfg, self.pipelines[0])
        self.pool = WorkerPool(self.pipelines, cfg.workers, cfg.queue_size)

    def status(self) -> dict:
        return {"workers": self.pool.workers, "running": self.pool.running, "queued": self.pool.queued,
                "queue_size": self.pool.queue_size}

    def close(self) -> None:
        self.pool.close()

    async def stream(self, job: Job):
        try:  # what this deployment's graphs can do (e.g. FastV needs the split LLM): a request error, before queueing
            llm_split.check(self.pipelines[0].m, job.options)
        except DyTokError as e:
            raise ServeError(400, str(e)) from None
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()
        submitted = time.perf_counter()
        deadline = submitted + job.timeout_s

        def emit(event) -> None:
            try:
                loop.call_soon_threadsafe(events.put_nowait, event)
            except RuntimeError:  # the loop is gone (server shutting down)
                pass

        def on_token(text: str) -> None:
            if cancel.is_set():
                raise _Cancelled()
            if text:  # a piece may be held back until a split character completes
                emit(text)

        def work(pipe) -> None:
            started = time.perf_counter()
            if cancel.is_set() or started > deadline:
                return
            try:
                summary = answer_job(pipe, job, on_token)
                summary.queue_s = started - submitted
                emit(summary)
            except _Cancelled:
                pass
            except BaseException as e:  # noqa: BLE001 - every failure becomes one clean answer
                emit(as_serve_error(e, job.video_path))

        try:
            self.pool.submit(work)
        except QueueFull as e:
            raise ServeError(429, f"server busy ({e}); retry after {self.cfg.retry_after_s} s", type="rate_limit_error",
                             headers={"Retry-After": str(self.cfg.retry_after_s)}) from None
        try:
            while True:
                try:
                    event = await asyncio.wait_for(events.get(), max(deadline - time.perf_counter(), 0.001))
                except asyncio.TimeoutError:
                    raise ServeError(504, f"request timed out after {job.timeout_s:g} s", type="timeout") from None
                if isinstance(event, ServeError):
                    raise event
                yield event
                if isinstance(event, Summary):
                    return
        finally:
            cancel.set()
