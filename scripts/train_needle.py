"""``python scripts/train_needle.py ARGS`` is ``python -m cli.train_needle ARGS`` (installed as ``dytok-train-needle``).

Run as a module so that this folder, which holds an ``export.py``, never shadows the ``export`` package.
"""
import os
import sys

if __name__ == "__main__":
    os.execv(sys.executable, [sys.executable, "-m", "cli.train_needle", *sys.argv[1:]])
