"""The async twin behaves like the sync store, on the same real PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest

from langchain_ragtune.errors import InvalidInputError, NamespaceBusyError
from langchain_ragtune.store import AsyncMemoryStore, MemoryRetriever, MemoryStore
from langchain_ragtune.testing import HashEmbeddings


@pytest.fixture(scope="module")
async def astore(store_config):
    s = AsyncMemoryStore(store_config, embeddings=HashEmbeddings(), background_embedding=False)
    await s.open()
    await s.setup()
    yield s
    await s.close()


async def test_async_roundtrip(astore):
    ns = ("async", "a")
    ids = await astore.add(ns, ["The boiler was serviced in March.", "The car needs new tyres."])
    assert len(ids) == 2
    assert await astore.count(ns) == 2
    hits = await astore.search(ns, "boiler service", k=1)  # keyword side, before embedding
    assert hits[0].id == ids[0]
    assert await astore.flush() >= 2
    hits = await astore.search(ns, "tyres for the car", k=1, mode="vector")
    assert hits[0].id == ids[1]
    assert (await astore.get(ns, ids[0])).text.startswith("The boiler")
    assert [m.text for m in await astore.list(ns)] == [
        "The boiler was serviced in March.", "The car needs new tyres."]
    assert await astore.max_seq(ns) > 0
    assert await astore.delete(("async", "other"), ids) == 0
    assert await astore.delete(ns, [ids[0]]) == 1
    assert (await astore.forget(ns))["memories"] == 1


async def test_async_concurrent_writes_are_all_kept(astore):
    ns = ("async", "concurrent")
    await asyncio.gather(*(astore.add(ns, [f"note number {i}"]) for i in range(40)))
    assert await astore.count(ns) == 40


async def test_async_lock_and_validation(astore):
    async with astore.namespace_lock(("async", "lock")):
        with pytest.raises(NamespaceBusyError):
            async with astore.namespace_lock(("async", "lock")):
                pass
    with pytest.raises(InvalidInputError):
        await astore.search(("async",), "q", k=0)


async def test_async_retriever(store_config, astore):
    ns = ("async", "retriever")
    await astore.add(ns, ["Grandma's lasagne recipe uses nutmeg."])
    await astore.flush()
    sync = MemoryStore(store_config, embeddings=HashEmbeddings(), background_embedding=False)
    try:
        r = MemoryRetriever(store=sync, astore=astore, namespace=ns, k=1)
        docs = await r.ainvoke("lasagne nutmeg")
        assert "nutmeg" in docs[0].page_content
    finally:
        sync.close()
