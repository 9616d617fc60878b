"""KV-cache tensor names shared by export and runtime (the manifest lists them too)."""


def kv_input_names(num_layers: int, prefix: str = "past") -> list[str]:
    return [f"{prefix}_{kind}_{i}" for i in range(num_layers) for kind in ("key", "value")]
