"""BM25 keyword search on a real PostgreSQL: rare words count more, common words drop out."""

from __future__ import annotations

import dataclasses
import math
from datetime import datetime, timedelta, timezone

import pytest

from langchain_ragtune.errors import ConfigError
from langchain_ragtune.store import AsyncMemoryStore, MemoryStore, Turn
from langchain_ragtune.store.base import keyword_df_cap
from langchain_ragtune.testing import HashEmbeddings


def _chat(store, ns, *, n_ana=30):
    """A chat where Ana speaks (and is named in) almost every turn; one turn has the beagle."""
    turns = [Turn(text=f"Ana here again, Ana talking about day {i}.", speaker="Ana",
                  thread_id="s1", message_id=f"ana-{i}") for i in range(n_ana)]
    turns.append(Turn(text="I adopted a beagle last week.", speaker="Ben", thread_id="s1",
                      message_id="beagle"))
    store.add(ns, turns)


def _ids(hits):
    return [h.memory.message_id for h in hits]


@pytest.fixture(scope="module")
def other_store(store_config):
    """A second store on the same schema, configured by ``other_store(**changes)``."""
    opened = []

    def make(**changes):
        s = MemoryStore(dataclasses.replace(store_config, **changes), embeddings=HashEmbeddings(),
                        background_embedding=False)
        opened.append(s)
        return s

    yield make
    for s in opened:
        s.close()


def test_rare_word_outranks_a_name_in_every_turn(store, other_store):
    ns = ("bm25", "rare")
    _chat(store, ns)
    assert store.config.keyword_scoring == "bm25"  # the default
    assert _ids(store.search(ns, "Ana beagle", k=3, mode="keyword"))[0] == "beagle"
    # ts_rank_cd weighs both words alike, and Ana's turns hold "Ana" three times.
    plain = other_store(keyword_scoring="ts_rank_cd")
    assert "beagle" not in _ids(plain.search(ns, "Ana beagle", k=3, mode="keyword"))


def test_common_words_are_left_out_unless_nothing_else_is_left(store, other_store):
    ns = ("bm25", "common")
    _chat(store, ns)
    # "ana" is in 30 of 31 memories, over both the 5% share and the floor of 10.
    assert _ids(store.search(ns, "Ana beagle", k=10, mode="keyword")) == ["beagle"]
    # Alone, a common word still finds its memories.
    assert len(store.search(ns, "Ana", k=10, mode="keyword")) == 10
    # keyword_max_df = 1.0 keeps every word: the beagle first, then Ana's turns.
    keep_all = other_store(keyword_max_df=1.0)
    hits = keep_all.search(ns, "Ana beagle", k=10, mode="keyword")
    assert _ids(hits)[0] == "beagle" and len(hits) == 10


def test_small_namespace_keeps_its_words(store):
    ns = ("bm25", "small")
    # "toby" is in 6 of 8 memories (75%), but in no more than the floor of 10 of them.
    store.add(ns, [f"Toby chased ball number {i}" for i in range(6)]
              + ["The park is big", "We walked to the park"])
    hits = store.search(ns, "Toby park", k=10, mode="keyword")
    assert len(hits) == 8
    assert sum("Toby" in h.text for h in hits) == 6


def test_score_is_bm25_of_the_namespace(store):
    ns = ("bm25", "formula")
    store.add(ns, ["zebra stripes", "lion mane", "lion roar", "tiger stripes"])
    (hit,) = store.search(ns, "zebra", k=1, mode="keyword")
    n, df, tf, k1 = 4, 1, 1, store.config.bm25_k1
    idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
    assert hit.keyword_score == pytest.approx(idf * tf * (k1 + 1) / (tf + k1))
    # A word said three times saturates: tf 3 scores (k1 + 1) * 3 / (3 + k1) times tf 1.
    store.add(ns, ["stripes, stripes and more stripes"])
    (hit,) = store.search(ns, "stripes", k=1, mode="keyword")
    assert hit.text.startswith("stripes, stripes")
    n, df, tf = 5, 3, 3
    idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
    assert hit.keyword_score == pytest.approx(idf * tf * (k1 + 1) / (tf + k1), rel=1e-6)
    # Two matching words add up: "lion mane" holds the rarer word too.
    top = store.search(ns, "lion mane", k=2, mode="keyword")
    assert [h.text for h in top] == ["lion mane", "lion roar"]
    assert top[0].keyword_score > top[1].keyword_score


