"""Retrieval memory: turns in PostgreSQL + pgvector, found by hybrid vector + keyword search.

* :class:`MemoryStore` / :class:`AsyncMemoryStore`: write, search, list, delete, forget.
* :class:`MemoryRetriever`: a LangChain retriever over one namespace.
* :class:`RagtuneStore`: the store as LangGraph's ``BaseStore`` (``graph.compile(store=...)``).
* :mod:`~langchain_ragtune.store.sql`: every SQL statement and the schema migrations.
* :mod:`~langchain_ragtune.store.embedded`: the embedded PostgreSQL default.
"""

from typing import TYPE_CHECKING

from langchain_ragtune._lazy import lazy_exports

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


# The async store, the retriever and LangGraph's BaseStore load on first use.
__getattr__ = lazy_exports(__name__, {
    "AsyncMemoryStore": "langchain_ragtune.store.aio",
    "MemoryRetriever": "langchain_ragtune.store.retriever",
    "RagtuneStore": "langchain_ragtune.store.langgraph",
})
