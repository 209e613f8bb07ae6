"""The public door: ``langchain_ragtune.__all__`` is pinned, and every name resolves."""

from __future__ import annotations

import langchain_ragtune

EXPECTED = [
    "AsyncMemoryStore",
    "Memory",
    "MemoryRetriever",
    "MemoryState",
    "MemoryStore",
    "ModelConfig",
    "RagtuneError",
    "RagtuneStore",
    "RouteDecision",
    "RouterConfig",
    "SearchResult",
    "ServeConfig",
    "StoreConfig",
    "Turn",
    "__version__",
    "create_memory_graph",
    "create_memory_node",
    "create_remember_node",
    "decide",
]


def test_all_is_pinned():
    assert sorted(langchain_ragtune.__all__) == sorted(EXPECTED)


def test_every_public_name_resolves():
    for name in langchain_ragtune.__all__:
        assert getattr(langchain_ragtune, name) is not None, name


def test_router_factories_are_the_router_modules_objects():
    from langchain_ragtune.router import nodes
    from langchain_ragtune.router.decision import RouteDecision, decide

    assert langchain_ragtune.create_memory_graph is nodes.create_memory_graph
    assert langchain_ragtune.create_memory_node is nodes.create_memory_node
    assert langchain_ragtune.create_remember_node is nodes.create_remember_node
    assert langchain_ragtune.decide is decide and langchain_ragtune.RouteDecision is RouteDecision


# Type checkers (mypy --strict, pyright) see only literal `__all__` forms and the imports under
# TYPE_CHECKING; a computed `__all__` made mypy --strict refuse `from langchain_ragtune import
# MemoryStore`, and a name resolved only by `__getattr__` is typed Any. Checked on the source,
# so it holds without either tool installed.
LAZY_PACKAGES = ["langchain_ragtune", "langchain_ragtune.serving", "langchain_ragtune.store",
                 "langchain_ragtune.jobs", "langchain_ragtune.router"]


def _static_view(module_name: str) -> tuple[list[str] | None, set[str]]:
    """(the literal ``__all__`` or None, the names bound at import or under TYPE_CHECKING)."""
    import ast
    import importlib

    tree = ast.parse(open(importlib.import_module(module_name).__file__).read())
    literal_all, bound = None, set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            if isinstance(node.value, (ast.List, ast.Tuple)):
                literal_all = [ast.literal_eval(e) for e in node.value.elts]
        body = node.body if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(
            node.test) else [node]
        for sub in body:
            if isinstance(sub, (ast.Import, ast.ImportFrom)):
                bound |= {a.asname or a.name.split(".")[0] for a in sub.names}
            elif isinstance(sub, (ast.FunctionDef, ast.ClassDef)):
                bound.add(sub.name)
            elif isinstance(sub, ast.Assign):
                bound |= {t.id for t in sub.targets if isinstance(t, ast.Name)}
    return literal_all, bound


def test_type_checkers_see_every_public_name():
    import importlib

    for name in LAZY_PACKAGES:
        literal_all, bound = _static_view(name)
        assert literal_all is not None, f"{name}.__all__ must be a literal list"
        assert literal_all == list(importlib.import_module(name).__all__)
        assert not set(literal_all) - bound, (name, set(literal_all) - bound)
        exports = getattr(importlib.import_module(name), "_EXPORTS", None)
        if exports is not None:  # the lazy table and the literal list name the same things
            assert set(exports) == set(literal_all) - {"__version__"}, name


def test_no_annotation_means_a_method_named_like_a_builtin():
    """In a class body a method named ``list`` shadows the builtin for type checkers: an
    annotation ``list[...]`` after it resolves to the method, and users saw
    ``MemoryStore.list_namespaces()`` typed as ``list?[...]`` (unknown) instead of a list."""
    import ast
    import builtins
    from pathlib import Path

    found = []
    for path in Path(langchain_ragtune.__file__).parent.rglob("*.py"):
        for cls in ast.walk(ast.parse(path.read_text())):
            if not isinstance(cls, ast.ClassDef):
                continue
            shadowed: set[str] = set()
            for item in cls.body:
                if not isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                notes = [item.returns] + [a.annotation for a in (
                    item.args.args + item.args.kwonlyargs + item.args.posonlyargs)]
                used = {n.id for note in notes if note is not None for n in ast.walk(note)
                        if isinstance(n, ast.Name)}
                found += [f"{path.name}:{cls.name}.{item.name} uses {name!r}"
                          for name in used & shadowed]
                if hasattr(builtins, item.name):
                    shadowed.add(item.name)
    assert not found, found
