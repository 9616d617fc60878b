"""``python scripts/demo.py ARGS`` is ``python -m cli.demo ARGS`` (installed as ``dytok-demo``).

Run as a module so that this folder, which holds an ``export.py``, never shadows the ``export`` package.
"""
import os
import sys

if __name__ == "__main__":
    os.execv(sys.executable, [sys.executable, "-m", "cli.demo", *sys.argv[1:]])
