"""The router between parametric memory (the namespace's LoRA adapter) and retrieval memory.

* :func:`decide` (:mod:`.decision`): the pure routing decision -> :class:`RouteDecision`
  (``parametric``, ``retrieval``, ``hybrid`` or ``none``) with reasons and scores.
* :mod:`.learned`: an optional learned policy (``ragtune router fit``).
* :class:`MemoryRouter` (:mod:`.memory`): state, search, decision, generation, fallbacks.
* :func:`create_memory_node`, :func:`create_remember_node`, :func:`create_memory_graph`
  (:mod:`.nodes`): LangGraph nodes and the ready memory chat graph.

Importing this package never imports torch, transformers or vLLM (nor LangGraph, until a
node factory is used).

Example:
    >>> from langchain_ragtune.router import decide, NamespaceState, Signals
    >>> decide("thanks, bye!", NamespaceState(namespace=("u",)), Signals()).route
    'none'
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from langchain_ragtune._lazy import lazy_exports
from langchain_ragtune.router.decision import (
    ROUTES,
    NamespaceState,
    Route,
    RouteDecision,
    Signals,
    decide,
)
from langchain_ragtune.router.query import QueryFeatures, analyze_query

__all__ = [
    "ROUTES",
    "MemoryRouter",
    "MemoryState",
    "NamespaceState",
    "QueryFeatures",
    "Route",
    "RouteDecision",
    "RouteResult",
    "Signals",
    "analyze_query",
    "create_memory_graph",
    "create_memory_node",
    "create_remember_node",
    "decide",
    "memory_graph_builder",
    "memory_system_message",
    "namespace_from_config",
]

_LAZY = {
    "MemoryRouter": "langchain_ragtune.router.memory",
    "RouteResult": "langchain_ragtune.router.memory",
    "namespace_from_config": "langchain_ragtune.router.memory",
    "MemoryState": "langchain_ragtune.router.nodes",
    "create_memory_graph": "langchain_ragtune.router.nodes",
    "create_memory_node": "langchain_ragtune.router.nodes",
    "create_remember_node": "langchain_ragtune.router.nodes",
    "memory_graph_builder": "langchain_ragtune.router.nodes",
    "memory_system_message": "langchain_ragtune.router.nodes",
}

if TYPE_CHECKING:  # pragma: no cover
    from langchain_ragtune.router.memory import MemoryRouter, RouteResult, namespace_from_config
    from langchain_ragtune.router.nodes import (
        MemoryState,
        create_memory_graph,
        create_memory_node,
        create_remember_node,
        memory_graph_builder,
        memory_system_message,
    )


__getattr__ = lazy_exports(__name__, _LAZY)
