"""Small file helpers shared by the runtime, the engine builder and calibration (no heavy imports)."""
from __future__ import annotations

import os


def write_atomic(path: str, data: bytes) -> None:
    """Write under a temp name and rename, so a reader never sees a half-written file."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
