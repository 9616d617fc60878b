"""``python scripts/gpu_bench.py ARGS`` is ``python -m cli.gpu_bench ARGS`` (installed as ``dytok-gpu-bench``).

Run as a module so that this folder, which holds an ``export.py``, never shadows the ``export`` package.
"""
import os
import sys

if __name__ == "__main__":
    os.execv(sys.executable, [sys.executable, "-m", "cli.gpu_bench", *sys.argv[1:]])
