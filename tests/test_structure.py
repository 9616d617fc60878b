"""The project's import structure, read from the source (imports inside functions count too):
no import circles between modules, and the layers import downwards only."""
import ast
import os
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("runtime", "synthetic", "export", "evaluation", "calibration", "training", "serving", "bench", "cli")
# package -> packages it must never import (directly or through a function-level import)
FORBIDDEN = {
    "runtime": {"export", "bench", "evaluation", "calibration", "serving", "training", "synthetic", "cli"},
    "synthetic": {"export", "bench", "evaluation", "calibration", "serving", "training", "cli"},
    "export": {"evaluation", "calibration", "serving", "bench", "training", "cli"},
    "calibration": {"evaluation", "serving", "bench", "training", "cli"},
    "evaluation": {"serving", "bench", "training", "cli"},
    "serving": {"bench", "evaluation", "training", "cli"},
    "training": {"bench", "serving", "cli"},
    "bench": {"serving", "training", "cli"},
}


def modules() -> dict[str, str]:
    """Dotted module name -> file, for every project package."""
    out = {}
    for pkg in PACKAGES:
        base = os.path.join(ROOT, pkg)
        for dirpath, _, files in os.walk(base):
            for f in files:
                if f.endswith(".py"):
                    rel = os.path.relpath(os.path.join(dirpath, f), ROOT)[:-3].replace(os.sep, ".")
                    out[rel.removesuffix(".__init__")] = os.path.join(dirpath, f)
    return out


def imports_of(name: str, path: str, known: set[str]) -> set[str]:
    """Project modules ``name`` imports anywhere in its file (resolved to the longest known module)."""
    tree = ast.parse(open(path).read(), path)
    is_pkg = path.endswith("__init__.py")
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_pkg else 0)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            parts = t.split(".")
            for k in range(len(parts), 0, -1):
                cand = ".".join(parts[:k])
                if cand in known:
                    if cand != name:
                        found.add(cand)
                    break
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {m: imports_of(m, p, known) for m, p in mods.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def _package_init_edges(g):
    """A package's __init__ importing its own submodules is not a circle with them: Python runs the
    submodule after the package object exists. Drop submodule -> own-package-__init__ edges that
    only name the package itself."""
    return {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in g.items()}


def test_no_import_circles():
    found = cycles(_package_init_edges(graph()))
    assert not found, "import circles: " + "; ".join(" <-> ".join(c) for c in found)


def test_layers_import_downwards_only():
    bad = defaultdict(list)
    for mod, deps in graph().items():
        top = mod.split(".")[0]
        for d in deps:
            if d.split(".")[0] in FORBIDDEN.get(top, ()):
                bad[mod].append(d)
    assert not bad, "wrong-way imports: " + "; ".join(f"{m} -> {', '.join(sorted(d))}" for m, d in sorted(bad.items()))


def test_tensors_reach_numpy_through_cpu():
    """Code that runs on a CUDA device (the export of random presets drawn there, the PyTorch
    engines, the benchmarks) copies a tensor to the host with ``.cpu()`` before ``.numpy()``: on the
    CPU both forms work, so only this check catches the other before a lent GPU does. Training
    and ONNX validation run on the CPU only."""
    bad = []
    for pkg in ("export", "bench", "serving", "evaluation", "cli"):
        for dirpath, _, files in os.walk(os.path.join(ROOT, pkg)):
            for f in files:
                if not f.endswith(".py") or f == "validate.py":
                    continue
                path = os.path.join(dirpath, f)
                for node in ast.walk(ast.parse(open(path).read())):
                    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "numpy"
                            and "cpu()" not in ast.unparse(node.func.value)):
                        bad.append(f"{os.path.relpath(path, ROOT)}:{node.lineno}")
    assert not bad, f".numpy() without .cpu() first: {bad}"