def test_statistics_count_only_live_memories_of_the_namespace(store):
    ns = ("bm25", "live")
    store.add(ns, ["an okapi in the forest", "a giraffe", "a zebra", "an elephant"])
    before = store.search(ns, "okapi", k=1, mode="keyword")[0].keyword_score
    # Another namespace full of okapis and expired okapis here change nothing.
    store.add(("bm25", "elsewhere"), [f"okapi number {i}" for i in range(20)])
    past = datetime.now(timezone.utc) - timedelta(seconds=1)
    store.add(ns, [Turn(text=f"an old okapi {i}", expires_at=past) for i in range(5)])
    after = store.search(ns, "okapi", k=5, mode="keyword")
    assert [h.text for h in after] == ["an okapi in the forest"]
    assert after[0].keyword_score == pytest.approx(before)


@pytest.mark.parametrize("text", [
    "O'Neil's path is C:\\dir\\x",
    "tsquery syntax: a & b | !c <-> d:* (e)",
    "quote ' and double '' and backslash \\ alone",
    "see http://example.com/o'neil and https://ex.com/q?x='1'",  # lexemes with quotes
])
def test_query_syntax_characters_are_words(store, text):
    ns = ("bm25", "syntax", text)
    (mid,) = store.add(ns, [text])
    store.add(ns, ["something else entirely"])
    assert store.search(ns, text, k=1, mode="keyword")[0].id == mid
    assert store.search(ns, text, k=1)[0].id == mid


def test_stopword_query_finds_nothing_by_keyword(store):
    ns = ("bm25", "stopwords")
    store.add(ns, ["the cat sat"])
    assert store.search(ns, "the and of", k=3, mode="keyword") == []


def test_hybrid_uses_bm25_ranks(store):
    ns = ("bm25", "hybrid")
    _chat(store, ns)
    store.flush()
    hits = store.search(ns, "Ana beagle", k=3)
    assert "beagle" in _ids(hits)
    assert next(h for h in hits if h.memory.message_id == "beagle").keyword_score > 0


async def test_async_twin_scores_alike(store, store_config):
    ns = ("bm25", "async")
    _chat(store, ns)
    astore = AsyncMemoryStore(store_config, embeddings=HashEmbeddings(), background_embedding=False)
    await astore.open()
    try:
        for q in ("Ana beagle", "Ana", "day 7"):
            sync_hits = store.search(ns, q, k=5, mode="keyword")
            async_hits = await astore.search(ns, q, k=5, mode="keyword")
            assert _ids(async_hits) == _ids(sync_hits)
            assert [h.keyword_score for h in async_hits] == pytest.approx(
                [h.keyword_score for h in sync_hits])
    finally:
        await astore.close()


def test_df_cap():
    assert keyword_df_cap(600, 0.05, 10) == 30
    assert keyword_df_cap(100, 0.05, 10) == 10  # the floor
    assert keyword_df_cap(0, 0.05, 10) == 10
    assert keyword_df_cap(600, 1.0, 10) > 10**15  # 1.0 keeps every word


@pytest.mark.parametrize("changes,fragment", [
    ({"keyword_scoring": "tfidf"}, "bm25 or ts_rank_cd"),
    ({"keyword_max_df": 0}, "positive"),
    ({"keyword_max_df": 1.5}, "share of the namespace"),
    ({"keyword_df_floor": -1}, "positive"),
    ({"bm25_k1": 0}, "positive"),
])
def test_keyword_settings_are_validated(store_config, changes, fragment):
    with pytest.raises(ConfigError, match=fragment):
        dataclasses.replace(store_config, **changes)


def test_keyword_settings_from_environment(monkeypatch):
    from langchain_ragtune.config import StoreConfig

    monkeypatch.setenv("RAGTUNE_KEYWORD_SCORING", "ts_rank_cd")
    monkeypatch.setenv("RAGTUNE_KEYWORD_MAX_DF", "0.2")
    monkeypatch.setenv("RAGTUNE_KEYWORD_DF_FLOOR", "3")
    cfg = StoreConfig.from_env()
    assert (cfg.keyword_scoring, cfg.keyword_max_df, cfg.keyword_df_floor) == ("ts_rank_cd", 0.2, 3)


def test_retrieval_bench_reports_both_keyword_scorings(pg_uri):
    from langchain_ragtune.bench.retrieval import run_retrieval_bench

    out = run_retrieval_bench(memories=400, queries=20, pg_uri=pg_uri, quiet=True)
    scorings = out["keyword_scoring"]
    assert set(scorings) == {"bm25", "ts_rank_cd"}
    for name in scorings:
        assert set(scorings[name]) == {"hybrid", "keyword", "keyword_common"}
        assert scorings[name]["keyword"]["p95_ms"] > 0
    assert out["ours"]["recall_at_10"] >= 0.95  # 400 memories: every namespace scanned exactly
