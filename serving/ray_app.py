"""The same OpenAI app on Ray Serve: one ingress deployment (``create_app`` over a
``RayBackend``) in front of N ``PipelineReplica`` deployments, each a ``LocalBackend`` with its
own worker pool. The ingress resolves and checks media, then sends the video *bytes* with the
request, so replicas on other nodes need no shared folder.

A replica that dies takes its in-flight requests with it; the ingress retries a request on
another replica until its first byte has gone to the client (non-streaming requests are
buffered, so they are always retried), and answers 503 with Retry-After after that or when
retries run out. Ray Serve restarts the dead replica.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
import time

from ray import serve
from ray.exceptions import RayActorError, TaskCancelledError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError

from .app import create_app
from .backend import Job, LocalBackend, as_serve_error
from .config import ServerConfig
from .media import MediaResolver
from .protocol import ServeError

log = logging.getLogger("dytok.serve")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_REPLICA_LOST = (RayActorError, ReplicaUnavailableError, DeploymentUnavailableError)


@serve.deployment(name="PipelineReplica")
class PipelineReplica:
    """One pipeline (and its worker pool) per replica process."""

    def __init__(self, cfg: ServerConfig):
        self.backend = LocalBackend(cfg)
        self.media = MediaResolver(cfg)

    def model_name(self) -> str:
        return self.backend.model_name

    async def generate(self, video: bytes, question: str, options, timeout_s: float):
        """Text pieces, then one Summary; ServeError on failure (crosses to the ingress)."""
        v = self.media.write_temp(video)
        try:
            async for event in self.backend.stream(Job(v.path, question, options, timeout_s)):
                yield event
        finally:
            v.cleanup()


def _unwrap(e: BaseException) -> BaseException:
    """Ray wraps a replica's exception; the ServeError inside is the answer."""
    return e if isinstance(e, ServeError) else getattr(e, "cause", None) or e


class RayBackend:
    """``stream(job)`` over the replicas' handle, with retries on lost replicas."""

    def __init__(self, handle, cfg: ServerConfig, model_name: str, retries: int = 3):
        self.handle, self.cfg, self.model_name, self.retries = handle, cfg, model_name, retries
        self.retried = 0

    def status(self) -> dict:
        return {"backend": "ray", "retried": self.retried}

    async def stream(self, job: Job):
        with open(job.video_path, "rb") as f:
            video = f.read()
        deadline = time.perf_counter() + job.timeout_s + 5  # the replica enforces timeout_s itself
        for attempt in range(self.retries + 1):
            sent = False
            gen = self.handle.options(stream=True).generate.remote(video, job.question, job.options, job.timeout_s)
            try:
                buffered = []
                while True:
                    remaining = deadline - time.perf_counter()
                    if remaining <= 0:
                        raise ServeError(504, f"request timed out after {job.timeout_s:g} s", type="timeout")
                    try:
                        event = await asyncio.wait_for(gen.__anext__(), remaining)
                    except StopAsyncIteration:
                        break
                    except asyncio.TimeoutError:
                        raise ServeError(504, f"request timed out after {job.timeout_s:g} s", type="timeout") from None
                    if job.stream:
                        sent = True
                        yield event
                    else:
                        buffered.append(event)
                for event in buffered:
                    yield event
                return
            except BackPressureError:
                raise ServeError(429, "all replicas are busy; retry later", type="rate_limit_error",
                                 headers={"Retry-After": str(self.cfg.retry_after_s)}) from None
            except _REPLICA_LOST as e:
                if sent or attempt == self.retries:
                    raise ServeError(503, f"the replica answering this request failed ({type(e).__name__}); retry",
                                     type="server_error", headers={"Retry-After": str(self.cfg.retry_after_s)}) from None
                self.retried += 1
                log.warning("replica lost (%s); retrying the request (attempt %d)", type(e).__name__, attempt + 2)
                await asyncio.sleep(0.2 * (attempt + 1))
            except (ServeError, asyncio.CancelledError, GeneratorExit):
                raise
            except TaskCancelledError:
                raise ServeError(503, "the request was cancelled on its replica; retry", type="server_error") from None
            except Exception as e:  # noqa: BLE001 - the replica's own ServeError arrives wrapped
                raise as_serve_error(_unwrap(e)) from None
            finally:
                gen.cancel()


@serve.deployment(name="OpenAIIngress")
@serve.ingress()
class OpenAIIngress:
    """The HTTP routes: the single-process app, with the replicas as its backend."""

    async def __init__(self, replicas, cfg: ServerConfig):
        name = cfg.model_name or await replicas.model_name.remote()
        self.cfg, self.backend = cfg, RayBackend(replicas, cfg, name)

    def __serve_build_asgi_app__(self):
        return create_app(self.cfg, self.backend)


def build_app(cfg: ServerConfig, replicas: int = 2, num_cpus: float = 1, num_gpus: float = 0,
              min_replicas: int | None = None, max_replicas: int | None = None, max_queued: int = 64):
    """The bound Serve application. Autoscaling between min and max replicas when they differ."""
    replica_opts = dict(max_ongoing_requests=cfg.workers + cfg.queue_size, max_queued_requests=max_queued,
                        ray_actor_options={"num_cpus": num_cpus, "num_gpus": num_gpus},
                        health_check_period_s=2, health_check_timeout_s=30)
    lo, hi = min_replicas or replicas, max_replicas or replicas
    if hi > lo:
        replica_opts["autoscaling_config"] = {"min_replicas": lo, "max_replicas": hi, "initial_replicas": replicas,
                                              "target_ongoing_requests": cfg.workers}
    else:
        replica_opts["num_replicas"] = replicas
    pipeline = PipelineReplica.options(**replica_opts).bind(cfg)
    return OpenAIIngress.options(num_replicas=1, ray_actor_options={"num_cpus": 0}).bind(pipeline, cfg)


def run_ray(cfg: ServerConfig, replicas: int = 2, host: str = "127.0.0.1", port: int = 8000, address: str | None = None,
            num_cpus: float = 1, num_gpus: float = 0, min_replicas: int | None = None,
            max_replicas: int | None = None, ready: threading.Event | None = None) -> int:
    """Start (or join, with ``address``) a Ray cluster, deploy, serve until SIGINT/SIGTERM."""
    import ray

    env = {"PYTHONPATH": os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    ray.init(address=address, runtime_env={"env_vars": env}, include_dashboard=False, logging_level=logging.WARNING,
             log_to_driver=False)
    serve.start(http_options={"host": host, "port": port})
    serve.run(build_app(cfg, replicas, num_cpus, num_gpus, min_replicas, max_replicas), name="dytok", route_prefix="/")
    print(f"serving on Ray Serve at http://{host}:{port}/v1 ({replicas} pipeline replicas, {num_cpus} CPU "
          f"{num_gpus} GPU each)", file=sys.stderr, flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    if ready:
        ready.set()
    stop.wait()
    serve.shutdown()
    ray.shutdown()
    return 0
