"""The shape of the code, checked: layers import downward only, no import circles, small modules,
no reaching into another module's private names (docs/ARCHITECTURE.md draws the same map).

Imports inside function bodies count: a deferred import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "birdbridge"
MAX_LINES = 450

# Lower numbers sit lower. The root modules (errors, io, config, taxonomy, quiet, console,
# devices, distributed, embeddings, ...) are layer 0; a package not listed here is a bug in this map.
LAYERS = {"data": 1, "encoders": 1, "distill": 2, "retrieval": 2, "evaluate": 3, "serve": 3, "demo": 3, "cli": 4}
# Within one layer, only these package -> package imports are allowed (encoders pad audio by data's one rule).
SAME_LAYER_ALLOWED = {("encoders", "data")}


def _modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, list[str], int]]:
    """``(module, imported names, line)`` for every birdbridge import in the file, at any depth."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] == "birdbridge":
                found.append((mod, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names if a.name.split(".")[0] == "birdbridge"]
    return found


def _targets(mod: str, names: list[str]) -> list[str]:
    """The birdbridge modules an import statement loads (``from pkg import submodule`` included)."""
    out = [mod] if mod in MODULES else []
    out += [f"{mod}.{n}" for n in names if f"{mod}.{n}" in MODULES]
    return out or [mod]


GRAPH = {name: sorted({t for mod, names, _ in _imports(name, path) for t in _targets(mod, names)} - {name})
         for name, path in MODULES.items()}


def _group(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and f"birdbridge.{parts[1]}" in MODULES
                                           and MODULES[f"birdbridge.{parts[1]}"].name == "__init__.py") else "root"


def _layer(module: str) -> int:
    group = _group(module)
    return 0 if group == "root" else LAYERS[group]


def test_every_package_has_a_layer():
    packages = {_group(m) for m in MODULES} - {"root"}
    assert packages <= set(LAYERS), f"packages missing from LAYERS: {sorted(packages - set(LAYERS))}"


def test_layers_import_downward_only():
    bad = []
    for name, deps in GRAPH.items():
        for dep in deps:
            if dep == "birdbridge":  # the package's __init__: its version string only
                continue
            a, b = _group(name), _group(dep)
            if a == b:
                continue
            if _layer(dep) > _layer(name) or (_layer(dep) == _layer(name) and (a, b) not in SAME_LAYER_ALLOWED
                                              and a != "root"):
                bad.append(f"{name} -> {dep}")
    assert not bad, "imports from a lower layer to a higher one (or sideways):\n" + "\n".join(sorted(bad))


def test_no_import_circles():
    # Tarjan's strongly connected components over the whole module graph
    index, low, on_stack, stack, circles = {}, {}, set(), [], []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH.get(v, []):
            if w not in GRAPH:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                circles.append(sorted(comp))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    # a package's __init__ re-exporting its submodules is not a circle of concerns
    circles = [c for c in circles if not all(m == "birdbridge" or MODULES[m].name == "__init__.py" or
                                             any(MODULES[o].name == "__init__.py" and m.startswith(o + ".") for o in c)
                                             for m in c)]
    assert not circles, "import circles:\n" + "\n".join(" <-> ".join(c) for c in circles)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_stay_small(name):
    n = len(MODULES[name].read_text().splitlines())
    assert n <= MAX_LINES, f"{MODULES[name]} has {n} lines (> {MAX_LINES}): split it by concern"


def test_no_module_imports_another_modules_private_names():
    bad = []
    for name, path in MODULES.items():
        for mod, names, line in _imports(name, path):
            private = [n for n in names if n.startswith("_") and not n.startswith("__") and f"{mod}.{n}" not in MODULES]
            if private and mod != name:
                bad.append(f"{path.relative_to(SRC.parent)}:{line} imports {', '.join(private)} from {mod}")
    assert not bad, "\n".join(bad)
