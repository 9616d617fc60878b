"""Server settings: one frozen value, built by scripts/serve.py and handed to the app factory."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

# The default model: the trained `needle` demo pair's export (scripts export it on first use).
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_ARTIFACTS = os.environ.get("DYTOK_ARTIFACTS", os.path.join(_REPO, "artifacts", "needle"))


@dataclass(frozen=True)
class ServerConfig:
    artifacts: str = DEFAULT_ARTIFACTS
    model_name: str | None = None  # None: the manifest's preset name
    media_dirs: tuple[str, ...] = ()  # file:// URLs must resolve under one of these
    allow_url: bool = False  # fetch http(s) video URLs
    workers: int = 1  # pipeline threads per process
    queue_size: int = 8  # waiting requests beyond the busy workers; more -> 429
    threads: int | None = None  # ONNX Runtime intra-op threads per session
    providers: tuple[str, ...] = ("cpu",)
    backend: str = "onnxruntime"  # or "tensorrt" (native engines: one pipeline per worker)
    request_timeout_s: float = 120.0  # queue wait + run; past it -> 504
    max_upload_bytes: int = 64 << 20  # decoded video bytes (data: URL or fetched URL) -> 413
    max_duration_s: float = 600.0  # video length -> 413
    max_frames: int = 64  # per-request `frames` ceiling
    max_new_tokens: int = 512  # per-request `max_tokens` ceiling
    retry_after_s: int = 1  # Retry-After on 429
    # Server defaults for the compression knobs a request may override.
    defaults: dict = field(default_factory=lambda: {"method": "visionzip", "retention": 0.25, "assistant": True,
                                                    "frames": 8, "max_tokens": 64})

    @property
    def max_body_bytes(self) -> int:
        """JSON body ceiling: a base64 payload of max_upload_bytes plus the rest of the message."""
        return self.max_upload_bytes * 4 // 3 + (1 << 20)
