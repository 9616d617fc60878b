"""Video URL -> a local file the pipeline can open, within the server's limits.

``data:video/...;base64,...`` is decoded into a private temp folder (size limit, 413);
``file://`` must resolve (symlinks followed) under an allowed media folder (403 otherwise);
``http(s)://`` is fetched only with ``allow_url`` (size limit while streaming). Each video is
probed before it is queued: unreadable -> 400, longer than the limit -> 413.
"""
from __future__ import annotations

import base64
import binascii
import os
import re
import shutil
import tempfile
import urllib.parse
from dataclasses import dataclass

from runtime.errors import VideoError
from runtime.video import probe

from .config import ServerConfig
from .protocol import ServeError

_DATA_URL = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[\w.+-]+)*)(?P<b64>;base64)?,", re.A)


@dataclass
class Video:
    path: str
    temporary: bool = False

    def cleanup(self) -> None:
        if self.temporary:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            self.temporary = False

    def read_bytes(self) -> bytes:
        with open(self.path, "rb") as f:
            return f.read()


def _too_large(what: str, size: int, limit: int) -> ServeError:
    return ServeError(413, f"{what}: {size} bytes exceeds the upload limit of {limit} bytes", param="video_url")


class MediaResolver:
    def __init__(self, cfg: ServerConfig):
        self.cfg = cfg
        self.roots = [os.path.realpath(d) for d in cfg.media_dirs]
        self.tmp = tempfile.mkdtemp(prefix="dytok-serve-")

    def close(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _temp_file(self, suffix: str = ".mp4") -> tuple[int, str]:
        return tempfile.mkstemp(suffix=suffix, dir=self.tmp)

    def write_temp(self, data: bytes) -> Video:
        fd, path = self._temp_file()
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return Video(path, temporary=True)

    # ---- URL kinds -----------------------------------------------------------------------
    def from_data_url(self, url: str) -> Video:
        m = _DATA_URL.match(url)
        if not m or not m.group("b64"):
            raise ServeError(400, "video_url: a data URL must look like data:video/mp4;base64,<payload>", param="video_url")
        mime = (m.group("mime") or "").lower()
        if not (mime.startswith("video/") or mime == "application/octet-stream"):
            raise ServeError(400, f"video_url: data URL media type {mime or '(none)'!r} is not a video", param="video_url")
        payload = url[m.end():]
        size = len(payload) * 3 // 4  # decoded size, known before decoding
        if size > self.cfg.max_upload_bytes:
            raise _too_large("video_url data", size, self.cfg.max_upload_bytes)
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise ServeError(400, "video_url: the data URL payload is not valid base64", param="video_url") from None
        if not data:
            raise ServeError(400, "video_url: the data URL payload is empty", param="video_url")
        return self.write_temp(data)

    def from_file_url(self, url: str) -> Video:
        if not self.roots:
            raise ServeError(403, "video_url: file:// URLs are disabled on this server (start it with --media-dir DIR)",
                             type="permission_error", param="video_url")
        parsed = urllib.parse.urlsplit(url)
        if parsed.netloc not in ("", "localhost"):
            raise ServeError(400, f"video_url: file URL host {parsed.netloc!r} is not local", param="video_url")
        raw = urllib.parse.unquote(parsed.path)
        if "\x00" in raw or not os.path.isabs(raw):
            raise ServeError(400, "video_url: a file URL needs an absolute path (file:///dir/clip.mp4)", param="video_url")
        real = os.path.realpath(raw)
        if not any(os.path.commonpath([real, root]) == root for root in self.roots):
            raise ServeError(403, "video_url: the path is outside the server's media folders", type="permission_error",
                             param="video_url")
        if not os.path.isfile(real):
            raise ServeError(400, f"video_url: {raw!r} is not a file in the media folder", param="video_url")
        return Video(real)

    async def from_http_url(self, url: str) -> Video:
        if not self.cfg.allow_url:
            raise ServeError(403, "video_url: this server does not fetch http(s) URLs (start it with --allow-url), "
                                  "send a data: URL instead", type="permission_error", param="video_url")
        import httpx

        limit = self.cfg.max_upload_bytes
        fd, path = self._temp_file()
        video = Video(path, temporary=True)
        try:
            with os.fdopen(fd, "wb") as f:
                async with httpx.AsyncClient(timeout=30, follow_redirects=True, max_redirects=3) as client:
                    async with client.stream("GET", url) as r:
                        if r.status_code != 200:
                            raise ServeError(400, f"video_url: fetching it returned HTTP {r.status_code}", param="video_url")
                        size = 0
                        async for chunk in r.aiter_bytes():
                            size += len(chunk)
                            if size > limit:
                                raise _too_large("video_url download", size, limit)
                            f.write(chunk)
        except httpx.HTTPError as e:
            video.cleanup()
            raise ServeError(400, f"video_url: cannot fetch it: {type(e).__name__}", param="video_url") from None
        except BaseException:
            video.cleanup()
            raise
        return video

    async def resolve(self, url: str) -> Video:
        scheme = url.split(":", 1)[0].lower() if ":" in url else ""
        if scheme == "data":
            return self.from_data_url(url)
        if scheme == "file":
            return self.from_file_url(url)
        if scheme in ("http", "https"):
            return await self.from_http_url(url)
        raise ServeError(400, f"video_url: scheme {scheme or '(none)'!r} is not supported (data:, file://, http(s)://)",
                         param="video_url")

    def check(self, video: Video) -> None:
        """Probe the container (blocking: run it off the event loop). 400 unreadable, 413 too long."""
        try:
            info = probe(video.path)
        except VideoError as e:
            raise ServeError(400, f"video_url: {str(e).replace(video.path, 'the video')}", param="video_url") from None
        if info.duration > self.cfg.max_duration_s:
            raise ServeError(413, f"video_url: the video lasts {info.duration:.1f} s, over this server's limit of "
                                  f"{self.cfg.max_duration_s:g} s", param="video_url")
