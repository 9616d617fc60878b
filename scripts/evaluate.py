"""``python scripts/evaluate.py ARGS`` is ``python -m cli.evaluate ARGS`` (installed as ``dytok-evaluate``).

Run as a module so that this folder, which holds an ``export.py``, never shadows the ``export`` package.
"""
import os
import sys

if __name__ == "__main__":
    os.execv(sys.executable, [sys.executable, "-m", "cli.evaluate", *sys.argv[1:]])
