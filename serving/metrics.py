"""Prometheus metrics of one app (its own registry, so several apps can live in one process)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

STAGES = ("queue", "decode_video", "preprocess", "assistant", "vision", "compress", "prefill", "decode", "end_to_end")
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("dytok_requests", "Chat-completion requests by HTTP status", ["status"], registry=r)
        self.errors = Counter("dytok_errors", "Failed requests by error type", ["type"], registry=r)
        self.latency = Histogram("dytok_request_seconds", "Request latency (to the last byte)", buckets=_LATENCY_BUCKETS,
                                 registry=r)
        self.stage = Histogram("dytok_stage_seconds", "Pipeline stage latency", ["stage"], buckets=_LATENCY_BUCKETS,
                               registry=r)
        self.kept_ratio = Histogram("dytok_kept_token_ratio", "Kept / total visual tokens per request",
                                    buckets=(0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0), registry=r)
        self.tokens = Counter("dytok_tokens", "Tokens processed", ["kind"], registry=r)
        self.in_flight = Gauge("dytok_in_flight", "Requests being answered or waiting", registry=r)

    def observe_summary(self, summary) -> None:
        self.stage.labels("queue").observe(summary.queue_s)
        for stage in STAGES[1:]:
            if stage in summary.timings:
                self.stage.labels(stage).observe(summary.timings[stage])
        if summary.total:
            self.kept_ratio.observe(summary.kept / summary.total)
        self.tokens.labels("prompt").inc(summary.prompt_tokens)
        self.tokens.labels("completion").inc(summary.completion_tokens)
        self.tokens.labels("visual_kept").inc(summary.kept)
        self.tokens.labels("visual_total").inc(summary.total)

    def finish(self, status: int, seconds: float, error_type: str | None = None) -> None:
        self.requests.labels(str(status)).inc()
        self.latency.observe(seconds)
        if error_type:
            self.errors.labels(error_type).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
