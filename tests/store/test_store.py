"""The memory store on a real PostgreSQL + pgvector (fake embeddings for the logic)."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest
from langchain_core.messages import AIMessage, HumanMessage

from langchain_ragtune.errors import (
    EmbeddingDimensionError,
    InvalidInputError,
    NamespaceBusyError,
    StoreError,
)
from langchain_ragtune.store import MemoryRetriever, MemoryStore, Turn
from langchain_ragtune.testing import HashEmbeddings

T0 = datetime(2023, 5, 8, 13, 56, tzinfo=timezone.utc)


def _conv(ns, store, thread="s1"):
    texts = [
        ("Ana", "I adopted a beagle called Toby last week."),
        ("Ben", "Congrats! How is Toby settling in?"),
        ("Ana", "He loves the park near our flat in Lisbon."),
        ("Ben", "I am training for the Porto marathon in October."),
        ("Ana", "My sister Clara visits us every summer."),
    ]
    turns = [Turn(text=t, speaker=s, thread_id=thread, message_id=f"{thread}-{i}",
                  occurred_at=T0 + timedelta(minutes=i)) for i, (s, t) in enumerate(texts)]
    return store.add(ns, turns)


def test_add_search_and_provenance(store):
    ns = ("prov",)
    ids = _conv(ns, store)
    assert len(ids) == 5 and len(set(ids)) == 5
    store.flush()
    hits = store.search(ns, "What is the name of Ana's beagle?", k=3)
    assert hits[0].memory.message_id == "s1-0"
    assert hits[0].memory.occurred_at == T0
    assert hits[0].vector_score is not None and hits[0].keyword_score is not None
    d = hits[0].as_dict()
    assert {"text", "score", "id", "timestamp"} <= d.keys()


@pytest.mark.parametrize("mode", ["hybrid", "vector", "keyword"])
def test_modes_find_the_right_turn(store, mode):
    ns = ("modes", mode)
    _conv(ns, store)
    store.flush()
    hits = store.search(ns, "Porto marathon training", k=2, mode=mode)
    # Vectors embed each turn with the turn it replies to, so the reply to the marathon turn
    # may rank next to it; the turn itself must be in the top two, and first for keywords.
    assert "s1-3" in [h.memory.message_id for h in hits]
    if mode == "keyword":
        assert hits[0].memory.message_id == "s1-3"


def test_small_namespace_still_gets_k_results(store):
    ns = ("small",)
    _conv(ns, store)
    store.flush()
    # An unrelated query must still fill k from the namespace (exact scan, not a filtered
    # HNSW scan that can come back short).
    assert len(store.search(ns, "quantum chromodynamics", k=5, mode="vector")) == 5


def test_namespaces_are_hard_partitions(store):
    a, b = ("iso", "a"), ("iso", "b")
    ids_a = _conv(a, store)
    store.add(b, ["Ben's secret: the vault code is 4711."])
    store.flush()
    for mode in ("hybrid", "vector", "keyword"):
        assert all(h.memory.namespace == a for h in store.search(a, "vault code secret", k=10, mode=mode))
    assert store.delete(b, ids_a) == 0  # B cannot delete A's memories
    assert store.count(a) == 5
    assert store.get(b, ids_a[0]) is None
    assert store.update(b, ids_a[0], text="hijacked") is False
    assert store.get(a, ids_a[0]).text.startswith("I adopted")


def test_idempotent_on_message_id(store):
    ns = ("idem",)
    first = store.add(ns, [Turn(text="original", message_id="m-1")])
    again = store.add(ns, [Turn(text="replayed with other text", message_id="m-1")])
    assert first == again
    assert store.count(ns) == 1 and store.get(ns, first[0]).text == "original"


def test_keyword_search_finds_turns_before_they_are_embedded(store):
    ns = ("unembedded",)
    store.add(ns, ["The wifi password is hunter2-zebra."])
    assert store.pending() >= 1
    hits = store.search(ns, "wifi password", k=3)  # hybrid: the keyword side finds it
    assert hits and "hunter2" in hits[0].text and hits[0].vector_score is None
    store.flush()
    assert store.search(ns, "wifi password", k=3, mode="vector")[0].vector_score is not None


def test_background_embedder_embeds_without_flush(store_config):
    s = MemoryStore(store_config, embeddings=HashEmbeddings(), background_embedding=True)
    try:
        s.setup()
        ns = ("bg",)
        s.add(ns, ["a turn for the background embedder"])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not s.get(ns, s.list(ns)[0].id).embedded:
            time.sleep(0.1)
        assert s.list(ns)[0].embedded
    finally:
        s.close()


def test_window_returns_neighbouring_turns_in_order(store):
    ns = ("window",)
    _conv(ns, store)
    _conv(ns, store, thread="s2")
    store.flush()
    hit = store.search(ns, "park near our flat in Lisbon", k=1, window=1)[0]
    assert [m.message_id for m in hit.context] == [f"{hit.memory.thread_id}-{i}" for i in (1, 2, 3)]
    assert hit.message_ids == [m.message_id for m in hit.context]


def test_filters_time_metadata_thread_seq(store):
    ns = ("filters",)
    store.add(ns, [
        Turn(text="breakfast was pancakes", occurred_at=T0, metadata={"topic": "food"}, thread_id="x"),
        Turn(text="dinner was pancakes", occurred_at=T0 + timedelta(days=2), metadata={"topic": "food"}),
        Turn(text="pancakes recipe saved", occurred_at=T0 + timedelta(days=4), metadata={"topic": "cooking"}),
    ])
    store.flush()
    q = "pancakes"
    assert {h.text for h in store.search(ns, q, after=T0 + timedelta(days=1))} == {
        "dinner was pancakes", "pancakes recipe saved"}
    assert {h.text for h in store.search(ns, q, before=T0 + timedelta(days=1))} == {"breakfast was pancakes"}
    assert {h.text for h in store.search(ns, q, metadata={"topic": "cooking"})} == {"pancakes recipe saved"}
    assert {h.text for h in store.search(ns, q, thread_id="x")} == {"breakfast was pancakes"}
    seq = store.list(ns)[0].seq
    assert len(store.search(ns, q, after_seq=seq)) == 2


def test_list_max_seq_and_newer_than(store):
    ns = ("listing",)
    store.add(ns, ["one", "two"])
    mark = store.max_seq(ns)
    store.add(ns, ["three"])
    newer = store.list(ns, after_seq=mark)
    assert [m.text for m in newer] == ["three"]
    assert store.max_seq(ns) > mark


def test_delete_update_and_forget(store):
    ns = ("forget",)
    ids = _conv(ns, store)
    store.flush()
    assert store.delete(ns, [ids[0]]) == 1
    assert all(h.id != ids[0] for h in store.search(ns, "beagle Toby", k=10))
    assert store.update(ns, ids[1], text="Ben asked about the cat.")
    assert not store.get(ns, ids[1]).embedded  # new text, vector recomputed later
    store.flush()
    assert store.search(ns, "cat", k=1, mode="keyword")[0].id == ids[1]
    assert store.forgotten_since(ns, watermark=10**9, since=T0) >= 1
    out = store.forget(ns)
    assert out["memories"] == 4 and store.count(ns) == 0
    assert store.search(ns, "Lisbon", k=5) == []


def test_ttl_expiry(store):
    ns = ("ttl",)
    past = datetime.now(timezone.utc) - timedelta(seconds=1)
    store.add(ns, [Turn(text="ephemeral note about kiwis", expires_at=past), "lasting note about kiwis"])
    store.flush()
    assert [h.text for h in store.search(ns, "kiwis", k=5)] == ["lasting note about kiwis"]
    assert store.count(ns) == 1
    assert store.expire() >= 1


def test_langchain_messages_and_content_blocks(store):
    ns = ("messages",)
    msgs = [
        HumanMessage(content="I'm allergic to peanuts", id="h1"),
        AIMessage(content=[{"type": "text", "text": "Noted: no peanuts."},
                           {"type": "image_url", "image_url": {"url": "http://x/y.png"}}], id="a1"),
    ]
    store.add(ns, msgs)
    got = {m.message_id: m for m in store.list(ns)}
    assert got["h1"].role == "human" and got["a1"].role == "ai"
    assert got["a1"].text == "Noted: no peanuts."
    with pytest.raises(InvalidInputError, match="no text content"):
        store.add(ns, [HumanMessage(content=[{"type": "image_url", "image_url": {"url": "u"}}])])


def test_namespace_lock_is_exclusive(store):
    with store.namespace_lock(("locked",)):
        with pytest.raises(NamespaceBusyError):
            with store.namespace_lock(("locked",)):
                pass
    with store.namespace_lock(("locked",)):  # released after use
        pass


def test_dimension_mismatch_is_a_clear_error(store_config, store):
    other = MemoryStore(store_config, embeddings=HashEmbeddings(dim=64), background_embedding=False)
    try:
        with pytest.raises(EmbeddingDimensionError, match="384-dimensional.*produce 64"):
            other.setup()
    finally:
        other.close()


def test_missing_setup_is_a_clear_error(pg_uri, tmp_path):
    from langchain_ragtune.config import StoreConfig

    s = MemoryStore(StoreConfig(pg_uri=pg_uri, schema="never_set_up", home=tmp_path),
                    embeddings=HashEmbeddings(), background_embedding=False)
    try:
        with pytest.raises(StoreError, match=r"setup\(\)"):
            s.count(("x",))
    finally:
        s.close()


def test_unreachable_server_names_the_uri(tmp_path):
    from langchain_ragtune.config import StoreConfig

    cfg = StoreConfig(pg_uri="postgresql://nobody:secret@127.0.0.1:1/nodb", home=tmp_path,
                      connect_timeout=2)
    with pytest.raises(StoreError) as err:
        MemoryStore(cfg, embeddings=HashEmbeddings())
    assert "127.0.0.1:1" in str(err.value) and "secret" not in str(err.value)


def test_retriever_returns_documents_with_provenance(store):
    ns = ("retriever",)
    _conv(ns, store)
    store.flush()
    r = MemoryRetriever(store=store, namespace=ns, k=2, window=1)
    docs = r.invoke("Porto marathon")
    assert docs and "marathon" in docs[0].page_content
    assert docs[0].metadata["message_id"] == "s1-3" and "timestamp" in docs[0].metadata


def test_real_minilm_embeddings_end_to_end(store_config, minilm):
    from langchain_ragtune.config import StoreConfig

    cfg = StoreConfig(pg_uri=store_config.pg_uri, schema=store_config.schema + "_minilm",
                      home=store_config.home)
    s = MemoryStore(cfg, embeddings=minilm, background_embedding=False)
    try:
        s.setup()
        ns = ("minilm",)
        _conv(ns, s)
        s.flush()
        # No shared keywords: only the semantic side can connect "dog" with "beagle".
        hit = s.search(ns, "Which dog did she get?", k=1, mode="vector")[0]
        assert hit.memory.message_id == "s1-0" and hit.vector_score > 0.3
    finally:
        import psycopg

        s.close()
        with psycopg.connect(cfg.pg_uri, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {cfg.schema} CASCADE")


def test_server_without_pgvector_says_how_to_fix(store_config, monkeypatch):
    from langchain_ragtune.errors import PgvectorMissingError
    from langchain_ragtune.store import sql

    # Stand in for a server without the extension: ask for one no server has.
    monkeypatch.setattr(sql, "CHECK_PGVECTOR_SQL",
                        "SELECT 1 FROM pg_available_extensions WHERE name = 'no_such_extension'")
    s = MemoryStore(store_config, embeddings=HashEmbeddings(), background_embedding=False)
    try:
        with pytest.raises(PgvectorMissingError, match="pgvector.*RAGTUNE_PG_URI"):
            s.setup()
    finally:
        s.close()


def test_search_by_role(store):
    """What the assistant said can be kept out of a search (roles), and the filter is checked."""
    ns = ("roles",)
    store.add(ns, [{"text": "I planted tomatoes on the balcony.", "role": "human"},
                   {"text": "Tomatoes on a balcony need a big pot.", "role": "ai"}])
    store.flush()
    both = store.search(ns, "tomatoes balcony", k=5)
    assert {h.memory.role for h in both} == {"human", "ai"}
    human = store.search(ns, "tomatoes balcony", k=5, roles=["human"])
    assert [h.memory.role for h in human] == ["human"]
    with pytest.raises(InvalidInputError, match="roles"):
        store.search(ns, "tomatoes", roles="human")
