"""Micro-benchmark of the split LLM (issue #13) on an artifact folder exported with --fastv-layer K.

  python scripts/bench_split_llm.py --artifacts artifacts/small-plain --prompt 1600 --retention 0.25

1. FastV design A/B at prefill and decode. A (what is built): two graphs, lo (layers < K, with the
   layer K-1 attention row) then hi (layers >= K on the kept rows). B (the alternative: one graph
   with an attention output and a keep-index input): its keep indices need the attention first,
   so B runs a probe over layers < K and then the whole graph; its prefill costs A's plus one
   more lo(N), which this measures with the same lo graph. B's decode step is one call of a
   full-depth graph: measured as the one-graph LLM's step at the same past (an upper bound: its
   upper layers would attend to fewer keys).
2. DyCoke's KV step: decode tokens/s with the one-graph LLM, the split LLM alone, and the split LLM
   with DyCoke KV pruning (every step pruned: worst case for its mask), on random prompts.
Medians after one warm-up, configurations interleaved. Not a test.
"""
import argparse
import platform
import sys
import time


import numpy as np  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--artifacts", required=True)
    ap.add_argument("--prompt", type=int, default=1600, help="prompt tokens (mostly visual)")
    ap.add_argument("--retention", type=float, default=0.25)
    ap.add_argument("--steps", type=int, default=16, help="decode steps per decode sample")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import onnxruntime

    from runtime import compression as C
    from runtime.engines.ort import OrtEngine
    from runtime.llm_split import HI, LO, split_layer
    from runtime.manifest import load_manifest
    from runtime.specs_kv import kv_input_names

    m = load_manifest(args.artifacts)
    k = split_layer(m)
    if k is None:
        print(f"error: {args.artifacts} has no split LLM (export with --fastv-layer K)", file=sys.stderr)
        return 2
    c = m.model("primary")
    depth = c["num_layers"]
    full, lo, hi = (OrtEngine(m.onnx_path(r), threads=args.threads) for r in ("primary_llm", LO, HI))
    rng = np.random.default_rng(0)
    n, s = args.prompt, 16
    v = n - 40
    kept = int(v * args.retention)
    x = rng.normal(size=(1, n, c["hidden_size"])).astype(np.float32) * 0.02
    pos = np.tile(np.arange(n), (3, 1, 1))
    empty = np.zeros((1, c["num_kv_heads"], 0, c["head_dim"]), np.float32)
    names, lo_names, hi_names = kv_input_names(depth), kv_input_names(k), kv_input_names(depth, "past", k)

    def feeds(first, emb, p, total, past_names, past=None):
        return {first: emb, "position_ids": p, "attention_mask": np.ones((1, total), np.int64),
                **{nm: (past[nm.replace("past", "present")] if past else empty) for nm in past_names}}

    def timed(fn):
        t0 = time.perf_counter()
        out = fn()
        return time.perf_counter() - t0, out

    samples = {key: [] for key in ("one_graph", "lo", "hi", "A", "B")}
    for i in range(args.runs + 1):
        t_full, _ = timed(lambda: full.run(feeds("inputs_embeds", x, pos, n, names)))
        t_lo, out_lo = timed(lambda: lo.run(feeds("inputs_embeds", x, pos, n, lo_names)))
        keep = C.fastv_keep_top(out_lo["attention"], s, v, kept)
        t_hi, _ = timed(lambda: hi.run(feeds("hidden_states", out_lo["hidden_states"][:, keep], pos[..., keep], len(keep),
                                             hi_names)))
        if i:
            for key, val in (("one_graph", t_full), ("lo", t_lo), ("hi", t_hi), ("A", t_lo + t_hi), ("B", 2 * t_lo + t_hi)):
                samples[key].append(val)
    med = {key: float(np.median(val)) for key, val in samples.items()}
    print(f"{m.data['preset']}: {depth} layers, split at K={k}, prompt {n} tokens ({v} visual, {kept} kept), "
          f"onnxruntime {onnxruntime.__version__}, {args.threads} threads, {platform.processor() or platform.machine()}")
    print(f"prefill medians of {args.runs}: one-graph full {med['one_graph']:.3f}s | lo(N) {med['lo']:.3f}s, "
          f"hi(kept) {med['hi']:.3f}s | A = lo + hi {med['A']:.3f}s | B = probe lo + lo + hi {med['B']:.3f}s "
          f"(A/B: {med['B'] / med['A']:.2f}x)")

    # decode: past = prompt (one-graph / DyCoke) or kept prompt (FastV's upper layers)
    out_full = full.run(feeds("inputs_embeds", x, pos, n, names))
    out_lo = lo.run(feeds("inputs_embeds", x, pos, n, lo_names))
    out_hi_all = hi.run(feeds("hidden_states", out_lo["hidden_states"], pos, n, hi_names))
    keep = C.fastv_keep_top(out_lo["attention"], s, v, kept)
    out_hi_kept = hi.run(feeds("hidden_states", out_lo["hidden_states"][:, keep], pos[..., keep], len(keep), hi_names))

    def decode(mode):
        """tokens/s over ``args.steps`` steps."""
        past_f, past_lo = out_full, out_lo
        past_hi = out_hi_kept if mode == "fastv" else out_hi_all
        n_hi = len(keep) if mode == "fastv" else n
        beta_prev = None
        t0 = time.perf_counter()
        for step in range(args.steps):
            e = rng.normal(size=(1, 1, c["hidden_size"])).astype(np.float32) * 0.02
            p = np.full((3, 1, 1), n + step)
            if mode == "one_graph":
                past_f = full.run(feeds("inputs_embeds", e, p, n + step + 1, names, past_f))
                continue
            past_lo = lo.run(feeds("inputs_embeds", e, p, n + step + 1, lo_names, past_lo))
            f = feeds("hidden_states", past_lo["hidden_states"], p, n_hi + step + 1, hi_names, past_hi)
            if mode == "dycoke_kv":
                rows = C.kv_keep(past_lo["attention"][s:s + v], beta_prev, s, n + step + 1, 0.8, 2.0)  # 2.0: prune every step
                beta_prev = past_lo["attention"][s:s + v]
                f["attention_mask"][:] = 0
                f["attention_mask"][0, rows] = 1
            past_hi = hi.run(f)
        return args.steps / (time.perf_counter() - t0)

    modes = ("one_graph", "split", "dycoke_kv", "fastv")
    rates = {mode: [] for mode in modes}
    for i in range(args.runs + 1):
        for mode in modes:
            r = decode(mode)
            if i:
                rates[mode].append(r)
    med = {mode: float(np.median(val)) for mode, val in rates.items()}
    print(f"decode tokens/s, medians of {args.runs} x {args.steps} steps at past {n}: one-graph {med['one_graph']:.1f} | "
          f"split, no pruning {med['split']:.1f} | split + DyCoke KV (p 0.8, every step) {med['dycoke_kv']:.1f} | "
          f"FastV (A: lo past {n}, hi past {len(keep)}) {med['fastv']:.1f} "
          f"[B's decode ~ one-graph step: {med['one_graph']:.1f}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
