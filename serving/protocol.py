"""OpenAI chat-completions wire format: the request model (pydantic), its translation to
pipeline Options, and the response / stream-chunk bodies. Route handlers only translate."""
from __future__ import annotations

import time
import uuid
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from runtime.compression import METHODS
from runtime.options import Options

from .config import ServerConfig


class ServeError(Exception):
    """An error answered as OpenAI's ``{"error": {...}}`` body with an HTTP status."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.headers = status, message, type, param, headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.status}}

    def __reduce__(self):  # crosses Ray process boundaries intact
        return (ServeError, (self.status, self.message, self.type, self.param, self.headers))


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class VideoURL(BaseModel):
    url: str


class VideoPart(BaseModel):
    type: Literal["video_url"]
    video_url: VideoURL


class ImagePart(BaseModel):  # accepted by the schema so the error can say what to send instead
    model_config = ConfigDict(extra="allow")
    type: Literal["image_url", "input_audio", "file"]


Part = Annotated[Union[TextPart, VideoPart, ImagePart], Field(discriminator="type")]


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Union[str, list[Part], None] = None


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatRequest(BaseModel):
    """OpenAI's fields that apply, plus the DyToK knobs as extra body fields. Other OpenAI
    fields (user, logprobs, ...) are accepted and ignored."""
    model_config = ConfigDict(extra="ignore")
    model: str
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=0, lt=2 ** 63)
    n: int = Field(1, ge=1, le=1)
    # DyToK knobs (server defaults otherwise)
    method: Literal[METHODS] | None = None  # type: ignore[valid-type]
    retention: float | None = Field(None, gt=0, le=1)
    budget: int | None = Field(None, ge=1)
    assistant: bool | None = None
    frames: int | None = Field(None, ge=1)


def parse_request(body: bytes) -> ChatRequest:
    """JSON body -> ChatRequest; any schema error is one 400 naming the field."""
    try:
        return ChatRequest.model_validate_json(body)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "body"
        raise ServeError(400, f"{where}: {err['msg']}", param=where) from None


def video_and_question(req: ChatRequest) -> tuple[str, str]:
    """The one video URL of the conversation and the question (the last user message's text)."""
    videos = []
    for i, msg in enumerate(req.messages):
        for j, part in enumerate(msg.content if isinstance(msg.content, list) else []):
            if isinstance(part, VideoPart):
                videos.append(part.video_url.url)
            elif isinstance(part, ImagePart):
                raise ServeError(400, f"messages.{i}.content.{j}: {part.type} parts are not supported; send the video "
                                      f"as a video_url part", param=f"messages.{i}.content.{j}")
    if len(videos) != 1:
        raise ServeError(400, f"messages: {len(videos)} video_url parts; this model answers about exactly one video",
                         param="messages")
    users = [m for m in req.messages if m.role == "user"]
    content = users[-1].content if users else None
    if isinstance(content, list):
        question = "\n".join(p.text for p in content if isinstance(p, TextPart))
    else:
        question = content or ""
    if not question.strip():
        raise ServeError(400, "messages: the last user message has no text question", param="messages")
    return videos[0], question


def build_options(req: ChatRequest, cfg: ServerConfig) -> Options:
    """Request knobs over the server defaults, within the server's ceilings."""
    d = cfg.defaults
    frames = req.frames or d["frames"]
    if frames > cfg.max_frames:
        raise ServeError(400, f"frames: {frames} exceeds this server's limit of {cfg.max_frames}", param="frames")
    new = req.max_completion_tokens or req.max_tokens or d["max_tokens"]
    if new > cfg.max_new_tokens:
        raise ServeError(400, f"max_tokens: {new} exceeds this server's limit of {cfg.max_new_tokens}",
                         param="max_tokens")
    return Options(num_frames=frames, method=req.method or d["method"],
                   retention=req.retention if req.retention is not None else d["retention"], budget=req.budget,
                   assistant=req.assistant if req.assistant is not None else d["assistant"], max_new_tokens=new,
                   temperature=req.temperature or 0.0, top_p=req.top_p if req.top_p is not None else 1.0,
                   seed=req.seed or 0)


def new_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def usage_body(summary) -> dict:
    """OpenAI's usage plus the visual-token counts (kept after compression / before)."""
    return {"prompt_tokens": summary.prompt_tokens, "completion_tokens": summary.completion_tokens,
            "total_tokens": summary.prompt_tokens + summary.completion_tokens,
            "visual_tokens_kept": summary.kept, "visual_tokens_total": summary.total}


def completion_body(cid: str, model: str, text: str, summary) -> dict:
    return {"id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": summary.finish_reason, "logprobs": None}],
            "usage": usage_body(summary)}


def chunk_body(cid: str, model: str, created: int, delta: dict | None, finish_reason: str | None = None,
               usage: dict | None = None) -> dict:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]
    body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model, "choices": choices}
    if usage is not None:
        body["usage"] = usage
    return body
