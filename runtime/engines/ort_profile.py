"""Summaries of ONNX Runtime profiles: where a graph's time goes, by operator type."""
from __future__ import annotations

import json
from collections import defaultdict


def op_time_shares(trace_path: str) -> list[tuple[str, float, float]]:
    """(op_type, total ms, share of all node time) from one ORT profile, largest first.

    ORT writes one ``Node`` event per node per run (``dur`` in microseconds, ``args.op_name``).
    """
    events = json.load(open(trace_path))
    totals: dict[str, float] = defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            totals[e["args"]["op_name"]] += e["dur"] / 1000.0
    whole = sum(totals.values()) or 1.0
    return sorted(((op, ms, ms / whole) for op, ms in totals.items()), key=lambda r: -r[1])
