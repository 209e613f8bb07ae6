"""The house plan holds: the library's rooms import only downward, and no module cycle.

Read from the source (no import runs): every ``import``/``from ... import`` of the package,
at module level or inside a function, counts; imports under ``if TYPE_CHECKING:`` do not
(they never run). A room is the first name below ``langchain_ragtune``.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import langchain_ragtune

PACKAGE = "langchain_ragtune"
ROOT = Path(langchain_ragtune.__file__).resolve().parent

#: Lowest first. A room may import rooms of its own level or below, never above. The
#: package's own ``__init__`` (the public door) sits above everything.
LEVELS: list[set[str]] = [
    {"_lazy", "errors", "config", "hardware"},
    {"models", "embeddings", "datasets"},
    {"store"},
    {"distill"},
    {"tuning"},
    {"serving"},
    {"router"},
    {"jobs"},
    {"eval"},
    {"bench", "cli", "demo", "testing"},
    {"__init__"},
]
LEVEL = {room: i for i, rooms in enumerate(LEVELS) for room in rooms}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return ((isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
            or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _imports(path: Path) -> list[tuple[str, int]]:
    """(imported module or module.name, line) of every run-time import of the package."""
    module = _module_name(path)
    is_package = path.name == "__init__.py"
    found: list[tuple[str, int]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    visit_one(other)
                continue
            visit_one(child)

    def visit_one(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            found.extend((a.name, node.lineno) for a in node.names
                         if a.name.split(".")[0] == PACKAGE)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == PACKAGE:
                found.extend((f"{target}.{a.name}", node.lineno) for a in node.names)
        visit(node)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


def _room(dotted: str) -> str:
    parts = dotted.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def _graph() -> tuple[set[str], list[tuple[str, str, int]]]:
    files = sorted(ROOT.rglob("*.py"))
    modules = {_module_name(p) for p in files}
    edges = []
    for path in files:
        source = _module_name(path)
        for target, line in _imports(path):
            while target not in modules:  # "pkg.mod.name" -> "pkg.mod"
                target = target.rpartition(".")[0]
            edges.append((source, target, line))
    return modules, edges


def test_every_room_has_a_level():
    modules, _ = _graph()
    rooms = {_room(m) for m in modules}
    assert rooms - set(LEVEL) == set(), "a new room needs its place in LEVELS"


def test_rooms_import_only_downward():
    _, edges = _graph()
    upward = [f"{src} (line {line}) imports {dst}" for src, dst, line in edges
              if LEVEL[_room(dst)] > LEVEL[_room(src)]]
    assert upward == [], "imports that run back up:\n" + "\n".join(upward)


def test_no_import_cycle_between_modules():
    modules, edges = _graph()
    graph: dict[str, set[str]] = defaultdict(set)
    for src, dst, _ in edges:
        # A package's __init__ importing its own modules is how packages work, not a cycle;
        # a module importing its package's __init__ for a name is.
        if dst != src and not dst.startswith(src + "."):
            graph[src].add(dst)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def strongconnect(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                strongconnect(w)
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
                cycles.append(sorted(component))

    for v in sorted(modules):
        if v not in index:
            strongconnect(v)
    assert cycles == [], f"import cycles: {cycles}"


def test_the_check_sees_function_level_imports_and_skips_type_checking(tmp_path):
    # The check must not pass by missing what it exists for.
    source = tmp_path / "langchain_ragtune" / "store" / "x.py"
    source.parent.mkdir(parents=True)
    source.write_text("from typing import TYPE_CHECKING\n"
                      "if TYPE_CHECKING:\n    from langchain_ragtune.jobs import refresh\n"
                      "def f():\n    from langchain_ragtune.eval import metrics\n"
                      "    from .sql import X\n")
    global ROOT
    saved, ROOT = ROOT, tmp_path / "langchain_ragtune"
    try:
        assert _imports(source) == [("langchain_ragtune.eval.metrics", 5),
                                    ("langchain_ragtune.store.sql.X", 6)]
    finally:
        ROOT = saved
