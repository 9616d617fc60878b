"""``python scripts/infer.py ARGS`` is ``python -m cli.infer ARGS`` (installed as ``dytok-infer``).

Run as a module so that this folder, which holds an ``export.py``, never shadows the ``export`` package.
"""
import os
import sys

if __name__ == "__main__":
    os.execv(sys.executable, [sys.executable, "-m", "cli.infer", *sys.argv[1:]])
