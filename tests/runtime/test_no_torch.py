"""runtime/ must import and run with the core dependencies only: never torch or transformers."""
import ast
import pathlib
import subprocess
import sys

RUNTIME = pathlib.Path(__file__).resolve().parents[2] / "runtime"
FORBIDDEN = {"torch", "transformers", "torchvision", "export"}


def test_no_forbidden_import_statements():
    offenders = []
    for path in RUNTIME.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert not offenders, offenders


def test_importing_every_runtime_module_loads_no_torch():
    modules = sorted("runtime." + ".".join(p.relative_to(RUNTIME).with_suffix("").parts)
                     for p in RUNTIME.rglob("*.py") if p.name != "__init__.py")
    code = ("import sys, importlib\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers'))\n"
            "print(len(sys.modules)); assert not bad, bad\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=RUNTIME.parent)
    assert out.returncode == 0, out.stderr
