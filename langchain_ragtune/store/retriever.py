"""A LangChain retriever over one namespace of the memory store.

Example:
    >>> retriever = MemoryRetriever(store=store, namespace=("user-42",), k=5)   # doctest: +SKIP
    >>> docs = retriever.invoke("where did I move?")                            # doctest: +SKIP
    >>> docs[0].metadata["timestamp"]                                           # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, field_validator

from langchain_ragtune.store.types import SearchResult, validate_k, validate_namespace

__all__ = ["MemoryRetriever", "result_to_document"]


def result_to_document(result: SearchResult) -> Document:
    """A search hit as a LangChain Document (text with context; provenance in metadata)."""
    if result.context:
        text = "\n".join(f"{m.speaker or m.role}: {m.text}" for m in result.context)
    else:
        m = result.memory
        text = f"{m.speaker}: {m.text}" if m.speaker else m.text
    d = result.as_dict()
    d.pop("context", None)
    d.pop("text", None)
    return Document(page_content=text, metadata=d, id=result.id)


class MemoryRetriever(BaseRetriever):
    """Retrieves memories of one namespace by hybrid search.

    Attributes:
        store: a :class:`~langchain_ragtune.store.MemoryStore` (and, for ``ainvoke``,
            optionally ``astore``: an :class:`~langchain_ragtune.store.AsyncMemoryStore`).
        namespace: the namespace to search; never taken from model output.
        k: number of documents.
        mode: ``"hybrid"``, ``"vector"`` or ``"keyword"``.
        window: turns of thread context around each hit.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    store: Any
    astore: Any = None
    namespace: tuple[str, ...]
    k: int = 8
    mode: str = "hybrid"
    window: int = 0
    search_kwargs: dict[str, Any] = {}

    @field_validator("namespace", mode="before")
    @classmethod
    def _ns(cls, v: Any) -> tuple[str, ...]:
        return validate_namespace(v)

    @field_validator("k")
    @classmethod
    def _k(cls, v: int) -> int:
        return validate_k(v)

    def _get_relevant_documents(self, query: str, *,
                                run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        hits = self.store.search(self.namespace, query, k=self.k, mode=self.mode,
                                 window=self.window, **self.search_kwargs)
        return [result_to_document(h) for h in hits]

    async def _aget_relevant_documents(self, query: str, *,
                                       run_manager: AsyncCallbackManagerForRetrieverRun
                                       ) -> list[Document]:
        if self.astore is None:
            return await super()._aget_relevant_documents(query, run_manager=run_manager)
        hits = await self.astore.search(self.namespace, query, k=self.k, mode=self.mode,
                                        window=self.window, **self.search_kwargs)
        return [result_to_document(h) for h in hits]
