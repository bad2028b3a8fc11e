"""The modules of archival/ and governance/ import each other without a circle.

A circle between modules is what pushes imports into function bodies: the
module that comes second finds the first one half-initialised. The graph here
is the one Python walks at import time: every ``import``/``from ... import``
executed when a module loads (module level, class bodies, ``try``/``if``
blocks), but not the ones inside functions, which run later, nor those under
``if TYPE_CHECKING:``, which never run. Importing ``a.b.c`` also runs the
``__init__`` of ``a`` and ``a.b``, so those are edges too, except for the
packages the importing module lives in (already loading, and Python allows it).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("archival", "governance")


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    """Every module of the packages, migrations left out (Django loads them one by one, nothing imports them)."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            modules[_module_name(path, root)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _load_time_imports(body: list[ast.stmt]):
    """The import statements that run when a module (or a class body) is executed."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.ClassDef):
            yield from _load_time_imports(node.body)
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _load_time_imports(node.body)
            yield from _load_time_imports(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                yield from _load_time_imports(block)
        elif isinstance(node, ast.With):
            yield from _load_time_imports(node.body)


def _imported_names(module: str, path: Path, node: ast.Import | ast.ImportFrom, modules) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{node.module}" if node.module else package
    else:
        base = node.module or ""
    # ``from a.b import c`` loads a.b, and a.b.c as well when c is a module.
    return [base, *(f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in modules)]


def import_graph(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """Module -> the modules of the packages it makes Python load while it loads itself."""
    modules = project_modules(root, packages)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        own_packages = {module.rsplit(".", n)[0] for n in range(1, module.count(".") + 1)} | {module}
        for node in _load_time_imports(tree.body):
            for target in _imported_names(module, path, node, modules):
                parts = target.split(".")
                for depth in range(1, len(parts) + 1):
                    name = ".".join(parts[:depth])
                    if name in modules and name not in own_packages:
                        graph[module].add(name)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0

    def visit(root: str) -> None:
        nonlocal counter
        # Iterative depth-first walk: the graph is deep enough to matter for recursion limits.
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return components


def test_the_graph_has_the_imports_that_run_at_load_time_and_only_those(tmp_path):
    files = {
        "pkg/__init__.py": "from pkg import base\n",
        "pkg/base.py": "",
        "pkg/sub/__init__.py": "",
        "pkg/sub/deep.py": "from .. import base\n",
        "pkg/loaded.py": (
            "from typing import TYPE_CHECKING\n"
            "try:\n    import pkg.sub.deep\nexcept ImportError:\n    pass\n"
            "class K:\n    from pkg import base\n"
            "if TYPE_CHECKING:\n    from pkg import late\n"
            "def f():\n    from pkg import later\n"
        ),
        "pkg/late.py": "",
        "pkg/later.py": "",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    graph = import_graph(tmp_path, ("pkg",))
    # The try block and the class body run at load time; importing pkg.sub.deep
    # runs pkg/sub/__init__ too. Function bodies and TYPE_CHECKING do not count.
    assert graph["pkg.loaded"] == {"pkg.sub", "pkg.sub.deep", "pkg.base"}
    # A relative import resolves; the importer's own packages are no edge.
    assert graph["pkg.sub.deep"] == {"pkg.base"}
    assert graph["pkg"] == {"pkg.base"}


def test_the_project_graph_is_read():
    graph = import_graph()
    assert "archival.backends" in graph["governance.rowsql"]
    assert "governance.audit_chain" in graph["governance.models.audit"]


def test_find_cycles_names_the_modules_of_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert find_cycles(graph) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_archival_and_governance_have_no_import_circle():
    cycles = find_cycles(import_graph())
    assert cycles == [], "import circles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)
