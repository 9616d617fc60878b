"""A fixed set of pipeline worker threads fed by a bounded queue.

Admission is a counter of ``workers + queue_size`` slots: a job either gets a slot at once or
``submit`` raises ``QueueFull`` (the server answers 429). Jobs are callables taking the worker's
pipeline; one shared pipeline where the backend's engines are thread-safe (ONNX Runtime's
``InferenceSession.run`` is), else one pipeline per worker.
"""
from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence

log = logging.getLogger("dytok.serve")


class QueueFull(Exception):
    pass


class WorkerPool:
    def __init__(self, pipelines: Sequence, workers: int, queue_size: int):
        if workers < 1 or queue_size < 0:
            raise ValueError(f"workers must be >= 1 and queue_size >= 0, got {workers} and {queue_size}")
        self.workers, self.queue_size = workers, queue_size
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._admitted = 0  # queued + running
        self._running = 0
        self._threads = [threading.Thread(target=self._loop, args=(pipelines[i % len(pipelines)],),
                                          name=f"pipeline-{i}", daemon=True) for i in range(workers)]
        for t in self._threads:
            t.start()

    @property
    def running(self) -> int:
        return self._running

    @property
    def queued(self) -> int:
        return self._admitted - self._running

    def submit(self, job: Callable) -> None:
        with self._lock:
            if self._admitted >= self.workers + self.queue_size:
                raise QueueFull(f"{self._running} requests running and {self._admitted - self._running} queued")
            self._admitted += 1
        self._jobs.put(job)

    def _loop(self, pipeline) -> None:
        while (job := self._jobs.get()) is not None:
            with self._lock:
                self._running += 1
            try:
                job(pipeline)
            except BaseException:  # a job reports its own errors; this is a last resort
                log.exception("pipeline job failed outside its handler")
            finally:
                with self._lock:
                    self._running -= 1
                    self._admitted -= 1

    def close(self, timeout: float = 5.0) -> None:
        for _ in self._threads:
            self._jobs.put(None)
        for t in self._threads:
            t.join(timeout)
