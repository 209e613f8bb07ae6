"""langchain-ragtune: long-term memory for LangGraph, retrieval and parametric.

Retrieval memory stores every turn in PostgreSQL with pgvector and finds it again by hybrid
vector + keyword search; parametric memory distills the history into RAG-principled training
data and tunes a LoRA adapter per namespace; a router picks one, the other, or both per query.

Example:
    >>> from langchain_ragtune import MemoryStore          # doctest: +SKIP
    >>> with MemoryStore.from_env() as store:              # doctest: +SKIP
    ...     store.add(("user-42",), ["I moved to Lisbon in May."])
    ...     store.search(("user-42",), "where does the user live?", k=3)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from langchain_ragtune._lazy import lazy_exports

__version__ = "0.1.0"

# The public door. Names resolve lazily so `import langchain_ragtune` stays light (no psycopg
# pool, no LangGraph) until something is used.
_EXPORTS = {
    "MemoryStore": "langchain_ragtune.store",
    "AsyncMemoryStore": "langchain_ragtune.store",
    "MemoryRetriever": "langchain_ragtune.store",
    "RagtuneStore": "langchain_ragtune.store",
    "Turn": "langchain_ragtune.store",
    "Memory": "langchain_ragtune.store",
    "SearchResult": "langchain_ragtune.store",
    "StoreConfig": "langchain_ragtune.config",
    "ModelConfig": "langchain_ragtune.config",
    "ServeConfig": "langchain_ragtune.config",
    "RouterConfig": "langchain_ragtune.config",
    "RagtuneError": "langchain_ragtune.errors",
    "create_memory_node": "langchain_ragtune.router",
    "create_remember_node": "langchain_ragtune.router",
    "create_memory_graph": "langchain_ragtune.router",
    "MemoryState": "langchain_ragtune.router",
    "decide": "langchain_ragtune.router",
    "RouteDecision": "langchain_ragtune.router",
}

# A literal list, not computed from _EXPORTS: type checkers read only literal forms, and with
# a computed one mypy --strict refuses `from langchain_ragtune import MemoryStore` ("does not
# explicitly export"). tests/test_public_api.py keeps it equal to _EXPORTS.
__all__ = [
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

if TYPE_CHECKING:  # pragma: no cover
    from langchain_ragtune.config import ModelConfig, RouterConfig, ServeConfig, StoreConfig
    from langchain_ragtune.errors import RagtuneError
    from langchain_ragtune.router import (MemoryState, RouteDecision, create_memory_graph,
                                          create_memory_node, create_remember_node, decide)
    from langchain_ragtune.store import (AsyncMemoryStore, Memory, MemoryRetriever, MemoryStore,
                                         RagtuneStore, SearchResult, Turn)


__getattr__ = lazy_exports(__name__, _EXPORTS)
