"""A LangChain retriever over one namespace of the memory store.

Example:
    >>> retriever = MemoryRetriever(store=store, namespace=("user-42",), k=5)   # doctest: +SKIP
    >>> docs = retriever.invoke("where did I move?")                            # doctest: +SKIP
    >>> docs[0].metadata["timestamp"]                                           # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, field_validator

from langchain_ragtune.errors import InvalidInputError
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


# Per-call options a caller may pass to ``invoke(query, **kwargs)``; the namespace is not
# one of them: it is fixed when the retriever is built, never taken from a call or a model.
_SEARCH_OPTIONS = frozenset({"k", "mode", "window", "after", "before", "thread_id",
                             "metadata", "after_seq", "roles"})


class MemoryRetriever(BaseRetriever):
    """Retrieves memories of one namespace by hybrid search.

    Options follow LangChain's retriever conventions: ``k`` (and the other search options)
    set at construction, overridden per call with ``retriever.invoke(query, k=1)``, and
    ``search_kwargs`` for the rest of :meth:`MemoryStore.search`'s keyword arguments
    (``{"k": 3}`` there is the same as ``k=3``).

    Attributes:
        store: a :class:`~langchain_ragtune.store.MemoryStore` (and, for ``ainvoke``,
            optionally ``astore``: an :class:`~langchain_ragtune.store.AsyncMemoryStore`;
            without one, ``ainvoke`` runs the sync search in a worker thread).
        namespace: the namespace to search; never taken from model output or call kwargs.
        k: number of documents.
        mode: ``"hybrid"``, ``"vector"`` or ``"keyword"``.
        window: turns of thread context around each hit.
        search_kwargs: more options of :meth:`MemoryStore.search` (``metadata``,
            ``thread_id``, ``after``, ``before``, ...).
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

    @field_validator("search_kwargs")
    @classmethod
    def _search_kwargs(cls, v: dict[str, Any]) -> dict[str, Any]:
        _check_options(v, "search_kwargs")
        return dict(v)

    def _options(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Construction defaults < ``search_kwargs`` < this call's kwargs."""
        _check_options(kwargs, "retriever call")
        opts = {"k": self.k, "mode": self.mode, "window": self.window,
                **self.search_kwargs, **kwargs}
        opts["k"] = validate_k(opts["k"])
        return opts

    def _get_relevant_documents(self, query: str, *,
                                run_manager: CallbackManagerForRetrieverRun,
                                **kwargs: Any) -> list[Document]:
        hits = self.store.search(self.namespace, query, **self._options(kwargs))
        return [result_to_document(h) for h in hits]

    async def _aget_relevant_documents(self, query: str, *,
                                       run_manager: AsyncCallbackManagerForRetrieverRun,
                                       **kwargs: Any) -> list[Document]:
        opts = self._options(kwargs)
        if self.astore is None:
            hits = await asyncio.to_thread(self.store.search, self.namespace, query, **opts)
        else:
            hits = await self.astore.search(self.namespace, query, **opts)
        return [result_to_document(h) for h in hits]


def _check_options(options: dict[str, Any], where: str) -> None:
    unknown = sorted(set(options) - _SEARCH_OPTIONS)
    if unknown:
        hint = (" The namespace is fixed when the retriever is built; make one retriever per "
                "user." if "namespace" in unknown else "")
        raise InvalidInputError(
            f"{where}: unknown search option(s) {unknown}; use any of "
            f"{sorted(_SEARCH_OPTIONS)}.{hint}")
