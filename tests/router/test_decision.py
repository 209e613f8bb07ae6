"""The routing decision, table-driven over its signals (pure: no database, no model)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from langchain_ragtune.config import RouterConfig
from langchain_ragtune.errors import ConfigError, ServingError, StoreError
from langchain_ragtune.router.decision import NamespaceState, RouteDecision, Signals, decide

NS = ("user-1",)
NO_ADAPTER = NamespaceState(namespace=NS)
ADAPTER = NamespaceState(namespace=NS, adapter="user-1-v2-abcdef", adapter_version=2,
                         watermark_seq=100)
STRONG = Signals(hits=6, top_vector=0.72, lexical=0.8, relevant_seqs=(40, 12))
MODERATE = Signals(hits=6, top_vector=0.45, lexical=0.4, relevant_seqs=(40,))
WEAK = Signals(hits=6, top_vector=0.12, lexical=0.0)
FRESH = Signals(hits=6, top_vector=0.7, lexical=0.8, relevant_seqs=(130, 40))
FRESH_SECOND = Signals(hits=6, top_vector=0.45, lexical=0.4, relevant_seqs=(40, 130))

SPECIFIC = "When did Tomas adopt Pepper?"
SPECIFIC_WHAT = "What breed is Pepper, the dog Tomas adopted?"
HOLISTIC = "Overall, what kind of person is Priya?"
MIXED = "What did Priya do in Lisbon?"
SMALLTALK = "hi there, how are you?"
GENERAL = "What is the capital of France?"

CASES = [
    # (id, query, state, signals, config overrides, expected route, words in the first reason)
    ("smalltalk", SMALLTALK, ADAPTER, STRONG, {}, "none", "small talk"),
    ("smalltalk-no-adapter", SMALLTALK, NO_ADAPTER, WEAK, {}, "none", "small talk"),
    ("general-weak", GENERAL, ADAPTER, WEAK, {}, "none", "general knowledge"),
    ("general-but-in-memory", GENERAL, ADAPTER, STRONG, {}, "retrieval", "strong retrieval"),
    ("general-allow-none-off", GENERAL, NO_ADAPTER, WEAK, {"allow_none": False}, "retrieval",
     "no published adapter"),
    ("no-adapter-specific", SPECIFIC, NO_ADAPTER, STRONG, {}, "retrieval", "no published adapter"),
    ("no-adapter-holistic", HOLISTIC, NO_ADAPTER, WEAK, {}, "retrieval", "no published adapter"),
    ("forgotten", HOLISTIC, replace(ADAPTER, forgotten=3), WEAK, {}, "retrieval",
     "forgotten"),
    ("fresh-evidence", SPECIFIC, ADAPTER, FRESH, {}, "retrieval", "newer than the adapter"),
    ("fresh-evidence-hybrid", SPECIFIC, ADAPTER, FRESH, {"fresh_route": "hybrid"}, "hybrid",
     "newer than the adapter"),
    ("fresh-beats-holistic", HOLISTIC, ADAPTER, FRESH, {}, "retrieval", "newer than"),
    ("fresh-not-best", MIXED, ADAPTER, FRESH_SECOND, {}, "hybrid", "newer than the adapter"),
    ("holistic", HOLISTIC, ADAPTER, MODERATE, {}, "parametric", "holistic"),
    ("holistic-strong-retrieval", HOLISTIC, ADAPTER, STRONG, {}, "parametric", "holistic"),
    ("specific-strong", SPECIFIC_WHAT, ADAPTER, STRONG, {}, "retrieval", "specific"),
    ("temporal-strong", SPECIFIC, ADAPTER, STRONG, {}, "hybrid", "question about when"),
    ("temporal-moderate", SPECIFIC, ADAPTER, MODERATE, {}, "hybrid", "question about when"),
    ("temporal-route-off", SPECIFIC, ADAPTER, STRONG, {"temporal_route": "retrieval"},
     "retrieval", "specific"),
    ("temporal-parametric", SPECIFIC, ADAPTER, STRONG, {"temporal_route": "parametric"},
     "parametric", "question about when"),
    ("mixed-strong", MIXED, ADAPTER, STRONG, {}, "retrieval", "strong retrieval"),
    ("weak-retrieval", SPECIFIC, ADAPTER, WEAK, {}, "parametric", "found nothing"),
    ("no-hits", SPECIFIC, ADAPTER, Signals(), {}, "parametric", "found nothing"),
    ("moderate-hybrid", MIXED, ADAPTER, MODERATE, {}, "hybrid", "moderate"),
    ("moderate-no-hybrid", MIXED, ADAPTER, MODERATE, {"prefer_hybrid": False}, "retrieval",
     "moderate"),
    # thresholds come from the config
    ("vector-threshold-raised", SPECIFIC_WHAT, ADAPTER,
     Signals(hits=6, top_vector=0.72, lexical=0.2, relevant_seqs=(4,)),
     {"strong_vector_score": 0.8}, "hybrid", "moderate"),
    ("holistic-default-threshold", "What are Priya's habits?", ADAPTER, MODERATE, {},
     "parametric", "holistic"),
    ("holistic-threshold-raised", "What are Priya's habits?", ADAPTER, MODERATE,
     {"holistic_threshold": 0.95}, "hybrid", "moderate"),
    ("lexical-threshold", SPECIFIC_WHAT, ADAPTER, Signals(hits=3, top_vector=0.2, lexical=0.7),
     {}, "retrieval", "specific"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_route_table(case):
    _, query, state, signals, overrides, expected, reason = case
    d = decide(query, state, signals, RouterConfig(**overrides))
    assert d.route == expected, d.reasons
    assert reason in d.reasons[0]
    assert d.fallbacks == []
    assert d.adapter == (state.adapter if expected in ("parametric", "hybrid") else None)
    # every signal is recorded for the trace
    for key in ("scope", "top_vector", "lexical", "fresh_hits", "watermark_seq", "forgotten"):
        assert key in d.scores


FALLBACKS = [
    # vLLM down, in-process backend configured: retrieval with the local model
    ("serving-down-local", HOLISTIC, replace(ADAPTER, serving_available=False, local_backend=True),
     MODERATE, "retrieval", ["serving_unreachable:local_backend"], "vLLM unreachable"),
    ("serving-down-local-smalltalk", SMALLTALK,
     replace(ADAPTER, serving_available=False, local_backend=True), WEAK, "none",
     ["serving_unreachable:local_backend"], "small talk"),
    # PostgreSQL down, adapter known: parametric with no retrieval
    ("store-down-adapter", SPECIFIC, replace(ADAPTER, store_available=False), None, "parametric",
     ["store_unreachable"], "PostgreSQL unreachable"),
    ("store-down-smalltalk", SMALLTALK, replace(NO_ADAPTER, store_available=False), None, "none",
     ["store_unreachable"], "PostgreSQL unreachable"),
]


@pytest.mark.parametrize("case", FALLBACKS, ids=[c[0] for c in FALLBACKS])
def test_fallbacks_are_recorded(case):
    _, query, state, signals, expected, fallbacks, reason = case
    d = decide(query, state, signals, RouterConfig())
    assert d.route == expected
    assert d.fallbacks == fallbacks
    assert reason in d.reasons[0]


@pytest.mark.parametrize("state, why", [
    (replace(NO_ADAPTER, store_available=False), "no published adapter"),
    (replace(ADAPTER, store_available=False, forgotten=2), "forgotten"),
    (replace(ADAPTER, store_available=False, serving_available=False, local_backend=True),
     "vLLM"),
])
def test_store_down_without_usable_adapter_is_a_clear_error(state, why):
    with pytest.raises(StoreError, match="PostgreSQL is unreachable") as err:
        decide(SPECIFIC, state, None, RouterConfig())
    assert why in str(err.value) and "RAGTUNE_PG_URI" in str(err.value)


def test_serving_down_without_local_backend_is_a_clear_error():
    with pytest.raises(ServingError, match="vLLM is unreachable") as err:
        decide(SPECIFIC, replace(ADAPTER, serving_available=False), STRONG, RouterConfig())
    assert "RAGTUNE_LOCAL_FALLBACK" in str(err.value)


def test_forgotten_adapter_never_answers_whatever_the_query():
    stale = replace(ADAPTER, forgotten=1)
    for query in (SPECIFIC, HOLISTIC, MIXED, "What do you know about me?"):
        for signals in (STRONG, MODERATE, WEAK, FRESH, Signals()):
            d = decide(query, stale, signals, RouterConfig())
            assert d.route in ("retrieval", "none") and d.adapter is None


def test_fresh_hits_are_counted_against_the_watermark():
    d = decide(MIXED, ADAPTER, FRESH_SECOND, RouterConfig())
    assert d.scores["fresh_hits"] == 1
    assert decide(MIXED, replace(ADAPTER, watermark_seq=200), FRESH_SECOND,
                  RouterConfig()).scores["fresh_hits"] == 0


def test_signals_from_results_skip_echoes_and_non_facts():
    from datetime import datetime, timezone

    from langchain_ragtune.store.types import Memory, SearchResult

    def hit(seq, text, role="human", v=0.6):
        now = datetime.now(timezone.utc)
        m = Memory(id=f"00000000-0000-0000-0000-{seq:012d}", seq=seq, namespace=NS, text=text,
                   speaker="u", role=role, message_id=str(seq), thread_id=None, occurred_at=now,
                   created_at=now, metadata={})
        return SearchResult(memory=m, score=0.1, vector_score=v, keyword_score=0.1)

    results = [
        hit(90, "What is the name of my dog?"),                # the question again: an echo
        hit(80, "Your dog is called Biscuit.", role="ai"),     # an AI answer: not a new fact
        hit(70, "Is Biscuit my dog's name?"),                  # a question: no fact
        hit(20, "My dog is a beagle called Biscuit.", v=0.7),  # the evidence
    ]
    s = Signals.from_results("What is the name of my dog?", results)
    assert s.hits == 3
    assert s.relevant_seqs == (20,)
    assert s.top_vector == pytest.approx(0.7)
    assert s.best_seq == 20 and s.fresh_hits(10) == 1 and s.fresh_hits(20) == 0


def test_decision_round_trips_through_a_dict():
    d = decide(HOLISTIC, ADAPTER, MODERATE, RouterConfig())
    again = RouteDecision.from_dict(d.as_dict())
    assert again.as_dict() == d.as_dict()
    import json

    json.dumps(d.as_dict())  # JSON-able for state and traces


@pytest.mark.parametrize("bad", [
    {"fresh_route": "parametric"}, {"router_policy": "magic"}, {"router_policy": "learned"},
    {"weak_vector_score": 0.9, "strong_vector_score": 0.5}, {"holistic_threshold": 1.5},
    {"k": 0}, {"window": 30}, {"store_retry_s": -1},
])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ConfigError):
        RouterConfig(**bad)


def test_config_reads_environment(monkeypatch):
    monkeypatch.setenv("RAGTUNE_STRONG_VECTOR_SCORE", "0.61")
    monkeypatch.setenv("RAGTUNE_FRESH_ROUTE", "hybrid")
    monkeypatch.setenv("RAGTUNE_PREFER_HYBRID", "no")
    c = RouterConfig.from_env()
    assert (c.strong_vector_score, c.fresh_route, c.prefer_hybrid) == (0.61, "hybrid", False)
    monkeypatch.setenv("RAGTUNE_HOLISTIC_THRESHOLD", "lots")
    with pytest.raises(ConfigError, match="RAGTUNE_HOLISTIC_THRESHOLD"):
        RouterConfig.from_env()


def test_context_keeps_the_best_hits_and_writes_them_last():
    from langchain_ragtune.router.prompts import format_context, user_prompt

    hits = [{"text": f"memory {i} " + "x" * 40, "speaker": "Ann", "message_ids": [f"m{i}"],
             "timestamp": "2024-05-01T10:00:00+00:00"} for i in range(5)]
    line = len("[1 May 2024] Ann: memory 0 " + "x" * 40) + 1
    text, sources = format_context(hits, max_chars=3 * line)
    lines = text.splitlines()
    assert sources == [["m0"], ["m1"], ["m2"]]          # the best three fit the budget
    assert "memory 0" in lines[-1] and "memory 2" in lines[0]  # best last, next to the question
    prompt = user_prompt("retrieval", "Where?", text)
    assert prompt.endswith("Question: Where?") and prompt.index("memory 0") > prompt.index("memory 2")
    assert user_prompt("parametric", "Where?", text) == "Where?"
