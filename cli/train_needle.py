"""Train the needle pair from scratch on CPU (one command, seeded) and write both checkpoint folders.

  python scripts/train_needle.py --out out/needle --curriculum committed   # the committed pair
  python scripts/train_needle.py --out out/needle --assistant-only --train-prior 800  # a trained assistant
  python scripts/train_needle.py --out out/needle --assistant-only  # re-derive a cut assistant
  python scripts/train_needle.py --out weights/needle --train-prior-reduced 600 --seed 14  # a reduced-input prior

1. The primary: a tiny Qwen2.5-VL trained with a curriculum by video length (training/needle.py).
2. The assistant: either the primary trained so that its keyframe prior (the last prompt token's
   attention over the visual keys in --prior-layers) lands on the answer's groups (--train-prior,
   the committed one), or the primary cut after the layer whose prior puts the most mass on the
   needle groups of validation videos (per layer, measured here and printed).
Prints the wall time. CI never trains: it uses the committed weights.
"""
import argparse
import json
import os
import sys
import time


def _stages(name: str):
    """``NAME`` or ``NAME:K`` (the curriculum from its K-th stage on, e.g. after ``--init``)."""
    from training.needle import CURRICULA

    base, _, start = name.partition(":")
    if base not in CURRICULA or (start and not start.isdigit()):
        raise SystemExit(f"error: --curriculum {name!r}: expected NAME or NAME:K, NAME one of {', '.join(CURRICULA)}")
    return CURRICULA[base][int(start or 0):]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="weights/needle", help="folder for primary/ and assistant/")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--init-std", type=float, default=None, help="initializer_range (default: the config's 0.02)")
    ap.add_argument("--lr-scale", type=float, default=1.0, help="multiplies every stage's learning rate")
    ap.add_argument("--curriculum", default="wide", help="wide, first (its first stage only), alike, long-bank, or "
                                                            "committed (reproduces weights/needle: twelve chained runs, then the assistant's "
                                                            "prior training)")
    ap.add_argument("--init", help="start from this checkpoint folder (fresh optimizer)")
    ap.add_argument("--first-seed", type=int, default=0, help="index of the first training video seed")
    ap.add_argument("--device", default="cpu", help="torch device for training (cpu, cuda)")
    ap.add_argument("--assistant-only", action="store_true", help="keep the trained primary; derive the assistant")
    ap.add_argument("--prior-layers", help="comma-separated assistant prior layers (chosen end to end on validation, "
                                           "docs/needle-training-log.md); default: the layer with the largest needle share")
    ap.add_argument("--val-videos", type=int, default=40, help="validation videos per family for the layer choice")
    ap.add_argument("--train-prior", type=int, metavar="STEPS", default=0,
                    help="instead of cutting the primary: train a dedicated assistant for STEPS steps whose prior "
                         "(--prior-layers, default 1,2,3) finds the answer's groups (training/assistant.py: train_prior)")
    ap.add_argument("--train-prior-reduced", type=int, metavar="STEPS", default=0,
                    help="fine-tune OUT/assistant end to end (vision included) for STEPS steps at the reduced "
                         "assistant's input (half the frames, 56x56) into OUT/assistant-reduced "
                         "(training/assistant.py: train_prior_reduced)")
    args = ap.parse_args()
    if args.train_prior_reduced:
        from training.assistant import train_prior_reduced
        t0 = time.perf_counter()
        record = train_prior_reduced(os.path.join(args.out, "assistant"), os.path.join(args.out, "assistant-reduced"),
                                     steps=args.train_prior_reduced, seed=args.seed, first_seed=args.first_seed,
                                     threads=args.threads, log=lambda s: print(s, flush=True))
        print(f"assistant: {os.path.join(args.out, 'assistant-reduced')} ({record['wall_s']:.0f} s); wall time "
              f"{time.perf_counter() - t0:.0f} s")
        return 0

    from training.needle import train

    t0 = time.perf_counter()
    primary = os.path.join(args.out, "primary")
    if args.curriculum == "committed":  # the committed weights' runs, chained, in one command
        from training.needle import COMMITTED
        prev = None
        for i, (seed, first_seed, lr_scale, threads, stages) in enumerate(COMMITTED):
            out = primary if i == len(COMMITTED) - 1 else os.path.join(args.out, f"run{i}")
            record = train(out, seed=seed, threads=threads, stages=stages, lr_scale=lr_scale, init_from=prev,
                           first_seed=first_seed, device=args.device, log=lambda s: print(s, flush=True))
            print(json.dumps(record["stages"], indent=1))
            prev = out
        from training.assistant import train_prior
        from training.needle import COMMITTED_PRIOR, PRIOR_FROM_RUN
        record = train_prior(os.path.join(args.out, f"run{PRIOR_FROM_RUN}"), os.path.join(args.out, "assistant"),
                             threads=2, log=lambda s: print(s, flush=True), **COMMITTED_PRIOR)
        print(f"assistant: {os.path.join(args.out, 'assistant')}; wall time {time.perf_counter() - t0:.0f} s")
        return 0
    elif not args.assistant_only:
        record = train(primary, seed=args.seed, init_std=args.init_std, threads=args.threads, lr_scale=args.lr_scale,
                       stages=_stages(args.curriculum), init_from=args.init, first_seed=args.first_seed,
                       device=args.device,
                       log=lambda s: print(s, flush=True))
        print(json.dumps(record["stages"], indent=1))
    from training.assistant import derive_assistant, train_prior

    layers = [int(x) for x in args.prior_layers.split(",")] if args.prior_layers else None
    if args.train_prior:
        record = train_prior(primary, os.path.join(args.out, "assistant"), layers=tuple(layers or (1, 2, 3)),
                             steps=args.train_prior, seed=args.seed, first_seed=args.first_seed, threads=args.threads,
                             log=lambda s: print(s, flush=True))
        print(f"assistant: {os.path.join(args.out, 'assistant')} ({record['wall_s']:.0f} s); wall time "
              f"{time.perf_counter() - t0:.0f} s")
        return 0
    if layers is None and args.curriculum == "committed":
        from training.needle import COMMITTED_PRIOR_LAYERS
        layers = list(COMMITTED_PRIOR_LAYERS)
    choice = derive_assistant(primary, os.path.join(args.out, "assistant"), args.val_videos, threads=args.threads,
                              log=lambda s: print(s, flush=True), layers=layers)
    print(json.dumps(choice, indent=1))
    print(f"wall time {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
