"""Load test of an OpenAI-compatible video endpoint with the official ``openai`` client.

  python scripts/loadtest.py --url http://127.0.0.1:8000/v1 --video clip.mp4 --clients 8 --requests 200 \
      [--data-url] [--stream-every 3] [--rss-pid PID] [--kill-replica-after 60] [--json out/load.json]

N client threads send ``--requests`` requests in all (file:// URL, or the video inlined as a
data: URL with ``--data-url``). Reports latency p50/p95/p99, throughput, errors by kind, and
the RSS of the ``--rss-pid`` process tree over time (for Ray: the driver of serve_ray.py, whose
tree holds every replica). ``--kill-replica-after N`` SIGKILLs one Ray pipeline replica (a
``ray::ServeReplica:*PipelineReplica`` process in that tree) once N requests have finished,
to check that no accepted request is lost. Every request is accounted for: ok, or an HTTP
error with its status, or a transport error. Requests to loopback only; bounded in count.
"""
import argparse
import base64
import os
import signal
import sys
import threading
import time

import numpy as np


def tree_rss(pid: int) -> tuple[float, int]:
    """RSS in MiB of a process and all its descendants, and how many processes."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return float("nan"), 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2 ** 20, len(procs)


def kill_one_replica(pid: int, name: str = "PipelineReplica") -> int | None:
    """SIGKILL one Ray Serve replica process of deployment ``name`` under ``pid``; its pid."""
    import psutil

    for p in psutil.Process(pid).children(recursive=True):
        try:
            title = " ".join(p.cmdline())
        except psutil.NoSuchProcess:
            continue
        if title.startswith("ray::ServeReplica") and name in title:
            os.kill(p.pid, signal.SIGKILL)
            return p.pid
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8000/v1")
    ap.add_argument("--model", help="model id (default: the server's first)")
    ap.add_argument("--video", required=True)
    ap.add_argument("--data-url", action="store_true", help="send the video inline instead of a file:// URL")
    ap.add_argument("--question", default="What happens in the video?")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--requests", type=int, default=100)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--stream-every", type=int, default=0, help="every k-th request streams (0: none)")
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--rss-pid", type=int, help="server process (tree) whose RSS is sampled")
    ap.add_argument("--rss-every", type=float, default=1.0, help="seconds between RSS samples")
    ap.add_argument("--kill-replica-after", type=int, help="SIGKILL one Ray replica after this many requests finished")
    ap.add_argument("--label", default="")
    ap.add_argument("--json", help="write the report here")
    args = ap.parse_args()

    import openai

    client = openai.OpenAI(base_url=args.url, api_key="unused", max_retries=0, timeout=args.timeout)
    model = args.model or client.models.list().data[0].id
    path = os.path.abspath(args.video)
    url = ("data:video/mp4;base64," + base64.b64encode(open(path, "rb").read()).decode()) if args.data_url \
        else "file://" + path
    messages = [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": url}},
                                             {"type": "text", "text": args.question}]}]
    extra = {"frames": args.frames}

    lock = threading.Lock()
    next_i, done = [0], []  # done: (i, seconds, outcome, started_at)
    rss: list[tuple[float, float, int]] = []
    killed: list[tuple[float, int | None]] = []
    stop = threading.Event()
    t_start = time.perf_counter()

    def one(i: int) -> str:
        try:
            if args.stream_every and i % args.stream_every == 0:
                chunks = list(client.chat.completions.create(model=model, messages=messages, max_tokens=args.max_tokens,
                                                             stream=True, extra_body=extra))
                finished = [c for c in chunks if c.choices and c.choices[0].finish_reason]
                return "ok" if finished else "stream ended without finish_reason"
            r = client.chat.completions.create(model=model, messages=messages, max_tokens=args.max_tokens,
                                               extra_body=extra)
            return "ok" if r.choices and r.usage.completion_tokens > 0 else "empty answer"
        except openai.APIStatusError as e:
            return f"HTTP {e.status_code}: {str(e.message)[:80]}"
        except openai.APIError as e:  # a stream cut by an error event lands here too
            return f"{type(e).__name__}: {str(e)[:80]}"

    def worker() -> None:
        while True:
            with lock:
                if next_i[0] >= args.requests:
                    return
                i = next_i[0]
                next_i[0] += 1
            t0 = time.perf_counter()
            outcome = one(i)
            with lock:
                done.append((i, time.perf_counter() - t0, outcome, t0 - t_start))
                if args.kill_replica_after and len(done) == args.kill_replica_after and not killed:
                    killed.append((time.perf_counter() - t_start, kill_one_replica(args.rss_pid)))
                    print(f"killed replica pid {killed[0][1]} at {killed[0][0]:.1f} s", file=sys.stderr, flush=True)

    def sampler() -> None:
        while not stop.is_set():
            rss.append((time.perf_counter() - t_start, *tree_rss(args.rss_pid)))
            stop.wait(args.rss_every)

    if args.rss_pid:
        threading.Thread(target=sampler, daemon=True).start()
    threads = [threading.Thread(target=worker) for _ in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t_start
    stop.set()
    if args.rss_pid:
        rss.append((wall, *tree_rss(args.rss_pid)))

    ok = [s for _, s, o, _ in done if o == "ok"]
    errors: dict[str, int] = {}
    for _, _, o, _ in done:
        if o != "ok":
            errors[o] = errors.get(o, 0) + 1
    lat = np.array(ok) if ok else np.array([np.nan])
    report = {"label": args.label, "url": args.url, "model": model, "clients": args.clients, "requests": len(done),
              "ok": len(ok), "errors": errors, "wall_s": wall, "throughput_rps": len(ok) / wall,
              "latency_s": {"p50": float(np.percentile(lat, 50)), "p95": float(np.percentile(lat, 95)),
                            "p99": float(np.percentile(lat, 99)), "mean": float(lat.mean())},
              "frames": args.frames, "max_tokens": args.max_tokens, "data_url": args.data_url,
              "rss_mib": [(round(t, 1), round(m, 1), n) for t, m, n in rss], "killed": killed}
    if rss:
        first, last = rss[0][1], rss[-1][1]
        peak = max(m for _, m, _ in rss)
        report["rss_summary"] = {"start_mib": first, "end_mib": last, "peak_mib": peak, "growth": last / first - 1}
    print(f"{args.label or args.url}: {len(done)} requests, {args.clients} clients, {len(ok)} ok, "
          f"{sum(errors.values())} errors {errors or ''}")
    print(f"  latency p50 {report['latency_s']['p50']:.3f} s  p95 {report['latency_s']['p95']:.3f} s  "
          f"p99 {report['latency_s']['p99']:.3f} s  throughput {report['throughput_rps']:.2f} req/s over {wall:.1f} s")
    if rss:
        s = report["rss_summary"]
        step = max(1, len(rss) // 8)
        trace = "  ".join(f"{t:.0f}s:{m:.0f}" for t, m, _ in rss[::step])
        print(f"  RSS (MiB, process tree) start {s['start_mib']:.0f} peak {s['peak_mib']:.0f} end {s['end_mib']:.0f} "
              f"({s['growth']:+.1%}); over time {trace}")
    if args.json:
        from runtime.fileio import write_json
        write_json(args.json, report)
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
