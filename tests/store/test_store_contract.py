"""RagtuneStore against LangGraph's reference ``InMemoryStore``: the same operations on both,
outputs compared. Every difference that remains is one README and the module docstring
list, and is asserted here as such, so a new one fails.

Both stores get the same real embeddings (all-MiniLM-L6-v2) so scores are comparable.
"""

from __future__ import annotations

import time

import pytest
from langgraph.store.memory import InMemoryStore

from langchain_ragtune.errors import ConfigError, InvalidInputError
from langchain_ragtune.store.langgraph import RagtuneStore

ITEMS = [
    (("memories", "u1"), "a", {"text": "I moved to Lisbon in May", "kind": "fact", "score": 5,
                               "tags": ["home", "city"]}),
    (("memories", "u1"), "b", {"text": "My sister Ana plays the cello", "kind": "fact",
                               "score": 2}),
    (("memories", "u1", "notes"), "c", {"text": "Buy cello strings", "kind": "todo",
                                         "score": 9}),
    (("memories", "u2"), "d", {"text": "I moved to Oslo in June", "kind": "fact", "score": 7}),
    (("memories", "u1_x"), "e", {"text": "wildcard trap: u1_x is not u1", "kind": "fact",
                                  "score": 1}),
    (("other",), "f", {"text": "unrelated", "kind": "fact", "score": 3}),
]


@pytest.fixture(scope="module")
def stores(store_config, minilm):
    from langchain_ragtune.store import MemoryStore

    mem = MemoryStore(store_config, embeddings=minilm, background_embedding=False)
    mem.setup()
    ours = RagtuneStore(mem)
    ref = InMemoryStore(index={"dims": mem.dimension, "embed": minilm, "fields": ["text"]})
    for ns, key, value in ITEMS:
        ours.put(ns, key, value)
        ref.put(ns, key, value)
    mem.flush()
    yield ours, ref, mem
    mem.close()


def keys(items) -> list[str]:
    return [i.key for i in items]


FILTERS = [
    {"kind": "fact"},
    {"kind": {"$eq": "todo"}},
    {"kind": {"$ne": "fact"}},
    {"score": {"$gt": 2}},
    {"score": {"$gte": 2, "$lt": 7}},
    {"score": {"$lte": 2}},
    {"kind": "fact", "score": {"$gt": 4}},
    {"missing": {"$ne": "x"}},
]


@pytest.mark.parametrize("flt", FILTERS, ids=[str(f) for f in FILTERS])
@pytest.mark.parametrize("prefix", [("memories",), ("memories", "u1"), ("other",)])
def test_filters_and_prefixes_select_the_same_items(stores, flt, prefix):
    ours, ref, _ = stores
    got = sorted(keys(ours.search(prefix, filter=flt, limit=50)))
    want = sorted(keys(ref.search(prefix, filter=flt, limit=50)))
    assert got == want


def test_prefix_search_never_crosses_a_label(stores):
    """("memories", "u1") holds u1's items and u1's sub-namespaces, never u1_x's or u2's
    (no LIKE-wildcard confusion from the underscore)."""
    ours, ref, _ = stores
    for store in (ours, ref):
        assert sorted(keys(store.search(("memories", "u1"), limit=50))) == ["a", "b", "c"]
    assert keys(ours.search(("memories", "u1_"), limit=50)) == []
    assert keys(ours.search(("memories", "u%"), limit=50)) == []


def test_unknown_operator_and_bad_comparison_are_errors(stores):
    ours, ref, _ = stores
    with pytest.raises(ValueError, match="Unsupported operator"):
        ref.search(("memories",), filter={"score": {"$in": [1, 2]}})
    with pytest.raises(InvalidInputError, match=r"\$in.*\$eq, \$ne, \$gt"):
        ours.search(("memories",), filter={"score": {"$in": [1, 2]}})
    with pytest.raises(InvalidInputError, match=r"\$in"):
        ours.search(("memories",), query="cello", filter={"score": {"$in": [1, 2]}})
    with pytest.raises(InvalidInputError, match="non-number"):
        ours.search(("memories",), filter={"score": {"$gt": "2"}})


