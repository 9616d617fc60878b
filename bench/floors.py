"""Each stage against its hardware floor: FLOPs at a measured matrix-multiply rate, bytes at a
measured copy bandwidth (decode reads every LLM weight and the KV cache once per token). Pure
arithmetic on a benchmark row; the rates are measured on the device (export.eager_baseline.measure_rates)."""
from __future__ import annotations

from runtime.memory_plan import kv_bytes_per_token, weight_bytes

STAGE_KINDS = ("assistant", "vision", "prefill", "decode")


def decode_bytes(model: dict, precision: str, prompt: int, tokens: int) -> float:
    """Bytes ``tokens`` decode steps must read after a prompt of ``prompt`` tokens: every LLM
    weight (the ViT is not read) and the growing KV cache, once per step."""
    w = weight_bytes(model, precision)
    per_token = w["llm_linear"] + w["llm_norms"]
    kv = kv_bytes_per_token(model, precision) * sum(prompt + k for k in range(tokens))
    return per_token * tokens + kv


def stage_floors(row: dict, model: dict, precision: str, matmul_flops_per_s: float, copy_bytes_per_s: float) -> dict:
    """Per stage of a measured row: seconds, floor seconds (the larger of FLOPs/rate and
    bytes/bandwidth), and their ratio. ``model``: the primary's manifest constants."""
    out = {}
    prompt = row["visual_tokens"] + row.get("text_tokens", 0)
    for stage in STAGE_KINDS:
        flops = row["flops"].get(stage)
        if flops is None:
            continue
        floor = flops / matmul_flops_per_s
        if stage == "decode":
            tokens = max(int(round(row["decode_tokens_per_s"] * row["stages_s"]["decode"])), 1)
            floor = max(floor, decode_bytes(model, precision, prompt, tokens) / copy_bytes_per_s)
        seconds = row["stages_s"][stage]
        out[stage] = {"seconds": seconds, "floor_s": floor, "over_floor": seconds / floor if floor > 0 else float("nan")}
    return out
