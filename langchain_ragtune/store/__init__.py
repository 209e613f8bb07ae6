"""Retrieval memory: turns in PostgreSQL + pgvector, found by hybrid vector + keyword search.

* :class:`MemoryStore` / :class:`AsyncMemoryStore`: write, search, list, delete, forget.
* :class:`MemoryRetriever`: a LangChain retriever over one namespace.
* :class:`RagtuneStore`: the store as LangGraph's ``BaseStore`` (``graph.compile(store=...)``).
* :mod:`~langchain_ragtune.store.sql`: every SQL statement and the schema migrations.
* :mod:`~langchain_ragtune.store.embedded`: the embedded PostgreSQL default.
"""

from typing import TYPE_CHECKING, Any

from langchain_ragtune.store.types import Memory, SearchResult, Turn
from langchain_ragtune.store.sync import MemoryStore

__all__ = [
    "AsyncMemoryStore", "Memory", "MemoryRetriever", "MemoryStore", "RagtuneStore", "SearchResult",
    "Turn",
]

if TYPE_CHECKING:  # pragma: no cover  (the real classes, for type checkers)
    from langchain_ragtune.store.aio import AsyncMemoryStore
    from langchain_ragtune.store.langgraph import RagtuneStore
    from langchain_ragtune.store.retriever import MemoryRetriever


def __getattr__(name: str) -> Any:  # the async store and retriever load on first use
    if name == "AsyncMemoryStore":
        from langchain_ragtune.store.aio import AsyncMemoryStore

        return AsyncMemoryStore
    if name == "RagtuneStore":
        from langchain_ragtune.store.langgraph import RagtuneStore

        return RagtuneStore
    if name == "MemoryRetriever":
        from langchain_ragtune.store.retriever import MemoryRetriever

        return MemoryRetriever
    raise AttributeError(f"module 'langchain_ragtune.store' has no attribute {name!r}")
