"""Model families on the runtime side, by the manifest's ``family`` field."""
from __future__ import annotations

from ..errors import ManifestError
from . import qwen2_5_vl
from .base import Family

REGISTRY: dict[str, Family] = {f.name: f for f in (qwen2_5_vl.FAMILY,)}


def family_of(manifest) -> Family:
    """The runtime side of ``manifest``'s model family; a ManifestError naming the known ones otherwise."""
    name = manifest.data.get("family")
    try:
        return REGISTRY[name]
    except KeyError:
        raise ManifestError(f"{manifest.folder}: model family {name!r} has no runtime support here "
                            f"(known: {', '.join(REGISTRY)})") from None
