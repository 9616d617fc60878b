"""The FastAPI app: OpenAI's chat-completions route (plain and SSE streaming), models, health
and Prometheus metrics. The routes translate between the wire format (``protocol``), the media
rules (``media``) and a backend's ``stream``; they hold no pipeline logic."""
from __future__ import annotations

import asyncio
import json
import logging
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool

from .backend import Job, Summary
from .config import ServerConfig
from .media import MediaResolver
from .metrics import Metrics
from .protocol import ServeError, build_options, chunk_body, completion_body, new_id, parse_request, usage_body, \
    video_and_question

log = logging.getLogger("dytok.serve")


def error_response(e: ServeError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 past ``limit`` bytes (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ServeError(413, f"request body of {declared} bytes exceeds the limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ServeError(413, f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def access_line(status: int, seconds: float, method: str | None, summary: Summary | None,
                error_type: str | None = None) -> str:
    """One access-log line per request: status, latency, visual tokens kept/total, method."""
    tokens = f"visual {summary.kept}/{summary.total}" if summary is not None else "visual -"
    return (f"POST /v1/chat/completions {status} {seconds:.3f}s {tokens} method {method or '-'}"
            + (f" error {error_type}" if error_type else ""))


def sse(data: dict | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


def create_app(cfg: ServerConfig, backend) -> FastAPI:
    """The app over ``backend`` (``LocalBackend`` or the Ray ingress's); the app owns no engine."""
    media = MediaResolver(cfg)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        media.close()

    app = FastAPI(title="DyToK-Deploy", version="0.1.0", lifespan=lifespan)
    app.state.metrics, app.state.backend, app.state.media = metrics, backend, media

    def finish(status: int, t0: float, method: str | None, summary: Summary | None = None, error_type: str | None = None):
        seconds = time.perf_counter() - t0
        metrics.finish(status, seconds, error_type)
        log.info(access_line(status, seconds, method, summary, error_type))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        return error_response(ServeError(400, str(exc.errors()[0].get("msg", "invalid request"))))

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": backend.model_name, **backend.status()}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": backend.model_name, "object": "model", "created": 0,
                                            "owned_by": "dytok-deploy"}]}

    @app.get("/metrics")
    async def prometheus():
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        t0 = time.perf_counter()
        metrics.in_flight.inc()
        video = events = None
        method = None
        handed_over = False
        try:
            req = parse_request(await read_body(request, cfg.max_body_bytes))
            if req.model != backend.model_name:
                raise ServeError(404, f"model {req.model!r} does not exist; this server serves {backend.model_name!r}",
                                 param="model")
            url, question = video_and_question(req)
            opts = build_options(req, cfg)
            method = opts.method
            video = await media.resolve(url)
            await run_in_threadpool(media.check, video)
            events = backend.stream(Job(video.path, question, opts, cfg.request_timeout_s, req.stream))
            first = await anext(events)  # errors before the first token still get their own status
            if req.stream:
                handed_over = True
                include_usage = bool(req.stream_options and req.stream_options.include_usage)
                return StreamingResponse(_stream(first, events, video, req.model, include_usage, t0, method),
                                         media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
            pieces = []
            event = first
            while not isinstance(event, Summary):
                pieces.append(event)
                event = await anext(events)
            metrics.observe_summary(event)
            finish(200, t0, method, event)
            return completion_body(new_id(), req.model, "".join(pieces), event)
        except ServeError as e:
            finish(e.status, t0, method, error_type=e.type)
            return error_response(e)
        except Exception as e:  # noqa: BLE001 - nothing a client sends may take the server down
            log.exception("unexpected error")
            finish(500, t0, method, error_type="server_error")
            return error_response(ServeError(500, f"internal error ({type(e).__name__})", type="server_error"))
        finally:
            if not handed_over:
                metrics.in_flight.dec()
                if events is not None:
                    await events.aclose()
                if video is not None:
                    video.cleanup()

    async def _stream(first, events, video, model: str, include_usage: bool, t0: float, method: str):
        cid, created = new_id(), int(time.time())
        status, error_type, summary = 200, None, None
        try:
            yield sse(chunk_body(cid, model, created, {"role": "assistant", "content": ""}))
            event = first
            while not isinstance(event, Summary):
                yield sse(chunk_body(cid, model, created, {"content": event}))
                event = await anext(events)
            metrics.observe_summary(event)
            summary = event
            yield sse(chunk_body(cid, model, created, {}, event.finish_reason))
            if include_usage:
                yield sse(chunk_body(cid, model, created, None, usage=usage_body(event)))
            yield sse("[DONE]")
        except ServeError as e:  # after the 200 went out: an error event, as OpenAI's API sends
            status, error_type = e.status, e.type
            yield sse(e.body())
        except asyncio.CancelledError:  # the client went away
            status, error_type = 499, "client_closed"
            raise
        except Exception as e:  # noqa: BLE001
            log.exception("unexpected error while streaming")
            status, error_type = 500, "server_error"
            yield sse(ServeError(500, f"internal error ({type(e).__name__})", type="server_error").body())
        finally:
            await events.aclose()
            finish(status, t0, method, summary, error_type)
            metrics.in_flight.dec()
            video.cleanup()

    return app
