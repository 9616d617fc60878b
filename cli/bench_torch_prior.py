"""The PyTorch engine backend's attention formulations side by side, in one process: "plain"
(explicit softmax, the exported ONNX form) against "sdpa" (torch's scaled_dot_product_attention;
the static-cache step for the LLM), per stage, on the real pipeline inputs.

  python scripts/bench_torch_prior.py --frames 32 --runs 3 > docs/results/torch_engine_speed_cpu.md
  python scripts/bench_torch_prior.py --artifacts artifacts/7b-random --device cuda --dtype bfloat16

Stages: the assistant's prior graph (``assistant_prior``, chunked as the runtime runs it), both
ViTs, the primary LLM's prefill of the full prompt (no compression) and greedy decode. Inputs
are those of ``Pipeline.answer`` on the benchmark's generated video (448x336) at
``--max-pixels`` (scripts/benchmark.py's default) for the primary and the assistant.
Configurations interleaved per run; medians after ``--warmup`` runs; the largest difference
between the formulations' outputs is printed beside each row. Not a test.
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np

from bench.host import describe, machine_info


class Times(dict):
    """stage -> the seconds of every measured run; ``[stage]`` is their median, ``best(stage)`` the minimum."""

    def __getitem__(self, stage):
        return float(np.median(dict.__getitem__(self, stage)))

    def best(self, stage):
        return float(np.min(dict.__getitem__(self, stage)))


def measure(variants: dict, runs: int, warmup: int) -> tuple[dict, dict]:
    """variants: name -> fn() returning (outputs, {stage: seconds}). Interleaved; returns each
    variant's ``Times`` and its last outputs."""
    times: dict = {name: Times() for name in variants}
    outputs: dict = {}
    for r in range(warmup + runs):
        for name, fn in variants.items():
            out, stages = fn()
            outputs[name] = out
            if r >= warmup:
                for stage, t in stages.items():
                    times[name].setdefault(stage, []).append(t)
    return times, outputs


