"""``python scripts/build_engines.py ARGS`` is ``python -m cli.build_engines ARGS`` (installed as ``dytok-build-engines``).

Run as a module so that this folder, which holds an ``export.py``, never shadows the ``export`` package.
"""
import os
import sys

if __name__ == "__main__":
    os.execv(sys.executable, [sys.executable, "-m", "cli.build_engines", *sys.argv[1:]])
