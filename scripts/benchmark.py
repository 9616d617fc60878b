"""``python scripts/benchmark.py ARGS`` is ``python -m cli.benchmark ARGS`` (installed as ``dytok-benchmark``).

Run as a module so that this folder, which holds an ``export.py``, never shadows the ``export`` package.
"""
import os
import sys

if __name__ == "__main__":
    os.execv(sys.executable, [sys.executable, "-m", "cli.benchmark", *sys.argv[1:]])
