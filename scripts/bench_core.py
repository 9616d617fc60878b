"""``python scripts/bench_core.py ARGS`` is ``python -m cli.bench_core ARGS`` (installed as ``dytok-bench-core``).

Run as a module so that this folder, which holds an ``export.py``, never shadows the ``export`` package.
"""
import os
import sys

if __name__ == "__main__":
    os.execv(sys.executable, [sys.executable, "-m", "cli.bench_core", *sys.argv[1:]])
