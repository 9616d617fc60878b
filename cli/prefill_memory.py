"""Peak memory of the LLM prefill against prompt length, chunked and in one call.

  python scripts/prefill_memory.py --artifacts artifacts/small --lengths 1024,2048,4096,8192,16384,32768 --chunk 2048

Each (length, chunk) runs in a fresh subprocess that loads only the graph (ONNX Runtime, CPU) and
prefills random embeddings; it reports the RSS after loading, the peak RSS (ru_maxrss) and the
time, next to runtime/admission.py's estimate. One-call runs whose estimate exceeds
--one-call-limit are skipped (they would take the machine down). Prints a Markdown table.
"""
import argparse
import json
import os
import subprocess
import sys
import time


def child(folder: str, role: str, length: int, chunk: int, threads: int | None) -> None:
    import resource

    import numpy as np

    from runtime.admission import current_rss
    from runtime.engines.ort import OrtEngine
    from runtime.manifest import load_manifest
    from runtime.prefill import empty_cache, prior_attention, run_chunked

    m = load_manifest(folder, verify_hashes=False)
    which = "primary" if role == "primary_llm" else "assistant"
    model = m.model(which)
    engine = OrtEngine(m.onnx_path(role), threads=threads)
    rng = np.random.default_rng(0)
    embeds = (rng.normal(size=(length, model["hidden_size"])) * 0.02).astype(np.float32)
    positions = np.tile(np.arange(length), (3, 1))
    loaded = current_rss()
    t0 = time.perf_counter()
    if role == "primary_llm":
        names = [t["name"] for t in m.graph(role)["inputs"] if t["name"].startswith("past_")]
        feeds = {"inputs_embeds": embeds[None], "position_ids": positions[:, None],
                 "attention_mask": np.ones((1, length), np.int64),
                 **empty_cache(model["num_layers"], model["num_kv_heads"], model["head_dim"])}
        run_chunked(engine, feeds, chunk or None, names)
    else:
        prior_attention(engine, embeds, positions, np.arange(10, length - 10), model, m.graph(role), chunk or None)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"loaded": loaded, "peak": peak, "seconds": seconds}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--artifacts", required=True)
    ap.add_argument("--role", default="primary_llm", choices=["primary_llm", "assistant_prior"])
    ap.add_argument("--lengths", default="1024,2048,4096,8192,16384,32768")
    ap.add_argument("--chunk", type=int, default=2048)
    ap.add_argument("--one-call-limit", type=float, default=8.0, help="GB: skip one-call runs estimated above this")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument("--child", nargs=2, type=int, metavar=("LENGTH", "CHUNK"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.artifacts, args.role, *args.child, args.threads)
        return 0

    from runtime.admission import OVERHEAD, prefill_bytes
    from runtime.manifest import load_manifest

    m = load_manifest(args.artifacts, verify_hashes=False)
    which = "primary" if args.role == "primary_llm" else "assistant"
    model = m.model(which)
    layers = max(model["prior_layers"]) + 1 if which == "assistant" else None
    rows = []
    print(f"{args.role} of {m.data['preset']} ({model['num_layers']} layers, hidden {model['hidden_size']}), "
          f"ONNX Runtime CPU, fp32", flush=True)
    print("| prompt tokens | prefill | RSS after load (GB) | peak RSS (GB) | peak - load (GB) | estimate (GB) | time (s) |")
    print("|---|---|---|---|---|---|---|")
    for length in [int(x) for x in args.lengths.split(",")]:
        for chunk in (args.chunk, 0):
            estimate = OVERHEAD * prefill_bytes(model, length, chunk or None, layers)
            label = f"chunks of {chunk}" if chunk else "one call"
            if chunk and chunk >= length:
                continue  # the same as one call
            if not chunk and estimate > args.one_call_limit * 1e9:
                print(f"| {length} | {label} | | skipped | | {estimate / 1e9:.2f} | |", flush=True)
                continue
            cmd = [sys.executable, os.path.abspath(__file__), "--artifacts", args.artifacts, "--role", args.role,
                   "--child", str(length), str(chunk)] + (["--threads", str(args.threads)] if args.threads else [])
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                print(f"| {length} | {label} | | failed (exit {out.returncode}) | | {estimate / 1e9:.2f} | |", flush=True)
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append({"length": length, "chunk": chunk, "estimate": estimate, **r})
            print(f"| {length} | {label} | {r['loaded'] / 1e9:.2f} | {r['peak'] / 1e9:.2f} | "
                  f"{(r['peak'] - r['loaded']) / 1e9:.2f} | {estimate / 1e9:.2f} | {r['seconds']:.1f} |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
