"""``python scripts/bench_split_llm.py ARGS`` is ``python -m cli.bench_split_llm ARGS`` (installed as ``dytok-bench-split-llm``).

Run as a module so that this folder, which holds an ``export.py``, never shadows the ``export`` package.
"""
import os
import sys

if __name__ == "__main__":
    os.execv(sys.executable, [sys.executable, "-m", "cli.bench_split_llm", *sys.argv[1:]])
