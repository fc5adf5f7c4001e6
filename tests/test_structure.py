"""The project's structure as the developers' guide states it: no import cycle among the
project's modules, no private name (leading underscore) taken from another module, ref_model
free of torch and amaranth, and no module over ~500 lines unless its docstring says why.

Read from the sources with ast (nothing is imported), so a violation names the file and line.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("tse",)
"""One namespace: the CLI and its packages (ref_model, quant, rtl, sim, bench) under tse."""
LONG = 500


def modules() -> dict[str, Path]:
    """Dotted name -> path of every module of the project's packages."""
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def imports(name: str, path: Path, known: dict) -> list[tuple[str, list[str], int]]:
    """(module imported, names taken from it, line) for each project import in a module,
    relative imports resolved; `from pkg import mod` counts as importing pkg.mod."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names if a.name in known]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [a.name for a in node.names]
            for n in names:                               # `from . import numerics`
                if f"{target}.{n}" in known:
                    found.append((f"{target}.{n}", [], node.lineno))
            taken = [n for n in names if f"{target}.{n}" not in known]
            if target in known and taken:
                found.append((target, taken, node.lineno))
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: {t for t, _, _ in imports(name, path, known)
                   if t != name and not name.startswith(t + ".")}   # a package's own __init__
            for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
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

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_planted_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_among_the_project_modules():
    assert cycles(graph()) == []


def test_no_private_name_is_imported_from_another_module():
    known = modules()
    bad = [f"{path.relative_to(ROOT)}:{line}: {n} from {target}"
           for name, path in known.items()
           for target, names, line in imports(name, path, known)
           for n in names if n.startswith("_") and not n.startswith("__")]
    assert bad == []


@pytest.mark.parametrize("banned, package", [("torch", "tse/ref_model"),
                                             ("amaranth", "tse/ref_model")])
def test_ref_model_needs_neither_torch_nor_amaranth(banned, package):
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            mods = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            bad += [f"{path.relative_to(ROOT)}:{node.lineno}" for m in mods
                    if m.split(".")[0] == banned]
    assert bad == []


def test_long_modules_say_why():
    """A module over ~500 lines states why in its docstring (a line starting 'Long:')."""
    bad = []
    for name, path in modules().items():
        text = path.read_text()
        if text.count("\n") > LONG:
            doc = ast.get_docstring(ast.parse(text)) or ""
            if not any(line.startswith("Long:") for line in doc.splitlines()):
                bad.append(f"{path.relative_to(ROOT)}: {text.count(chr(10))} lines")
    assert bad == []
