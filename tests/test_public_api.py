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
