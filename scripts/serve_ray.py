"""``python scripts/serve_ray.py ARGS`` is ``python -m cli.serve_ray ARGS`` (installed as ``dytok-serve-ray``).

Run as a module so that this folder, which holds an ``export.py``, never shadows the ``export`` package.
"""
import os
import sys

if __name__ == "__main__":
    os.execv(sys.executable, [sys.executable, "-m", "cli.serve_ray", *sys.argv[1:]])
