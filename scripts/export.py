"""``python scripts/export.py ARGS`` is ``python -m cli.export ARGS`` (installed as ``dytok-export``).

Run as a module so that this folder, which holds an ``export.py``, never shadows the ``export`` package.
"""
import os
import sys

if __name__ == "__main__":
    os.execv(sys.executable, [sys.executable, "-m", "cli.export", *sys.argv[1:]])
