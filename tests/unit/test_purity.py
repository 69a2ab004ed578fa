"""Imports point one way. Read with ``ast`` (every import statement: module level, inside functions, under
``TYPE_CHECKING``, and ``importlib.import_module("…")`` with a literal name), not by importing, so an import that
only runs on one code path is seen too.

- The pure packages (envelope, validation, trust, directory, routing, and ``hub.policy``) import no store, no
  transport, no database or AMQP client, no command line and no wiring (``hub.commands``, ``hub.pipeline``):
  commands that touch PostgreSQL or RabbitMQ live in ``hub.commands`` beside ``hub.cli``.
- The import graph of the ``hub`` package has no cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub.settings import PROJECT_ROOT

HUB = PROJECT_ROOT / "hub"
PURE = ("hub.envelope", "hub.validation", "hub.trust", "hub.directory", "hub.routing", "hub.policy")
FORBIDDEN = (
    "hub.store",
    "hub.transport",
    "hub.cli",
    "hub.commands",
    "hub.pipeline",
    "asyncpg",
    "aio_pika",
    "aiormq",
    "pamqp",
)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PROJECT_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {_module_name(p): p for p in sorted(HUB.rglob("*.py"))}


def imports_of(name: str, path: Path) -> Iterator[tuple[str, int]]:
    """(imported module, line) for every import in the file. ``from a import b`` yields ``a.b`` when that is a
    module of the hub, else ``a``; relative imports are resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            for alias in node.names:
                full = f"{base}.{alias.name}"
                yield (full if full in MODULES else base), node.lineno
        elif (
            isinstance(node, ast.Call)
            and (
                (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                or (isinstance(node.func, ast.Name) and node.func.id in ("import_module", "__import__"))
            )
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.args[0].value, node.lineno


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_the_reader_sees_function_level_and_relative_imports(tmp_path: Path) -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import asyncpg\n"
        "def f():\n    from hub.store.db import connection\n    from ..transport import names\n"
        "    import importlib\n    importlib.import_module('hub.cli')\n"
    )
    probe = tmp_path / "probe.py"
    probe.write_text(source, encoding="utf-8")
    found = {m for m, _ in imports_of("hub.routing._probe", probe)}  # read as if it were hub/routing/_probe.py
    assert {"asyncpg", "hub.store.db", "hub.transport.names", "hub.cli"} <= found


@pytest.mark.parametrize("package", PURE)
def test_pure_packages_import_no_store_transport_or_command_line(package: str) -> None:
    bad = sorted(
        {
            f"{MODULES[name].relative_to(PROJECT_ROOT)}:{line}: {name} imports {target}"
            for name in MODULES
            if _within(name, (package,))
            for target, line in imports_of(name, MODULES[name])
            if _within(target, FORBIDDEN)
        }
    )
    assert any(_within(name, (package,)) for name in MODULES), package
    assert bad == [], "\n".join(bad)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, edges = work[-1]
            for w in edges:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    component = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        component.append(w)
                        if w == v:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def import_graph() -> dict[str, set[str]]:
    return {
        name: {t for t, _ in imports_of(name, path) if t in MODULES and t != name} for name, path in MODULES.items()
    }


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_hub_import_graph_has_no_cycle() -> None:
    graph = import_graph()
    assert len(graph) > 50 and "hub.directory.model" in graph
    assert _cycles(graph) == []


# ----------------------------------------------------------------------------------------------- adapters

ADAPTERS = PROJECT_ROOT / "adapters"
#: Where the hub itself may reach the adapters: the command line that scaffolds and runs them, and the demo.
MAY_IMPORT_ADAPTERS = (
    "hub.commands",
    "hub.demo",
    "hub.demo_scenario",
    "hub.cli",
    # the processes' parts of the demo (they join the running hub through the SDK's TestHub)
    *(f"hub.processes.{name}_demo" for name in ("documents", "approvals", "emergencies", "meetings")),
)


def _adapter_modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ADAPTERS.rglob("*.py")) if "templates" not in p.parts}


@pytest.mark.parametrize("name", [n for n in _adapter_modules() if not _within(n, ("adapters.sdk",))])
def test_an_adapter_imports_only_the_sdk_of_the_project(name: str) -> None:
    """Adapter code imports ``adapters.sdk`` (and its own package), never the hub's internals: what it needs of the
    hub is the SDK's public surface."""
    own = ".".join(name.split(".")[:2])
    # An adapter's demo part plays the operator's side too (it joins the demo's hub, and may run an engine pass
    # there), so it may reach the hub; the adapter itself may not.
    demo = name.endswith(".demo")
    bad = [
        f"{imported} (line {line})"
        for imported, line in imports_of(name, _adapter_modules()[name])
        if (_within(imported, ("hub",)) and not demo)
        or (_within(imported, ("adapters",)) and not _within(imported, ("adapters.sdk", own)))
    ]
    assert not bad, f"{name} imports {', '.join(bad)}"


def test_the_hub_reaches_adapters_only_from_the_command_line_and_the_demo() -> None:
    bad = [
        f"{name} imports {imported} (line {line})"
        for name, path in MODULES.items()
        if not _within(name, MAY_IMPORT_ADAPTERS)
        for imported, line in imports_of(name, path)
        if _within(imported, ("adapters",))
    ]
    assert not bad, "\n".join(bad)


def test_the_sdk_imports_no_adapter() -> None:
    bad = [
        f"{name} imports {imported}"
        for name, path in _adapter_modules().items()
        if _within(name, ("adapters.sdk",))
        for imported, _ in imports_of(name, path)
        if _within(imported, ("adapters",)) and not _within(imported, ("adapters.sdk",))
    ]
    assert not bad, "\n".join(bad)
