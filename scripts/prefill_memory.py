"""``python scripts/prefill_memory.py ARGS`` is ``python -m cli.prefill_memory ARGS`` (installed as ``dytok-prefill-memory``).

Run as a module so that this folder, which holds an ``export.py``, never shadows the ``export`` package.
"""
import os
import sys

if __name__ == "__main__":
    os.execv(sys.executable, [sys.executable, "-m", "cli.prefill_memory", *sys.argv[1:]])
