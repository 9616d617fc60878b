"""``python scripts/loadtest.py ARGS`` is ``python -m cli.loadtest ARGS`` (installed as ``dytok-loadtest``).

Run as a module so that this folder, which holds an ``export.py``, never shadows the ``export`` package.
"""
import os
import sys

if __name__ == "__main__":
    os.execv(sys.executable, [sys.executable, "-m", "cli.loadtest", *sys.argv[1:]])
