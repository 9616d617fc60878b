"""``python scripts/plan_memory.py ARGS`` is ``python -m cli.plan_memory ARGS`` (installed as ``dytok-plan-memory``).

Run as a module so that this folder, which holds an ``export.py``, never shadows the ``export`` package.
"""
import os
import sys

if __name__ == "__main__":
    os.execv(sys.executable, [sys.executable, "-m", "cli.plan_memory", *sys.argv[1:]])
