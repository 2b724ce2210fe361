"""The package's shape, read from its source with ``ast`` (nothing is imported):

* no import cycle among ``enum_pipeline.*`` modules, counting every import at any level —
  module top, inside functions (deferred imports), under ``TYPE_CHECKING``;
* the store has one door: code outside ``enum_pipeline/store/`` imports ``enum_pipeline.store``,
  never one of its submodules.

An import ``from X import a`` is an edge to ``X.a`` when that is a module of the package, else
to ``X``; ``import X.Y`` is an edge to ``X.Y``. Importing a submodule also runs its package's
``__init__``, but that implicit edge is not counted (as import-linter and grimp do not): a
package's ``__init__`` re-exporting its own submodules would otherwise always be a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "enum_pipeline"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

# No exception: every module outside the store goes through its front door.
STORE_DOOR_EXCEPTIONS: tuple[str, ...] = ()


# No known cycle is left.
KNOWN_CYCLES: list[set[str]] = []


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The ``enum_pipeline`` modules ``name`` imports, anywhere in its source."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, ``level - 1`` packages up
                package = name.split(".") if is_package else name.split(".")[:-1]
                anchor = package[: len(package) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            # the longest module of the package the target names (``import a.b.c`` of a name)
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle for each strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_one_cycle(graph, set(c)) for c in components]


def _one_cycle(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest path from the component's first module back to itself, for the message."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & component):
                if w == start:
                    return paths[v] + [start]
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    nxt.append(w)
        frontier = nxt
    return sorted(component)  # not reached: a component of several modules has a cycle


def test_the_graph_sees_every_kind_of_import(tmp_path):
    source = tmp_path / "probe.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "import enum_pipeline.steps\n"
        "from enum_pipeline.store import InventoryStore, schema\n"
        "from . import output\n"
        "if TYPE_CHECKING:\n"
        "    from enum_pipeline.defs.jobs import enumerate_projects\n"
        "def later():\n"
        "    def inner():\n"
        "        from enum_pipeline.defs import constants\n"
    )
    modules = _modules()
    assert _imports("enum_pipeline.probe", source, modules) == {
        "enum_pipeline.steps",
        "enum_pipeline.store",
        "enum_pipeline.store.schema",
        "enum_pipeline.output",
        "enum_pipeline.defs.jobs",
        "enum_pipeline.defs.constants",
    }
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


def test_no_import_cycle_in_the_package():
    cycles = [c for c in _cycles(import_graph()) if set(c) not in KNOWN_CYCLES]
    assert not cycles, "import cycles: " + "; ".join(" → ".join(c) for c in cycles)


def test_only_the_store_imports_store_submodules():
    modules = _modules()
    offenders = []
    for name, path in modules.items():
        relative = path.relative_to(ROOT.parent).as_posix()
        if relative.startswith("enum_pipeline/store/") or relative.startswith(
            STORE_DOOR_EXCEPTIONS
        ):
            continue
        for target in sorted(_imports(name, path, modules)):
            if target.startswith("enum_pipeline.store."):
                offenders.append(f"{relative} imports {target}")
    assert not offenders, "import enum_pipeline.store instead:\n" + "\n".join(offenders)


def test_a_code_host_is_one_source_module_its_fake_and_the_docs():
    """Adding a host needs its module (source and config model), its fake and the docs: the
    newest host, Bitbucket, is named by no other file of the package or its tests (but its own
    quirks' tests)."""
    tests = ROOT.parent / "enum_pipeline_tests"
    own = {
        ROOT / "sources" / "bitbucket.py",
        tests / "fake_bitbucket.py",
        tests / "test_bitbucket_source.py",
        Path(__file__).resolve(),
    }
    naming = [
        str(path)
        for folder in (ROOT, tests)
        for path in folder.rglob("*.py")
        if path.resolve() not in own and "bitbucket" in path.read_text(encoding="utf-8").lower()
    ]
    assert not naming, f"files that must not need to know a host: {naming}"
