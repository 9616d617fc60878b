"""Serve an artifact folder behind OpenAI's chat-completions API on Ray Serve: one ingress
(the same FastAPI app as scripts/serve.py) and N pipeline replicas.

  python scripts/serve_ray.py --artifacts artifacts/needle --replicas 2 --media-dir ~/videos
  python scripts/serve_ray.py --address auto --replicas 4 --num-gpus 1 ...   # join a running cluster
  python scripts/serve_ray.py --min-replicas 1 --max-replicas 8 ...          # autoscaling

Without ``--address`` a local Ray cluster is started in this process and stopped on Ctrl-C.
"""
import argparse
import dataclasses
import logging
import sys

from cli.serve import add_server_args, config_from_args


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_server_args(ap)
    ap.add_argument("--replicas", type=int, default=2, help="pipeline replicas (initial, with autoscaling)")
    ap.add_argument("--min-replicas", type=int)
    ap.add_argument("--max-replicas", type=int)
    ap.add_argument("--num-cpus", type=float, default=1, help="CPUs per pipeline replica")
    ap.add_argument("--num-gpus", type=float, default=0, help="GPUs per pipeline replica")
    ap.add_argument("--address", help="an existing Ray cluster (e.g. auto); default: start a local one")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    try:
        from serving.ray_app import run_ray
    except ImportError as e:
        print(f"error: Ray Serve is not installed ({e}); pip install -e '.[ray]'", file=sys.stderr)
        return 2
    cfg = config_from_args(args)
    if not args.threads:
        cfg = dataclasses.replace(cfg, threads=max(1, int(args.num_cpus) // cfg.workers))
    return run_ray(cfg, args.replicas, args.host, args.port, args.address, args.num_cpus, args.num_gpus,
                   args.min_replicas, args.max_replicas)


if __name__ == "__main__":
    sys.exit(main())
