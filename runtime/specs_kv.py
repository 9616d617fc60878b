"""KV-cache tensor names shared by export and runtime (the manifest lists them too)."""


def kv_input_names(num_layers: int, prefix: str = "past", start: int = 0) -> list[str]:
    """Names for layers ``start .. num_layers - 1`` (a split LLM's segments keep global indices)."""
    return [f"{prefix}_{kind}_{i}" for i in range(start, num_layers) for kind in ("key", "value")]
