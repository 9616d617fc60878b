"""Atomic file writes shared by the whole project (no heavy imports): a reader never sees a
half-written file, and a failed write leaves nothing behind."""
from __future__ import annotations

import contextlib
import json
import os


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = ""):
    """A temporary path beside ``path`` (ending in ``suffix``, for libraries that pick the format
    from the extension), renamed onto ``path`` when the block ends without an error and removed
    otherwise. Creates the parent folder."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}{suffix}"
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_atomic(path: str, data: bytes) -> None:
    """``data`` to ``path``, atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def write_json(path: str, obj, indent: int | None = 1) -> None:
    """``obj`` as JSON to ``path``, atomically."""
    write_atomic(path, json.dumps(obj, indent=indent).encode())
