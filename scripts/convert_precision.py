"""``python scripts/convert_precision.py ARGS`` is ``python -m cli.convert_precision ARGS`` (installed as ``dytok-convert-precision``).

Run as a module so that this folder, which holds an ``export.py``, never shadows the ``export`` package.
"""
import os
import sys

if __name__ == "__main__":
    os.execv(sys.executable, [sys.executable, "-m", "cli.convert_precision", *sys.argv[1:]])
