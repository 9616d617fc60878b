"""Micro-benchmark of the NumPy work between engine calls: DyToK allocation + VisionZip.

32 temporal groups x 256 merged tokens x 3584 dims (Qwen2.5-VL-7B at 448x448), 25% retention.
Prints medians after warm-up; not a test.
"""
import argparse
import platform
import time

import numpy as np

from runtime.compression import allocate_budgets, frame_weights, visionzip_groups


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--groups", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--dim", type=int, default=3584)
    ap.add_argument("--key-dim", type=int, default=80, help="head dim of the ViT keys used as the metric")
    ap.add_argument("--retention", type=float, default=0.25)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    n = args.groups * args.tokens
    tokens = rng.normal(size=(n, args.dim)).astype(np.float32)
    importance = rng.random(n).astype(np.float32)
    metric = rng.normal(size=(n, args.key_dim)).astype(np.float32)
    attention = rng.random((8, n)).astype(np.float32)
    budget = int(args.tokens * args.retention)

    def alloc():
        return allocate_budgets(frame_weights(attention, args.tokens), budget, args.tokens)

    def zip_(budgets):
        return visionzip_groups(tokens, importance, metric, budgets)

    budgets = alloc()
    timings = {"allocation": [], "visionzip": []}
    for i in range(args.warmup + args.runs):
        t0 = time.perf_counter()
        budgets = alloc()
        t1 = time.perf_counter()
        kept = zip_(budgets)
        t2 = time.perf_counter()
        if i >= args.warmup:
            timings["allocation"].append(t1 - t0)
            timings["visionzip"].append(t2 - t1)
    print(f"machine: {platform.processor() or platform.machine()}, numpy {np.__version__}, python {platform.python_version()}")
    print(f"{args.groups} groups x {args.tokens} tokens x {args.dim} dims, retention {args.retention}: "
          f"kept {len(kept.tokens)} of {n} tokens")
    for name, ts in timings.items():
        print(f"{name:>10}: median {np.median(ts) * 1e3:.2f} ms over {args.runs} runs")


if __name__ == "__main__":
    main()
