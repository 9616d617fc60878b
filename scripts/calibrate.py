"""``python scripts/calibrate.py ARGS`` is ``python -m cli.calibrate ARGS`` (installed as ``dytok-calibrate``).

Run as a module so that this folder, which holds an ``export.py``, never shadows the ``export`` package.
"""
import os
import sys

if __name__ == "__main__":
    os.execv(sys.executable, [sys.executable, "-m", "cli.calibrate", *sys.argv[1:]])
