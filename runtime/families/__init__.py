"""Model families on the runtime side, by the manifest's ``family`` field (per model:
``Manifest.family_name``)."""
from __future__ import annotations

from ..errors import ManifestError
from . import llava_onevision, qwen2_5_vl
from .base import Family

REGISTRY: dict[str, Family] = {f.name: f for f in (qwen2_5_vl.FAMILY, llava_onevision.FAMILY)}


def family_of(manifest, which: str = "primary") -> Family:
    """The runtime side of model ``which``'s family in ``manifest``; a ManifestError naming the known ones otherwise."""
    name = manifest.family_name(which)
    try:
        return REGISTRY[name]
    except KeyError:
        raise ManifestError(f"{manifest.folder}: model family {name!r} has no runtime support here "
                            f"(known: {', '.join(REGISTRY)})") from None