def test_query_search_scores_are_cosine_similarities(stores):
    ours, ref, _ = stores
    q = "Where did I move?"
    got = {i.key: i.score for i in ours.search(("memories",), query=q, limit=10)}
    want = {i.key: i.score for i in ref.search(("memories",), query=q, limit=10)}
    assert set(got) == set(want)
    for key, score in want.items():
        # halfvec storage: 16-bit floats give ~3 decimals
        assert got[key] == pytest.approx(score, abs=2e-3), key
    # the best match by similarity is the reference's top hit
    assert max(got, key=got.get) == ref.search(("memories",), query=q, limit=1)[0].key
    hits = ours.search(("memories",), query=q, limit=10)
    assert all(h.fusion_score is not None for h in hits)


def test_query_search_with_filter_and_offset(stores):
    ours, ref, _ = stores
    got = ours.search(("memories",), query="cello", filter={"kind": "fact"}, limit=10)
    want = ref.search(("memories",), query="cello", filter={"kind": "fact"}, limit=10)
    assert sorted(keys(got)) == sorted(keys(want))
    assert keys(got)[0] == "b"  # the sister who plays the cello, by both search sides
    page = ours.search(("memories",), query="cello", filter={"kind": "fact"}, limit=1, offset=1)
    assert keys(page) == keys(got)[1:2]


def test_updated_at_moves_on_update_in_every_read(stores):
    ours, _, mem = stores
    ns = ("memories", "u3")
    ours.put(ns, "k", {"text": "first version about kayaks"})
    time.sleep(0.05)
    ours.put(ns, "k", {"text": "second version about kayaks"})
    mem.flush()
    got = ours.get(ns, "k")
    assert got.updated_at > got.created_at
    listed = ours.search(ns)[0]
    found = ours.search(ns, query="kayaks")[0]
    assert listed.updated_at == found.updated_at == got.updated_at
    assert found.created_at == got.created_at


def test_index_fields_choose_the_embedded_text(store_config, minilm):
    from langchain_ragtune.store import MemoryStore

    mem = MemoryStore(store_config, embeddings=minilm, background_embedding=False)
    ours = RagtuneStore(mem, index={"fields": ["profile.hobby"], "dims": mem.dimension})
    ns = ("idx",)
    ours.put(ns, "p1", {"profile": {"hobby": "restoring vintage motorbikes", "name": "Zed"},
                        "text": "ignored"})
    ours.put(ns, "p2", {"profile": {"hobby": "baking sourdough"}, "text": "ignored"},
             index=["profile.name", "text"])
    mem.flush()
    assert keys(ours.search(ns, query="motorcycles", limit=1)) == ["p1"]
    row = mem.list(ns)
    texts = {m.message_id: m.text for m in row}
    assert texts == {"p1": "restoring vintage motorbikes", "p2": "ignored"}
    with pytest.raises(ConfigError, match="embeds with its own model"):
        RagtuneStore(mem, index={"embed": minilm, "dims": mem.dimension})
    with pytest.raises(ConfigError, match="dimension"):
        RagtuneStore(mem, index={"dims": mem.dimension + 1})


def test_ttl_default_refresh_on_read_and_sweep(store_config, minilm):
    from langchain_ragtune.store import MemoryStore

    mem = MemoryStore(store_config, embeddings=minilm, background_embedding=False)
    ours = RagtuneStore(mem, ttl={"default_ttl": 0.02, "refresh_on_read": True})  # 1.2 s
    ns = ("ttl",)
    ours.put(ns, "short", {"text": "expires soon"})
    ours.put(ns, "kept", {"text": "no expiry"}, ttl=None)
    ours.put(ns, "read", {"text": "read keeps it"})
    exp0 = {m.message_id: m.expires_at for m in mem.list(ns)}
    assert exp0["kept"] is None and exp0["short"] is not None
    time.sleep(0.8)
    assert ours.get(ns, "read") is not None  # refresh_on_read: expiry pushed 1.2 s ahead
    assert ours.get(ns, "short", refresh_ttl=False) is not None
    time.sleep(0.6)
    assert ours.get(ns, "short") is None  # expired: invisible at once
    assert ours.get(ns, "read", refresh_ttl=False) is not None
    assert ours.get(ns, "kept") is not None
    assert ours.sweep_ttl() >= 1
    assert "short" not in {m.message_id for m in mem.list(ns)}
    with pytest.raises(InvalidInputError, match="ttl"):
        ours.put(ns, "bad", {"text": "x"}, ttl=-1)
    with pytest.raises(ConfigError, match="sweep_interval_minutes"):
        ours.start_ttl_sweeper()
    fut = ours.start_ttl_sweeper(0.001)
    assert ours.stop_ttl_sweeper(5) and fut.result(5) is None