def max_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="small", help="preset exported (--torch-only) when --artifacts is not given")
    ap.add_argument("--artifacts", help="an artifact folder (default: export --model --torch-only to a temp folder)")
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--max-pixels", type=int, default=192 * 28 * 28)
    ap.add_argument("--min-pixels", type=int, default=16 * 28 * 28)
    ap.add_argument("--chunk", type=int, default=2048, help="prefill chunk of the prior and the LLM (the runtime's)")
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", help="weights' dtype (default: the folder's)")
    ap.add_argument("--versus-dtype", help="also time plain attention in the weights' dtype against sdpa with the "
                                           "weights in this one (e.g. bfloat16), interleaved in the same run")
    ap.add_argument("--stages", default="prior,vit,llm", help="comma-separated subset of prior, vit, llm")
    args = ap.parse_args()
    stages = set(args.stages.split(","))
    if not stages or stages - {"prior", "vit", "llm"}:
        ap.error(f"--stages {args.stages!r}: a comma-separated subset of prior, vit, llm")
    load_before = os.getloadavg()

    import torch

    from export.exporter import export_artifacts
    from export.torch_engine import load_models, torch_engines
    from runtime.manifest import load_manifest
    from runtime.pipeline import Pipeline
    from runtime.compression.method import Kept
    from runtime.prefill import prior_attention, run_chunked
    from runtime.prefill_input import prefill_input
    from runtime.preprocess import preprocess_video
    from runtime.specs_kv import kv_input_names
    from runtime.video import sample_video, write_test_video
    from runtime.vision_inputs import VisionGeometry, vision_feeds

    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = tempfile.TemporaryDirectory(prefix="bench-torch-")
    folder = args.artifacts
    t0 = time.perf_counter()
    if not folder:
        folder = export_artifacts(args.model, os.path.join(tmp.name, args.model), torch_only=True, log=lambda *_: None)
    export_s = time.perf_counter() - t0
    m = load_manifest(folder)
    t0 = time.perf_counter()
    models = load_models(m, args.device, getattr(torch, args.dtype) if args.dtype else None)
    load_s = time.perf_counter() - t0
    engines = {a: torch_engines(m, models, args.device, attention=a) for a in ("plain", "sdpa")}
    pipe = Pipeline(m, engines["sdpa"])  # for its prompt, tables and geometry only

    video = write_test_video(os.path.join(tmp.name, "bench.mp4"), num_frames=96, size=(448, 336), fps=24.0)
    clip = sample_video(video, num_frames=args.frames)
    question = "What happens in the video?"
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)

    def vision_feeds_of(which):
        cfg = pipe.preprocess_config(which, args.max_pixels, args.min_pixels)
        patches = preprocess_video(clip.frames, cfg)
        model = m.model(which)
        geo = VisionGeometry(model["patch_size"], model["merge_size"], model["window_size"])
        return patches, {"pixel_values": patches.pixel_values, **vision_feeds(patches.grid_thw, geo)}

    def vit(which, attention, feeds):
        def run():
            t = time.perf_counter()
            out = engines[attention][f"{which}_vision"].run(feeds)
            sync()
            return out, {f"{which} ViT": time.perf_counter() - t}
        return run

    rows = []  # (stage, plain s, sdpa s, max diff)
    header = [f"# PyTorch engine backend: plain vs SDPA attention ({args.device})", "",
              f"- CPU: {describe(machine_info())}; torch {torch.__version__}; threads {torch.get_num_threads()}; device {args.device}",
              f"- artifacts: {m.data['preset']} + {m.data['assistant_preset']} ({'exported --torch-only in ' + f'{export_s:.1f} s' if not args.artifacts else folder}), "
              f"weights {next(models['primary'].parameters()).dtype}, loaded in {load_s:.1f} s",
              f"- video 448x336, {args.frames} frames, max_pixels {args.max_pixels}, prefill chunk {args.chunk}; "
              f"medians of {args.runs} runs after {args.warmup} warm-up, formulations interleaved"]

    def vit_rows(which, feeds):
        """The ViT row (when asked for) and the tokens the stages after it take."""
        if "vit" not in stages:
            return vit(which, "sdpa", feeds)()[0]["tokens"]
        med, outs = measure({a: vit(which, a, feeds) for a in ("plain", "sdpa")}, args.runs, args.warmup)
        rows.append((f"{which} ViT ({len(feeds['pixel_values'])} patches)", med["plain"], med["sdpa"], f"{which} ViT",
                     max(max_diff(outs["plain"][k], outs["sdpa"][k]) for k in ("tokens", "importance", "metric"))))
        return outs["sdpa"]["tokens"]

    # ---- the assistant: its ViT, then the prior graph on its tokens ---------------------------
    a_patches, a_feeds = vision_feeds_of("assistant")
    a_tokens = vit_rows("assistant", a_feeds) if stages & {"vit", "prior"} else None

    def prompt(which, patches, tokens):
        """The full prompt with every visual token: (ids, embeds, positions, visual span start, length)."""
        seq = pipe.sequence(which, question, patches, 2 / clip.sampled_fps)
        inp = prefill_input(seq, Kept.select(tokens, np.arange(len(tokens))), pipe.tables[which])
        return inp.ids, inp.embeds, inp.positions, seq.start, seq.n_visual

    ids, embeds, pos, start, n_vis = prompt("assistant", a_patches, a_tokens)
    graph, consts = m.graph("assistant_prior"), m.model("assistant")

    def prior(attention, engine=None):
        def run():
            t = time.perf_counter()
            out = prior_attention(engine or engines[attention]["assistant_prior"], embeds, pos,
                                  np.arange(start, start + n_vis), consts, graph, args.chunk)
            sync()
            return out, {"prior": time.perf_counter() - t}
        return run
    if "prior" in stages:
        med, outs = measure({a: prior(a) for a in ("plain", "sdpa")}, args.runs, args.warmup)
        rows.append((f"assistant prior ({len(ids)} tokens, layers {consts['prior_layers']}, "
                     f"{-(-len(ids) // args.chunk)} chunks)", med["plain"], med["sdpa"], "prior",
                     max_diff(outs["plain"], outs["sdpa"])))
    if "prior" in stages and args.versus_dtype:
        other = torch_engines(m, load_models(m, args.device, getattr(torch, args.versus_dtype)), args.device)
        med, outs = measure({"plain": prior("plain"), "other": prior("sdpa", other["assistant_prior"])}, args.runs,
                            args.warmup)
        base = str(next(models["assistant"].parameters()).dtype).removeprefix("torch.")
        rows.append((f"assistant prior, plain {base} vs sdpa {args.versus_dtype}", med["plain"], med["other"], "prior",
                     max_diff(outs["plain"], outs["other"])))

    # ---- the primary: its ViT, then prefill and decode of the full prompt ---------------------
    p_patches, p_feeds = vision_feeds_of("primary")
    p_tokens = vit_rows("primary", p_feeds) if stages & {"vit", "llm"} else None
    decode_rows = []
    if "llm" in stages:
        ids, embeds, pos, start, n_vis = prompt("primary", p_patches, p_tokens)
        table = pipe.tables["primary"]
        c = m.model("primary")
        names = kv_input_names(c["num_layers"])
        next_pos = int(pos.max()) + 1

        def llm_run_loop(attention):  # the runtime's loop over run() with past/present
            engine = engines[attention]["primary_llm"]

            def run():
                feeds = {"inputs_embeds": embeds[None], "position_ids": pos[:, None],
                         "attention_mask": np.ones((1, len(embeds)), np.int64),
                         **{n: np.zeros((1, c["num_kv_heads"], 0, c["head_dim"]), np.float32) for n in names}}
                t = time.perf_counter()
                out = run_chunked(engine, feeds, args.chunk, names)
                t_prefill = time.perf_counter() - t
                first, tokens = out["logits"][0], []
                t = time.perf_counter()
                for i in range(args.new_tokens):
                    tokens.append(int(np.argmax(out["logits"][0])))
                    if i == args.new_tokens - 1:
                        break
                    out = engine.run({"inputs_embeds": np.asarray(table[[tokens[-1]]], np.float32)[None],
                                      "position_ids": np.full((3, 1, 1), next_pos + i, np.int64),
                                      "attention_mask": np.ones((1, len(embeds) + i + 1), np.int64),
                                      **{n: out[n.replace("past", "present")] for n in names}})
                return (first, tokens), {"prefill": t_prefill, "decode": time.perf_counter() - t}
            return run

        def llm_step():  # open_step: static cache, CUDA graph on CUDA
            engine = engines["sdpa"]["primary_llm"]

            def run():
                step = engine.open_step(len(embeds) + args.new_tokens)
                t = time.perf_counter()
                logits = step.prefill(embeds, pos, args.chunk)
                sync()
                t_prefill = time.perf_counter() - t
                first, tokens = logits, []
                t = time.perf_counter()
                for i in range(args.new_tokens):
                    tokens.append(int(np.argmax(logits)))
                    if i == args.new_tokens - 1:
                        break
                    logits = step.decode(np.asarray(table[tokens[-1]], np.float32), next_pos + i)
                return (first, tokens), {"prefill": t_prefill, "decode": time.perf_counter() - t}
            return run

        med, outs = measure({"plain": llm_run_loop("plain"), "sdpa-run": llm_run_loop("sdpa"), "sdpa-step": llm_step()},
                            args.runs, args.warmup)
        rows.append((f"LLM prefill ({len(ids)} tokens), run()", med["plain"], med["sdpa-run"], "prefill",
                     max_diff(outs["plain"][0], outs["sdpa-run"][0])))
        rows.append((f"LLM prefill ({len(ids)} tokens), open_step", med["plain"], med["sdpa-step"], "prefill",
                     max_diff(outs["plain"][0], outs["sdpa-step"][0])))
        steps = args.new_tokens - 1
        for name in ("plain", "sdpa-run", "sdpa-step"):
            decode_rows.append((name, med[name]["decode"] / steps * 1e3, med[name].best("decode") / steps * 1e3,
                                outs[name][1] == outs["plain"][1]))

    header.append("- load average (1, 5, 15 min) before: %.2f %.2f %.2f, after: %.2f %.2f %.2f (shared machine)"
                  % (*load_before, *os.getloadavg()))
    print("\n".join(header))
    print()
    print("Seconds: median (minimum) of the runs; speed-up of the medians (of the minima).")
    print()
    print("| stage | plain (s) | sdpa (s) | speed-up | max abs diff |")
    print("|---|---|---|---|---|")
    for stage, a, b, key, d in rows:
        print(f"| {stage} | {a[key]:.3f} ({a.best(key):.3f}) | {b[key]:.3f} ({b.best(key):.3f}) | "
              f"{a[key] / b[key]:.2f}x ({a.best(key) / b.best(key):.2f}x) | {d:.1e} |")
    if decode_rows:
        print()
        print(f"Greedy decode, {args.new_tokens - 1} steps after the prefill above (ms per token; tokens equal to plain's):")
        print()
        print("| LLM decode | ms/token, median (min) | tokens identical |")
        print("|---|---|---|")
        labels = {"plain": "plain, run() with past/present", "sdpa-run": "sdpa, run() with past/present",
                  "sdpa-step": "sdpa, open_step (static cache" + (", CUDA graph)" if args.device.startswith("cuda") else ")")}
        for name, ms, best, same in decode_rows:
            print(f"| {labels[name]} | {ms:.1f} ({best:.1f}) | {'yes' if same else 'NO'} |")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
