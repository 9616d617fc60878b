"""Serve an artifact folder behind OpenAI's chat-completions API (FastAPI + uvicorn).

  python scripts/serve.py --artifacts artifacts/needle --media-dir ~/videos
  python scripts/serve.py --artifacts artifacts/tiny --port 8001 --workers 2 --queue-size 8

Video arrives as a ``video_url`` content part: ``data:video/mp4;base64,...`` or ``file://`` under
a ``--media-dir``. ``--ray --replicas N`` serves the same app on Ray Serve instead
(scripts/serve_ray.py has its options).
"""
import argparse
import logging
import os
import sys


def add_server_args(ap: argparse.ArgumentParser) -> None:
    """Flags shared by serve.py and serve_ray.py; ``config_from_args`` reads them."""
    from serving.config import ServerConfig

    d = ServerConfig()
    ap.add_argument("--artifacts", help="artifact folder (default: the needle demo model, artifacts/needle or env "
                                        "DYTOK_ARTIFACTS, exported on first use)")
    ap.add_argument("--export-missing", action="store_true",
                    help="export a missing --artifacts folder whose name is a preset (needs the export extra)")
    ap.add_argument("--model-name", help="the model id clients send (default: the manifest's preset)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--media-dir", action="append", default=[], help="folder file:// URLs may read (repeatable)")
    ap.add_argument("--allow-url", action="store_true", help="fetch http(s) video URLs (off: nothing is fetched)")
    ap.add_argument("--workers", type=int, default=d.workers, help="pipeline threads per process")
    ap.add_argument("--queue-size", type=int, default=d.queue_size, help="waiting requests beyond the workers; more: 429")
    ap.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads (default: cores / workers)")
    ap.add_argument("--provider", action="append", help="ONNX Runtime provider: cpu, cuda, tensorrt (repeatable)")
    ap.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "tensorrt"])
    ap.add_argument("--timeout", type=float, default=d.request_timeout_s, help="seconds per request (queue + run): 504")
    ap.add_argument("--max-upload-mb", type=float, default=d.max_upload_bytes / 2 ** 20)
    ap.add_argument("--max-duration", type=float, default=d.max_duration_s, help="seconds of video: longer is 413")
    ap.add_argument("--max-frames", type=int, default=d.max_frames)
    ap.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens)
    ap.add_argument("--default-method", default=d.defaults["method"])
    ap.add_argument("--default-retention", type=float, default=d.defaults["retention"])
    ap.add_argument("--default-frames", type=int, default=d.defaults["frames"])
    ap.add_argument("--default-max-tokens", type=int, default=d.defaults["max_tokens"])
    ap.add_argument("--no-assistant", action="store_true", help="default: uniform budgets, no keyframe prior")


def artifacts_folder(args) -> str:
    """The folder to serve: --artifacts, else the default model (the needle demo, exported on first
    use); an --artifacts folder that does not exist is exported only with --export-missing."""
    from cli.common import artifacts_or_default

    if args.artifacts and not os.path.isdir(args.artifacts) and not getattr(args, "export_missing", False):
        raise SystemExit(f"error: no artifact folder at {args.artifacts}: export one with scripts/export.py --model "
                         f"<preset> --out {args.artifacts}, or add --export-missing")
    return artifacts_or_default(args.artifacts)


def config_from_args(args):
    from serving.config import ServerConfig

    threads = args.threads or max(1, (os.cpu_count() or 1) // args.workers)
    return ServerConfig(
        artifacts=artifacts_folder(args), model_name=args.model_name,
        media_dirs=tuple(os.path.abspath(os.path.expanduser(d)) for d in args.media_dir), allow_url=args.allow_url,
        workers=args.workers, queue_size=args.queue_size, threads=threads, providers=tuple(args.provider or ["cpu"]),
        backend=args.backend, request_timeout_s=args.timeout, max_upload_bytes=int(args.max_upload_mb * 2 ** 20),
        max_duration_s=args.max_duration, max_frames=args.max_frames, max_new_tokens=args.max_new_tokens,
        defaults={"method": args.default_method, "retention": args.default_retention, "assistant": not args.no_assistant,
                  "frames": args.default_frames, "max_tokens": args.default_max_tokens})


def main() -> int:
    from cli.common import parser, quiet

    ap = parser(__doc__)
    add_server_args(ap)
    ap.add_argument("--ray", action="store_true", help="serve on Ray Serve (see scripts/serve_ray.py)")
    ap.add_argument("--replicas", type=int, default=2, help="with --ray: pipeline replicas")
    args = ap.parse_args()
    quiet(args.verbose)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("dytok").setLevel(logging.INFO)
    if args.ray:  # the defaults of scripts/serve_ray.py: 1 CPU per replica, a local cluster
        import dataclasses

        from serving.ray_app import run_ray
        cfg = config_from_args(args)
        return run_ray(dataclasses.replace(cfg, threads=args.threads or 1), args.replicas, args.host, args.port)
    from runtime.errors import DyTokError
    from serving.app import create_app
    from serving.backend import LocalBackend

    cfg = config_from_args(args)
    try:
        backend = LocalBackend(cfg)
    except DyTokError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    import uvicorn

    print(f"serving {backend.model_name!r} from {cfg.artifacts} on http://{args.host}:{args.port}/v1 "
          f"({cfg.workers} workers, queue {cfg.queue_size}, media {list(cfg.media_dirs) or 'none'})", file=sys.stderr,
          flush=True)
    try:
        uvicorn.run(create_app(cfg, backend), host=args.host, port=args.port, log_level="warning",
                    timeout_graceful_shutdown=5)
    finally:
        backend.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
