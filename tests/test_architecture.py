"""The package's shape, checked statically: no import cycles, no module reaching into
another module's private names, no oversized modules, and a library that does not
import the harness."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "grades"
MAX_LINES = 520  # "about 500": a module past this takes a second job; split it
#: the part users import as a library: it must not depend on harness code
LIBRARY = {"grades", "grades.config", "grades.components", "grades.coverage", "grades.signals", "grades.freezer",
           "grades.controller", "grades.callback", "grades.io", "grades.savings", "grades.distributed", "grades.registry",
           "grades.shards"}
LIBRARY_PACKAGES = ("grades.methods", "grades.flops")  # with every module inside


def is_library(mod: str) -> bool:
    return mod in LIBRARY or any(mod == p or mod.startswith(p + ".") for p in LIBRARY_PACKAGES)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _target(mod: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(mods: dict[str, Path]):
    """(module, imported module, names imported from it, line) for every import, at any depth."""
    out = []
    for mod, path in mods.items():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                target = _target(mod, path, node)
                if not target.startswith("grades"):
                    continue
                for a in node.names:
                    sub = f"{target}.{a.name}"
                    if sub in mods:  # `from . import workflow`: the submodule itself
                        out.append((mod, sub, None, node.lineno))
                    else:
                        out.append((mod, target, a.name, node.lineno))
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("grades"):
                        out.append((mod, a.name, None, node.lineno))
    return out


def attribute_uses(mods: dict[str, Path]):
    """(module, imported module, attribute, line) for `alias._private` where alias names a grades module."""
    out = []
    for mod, path in mods.items():
        tree = ast.parse(path.read_text())
        aliases: dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                target = _target(mod, path, node)
                for a in node.names:
                    if f"{target}.{a.name}" in mods:
                        aliases[a.asname or a.name] = f"{target}.{a.name}"
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name in mods and a.asname:
                        aliases[a.asname] = a.name
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
                out.append((mod, aliases[node.value.id], node.attr, node.lineno))
    return out


def _private(name: str | None) -> bool:
    return bool(name) and name.startswith("_") and not name.startswith("__")


def test_no_import_cycles():
    mods = modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for src, dst, _, _ in imports(mods):
        if dst in mods and dst != src:
            graph[src].add(dst)
    # Tarjan's strongly connected components
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
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
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles (imports inside functions count too): {cycles}"


def test_no_private_names_of_other_modules():
    mods = modules()
    bad = []
    for src, dst, name, line in imports(mods) + attribute_uses(mods):
        if dst != src and _private(name):
            bad.append(f"{mods[src].relative_to(PKG.parent)}:{line}: {src} uses {dst}.{name}")
    assert not bad, "private names used across modules (make them public or move the code):\n" + "\n".join(bad)


def test_library_does_not_import_the_harness():
    mods = modules()
    bad = [f"{src} imports {dst}" for src, dst, _, _ in imports(mods)
           if is_library(src) and dst in mods and not is_library(dst)]
    assert not bad, "the library (GradESCallback, Controller, ...) must stay free of harness code:\n" + "\n".join(bad)


@pytest.mark.parametrize("mod", sorted(modules()))
def test_module_size(mod):
    n = len(modules()[mod].read_text().splitlines())
    assert n <= MAX_LINES, f"{mod} has {n} lines (at most {MAX_LINES}): it has outgrown one job; split it"


def test_architecture_page_names_every_module():
    """docs/architecture.md names every file of the package (a file name inside its package's
    section is enough), so that a reader can find the one job of each."""
    page = (PKG.parent / "docs" / "architecture.md").read_text()
    missing = []
    for mod, path in modules().items():
        rel = path.relative_to(PKG.parent).as_posix()
        if path.name == "__main__.py" or (path.name == "__init__.py" and rel.count("/") > 1):
            continue  # a package's own entry point and its re-exports
        top_level = rel.count("/") == 1
        if rel not in page and (top_level or f"`{path.name}`" not in page and path.name not in page):
            missing.append(rel)
    assert not missing, f"docs/architecture.md does not name: {missing}"
