"""``python scripts/bench_torch_prior.py ARGS`` is ``python -m cli.bench_torch_prior ARGS`` (installed as ``dytok-bench-torch-prior``).

Run as a module so that this folder, which holds an ``export.py``, never shadows the ``export`` package.
"""
import os
import sys

if __name__ == "__main__":
    os.execv(sys.executable, [sys.executable, "-m", "cli.bench_torch_prior", *sys.argv[1:]])
