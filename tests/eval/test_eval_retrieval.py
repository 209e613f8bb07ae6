"""The retrieval evaluation: harness logic on a fake store, end to end on the real store."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pytest

from langchain_ragtune.errors import InvalidInputError
from langchain_ragtune.eval.harness import ModeAnswer, RecordsFile, run_modes, summarize
from langchain_ragtune.eval.locomo import load_sample, parse_locomo
from langchain_ragtune.eval.retrieval_eval import (
    RetrievalMode,
    format_results,
    run_retrieval_eval,
)

_WORD = re.compile(r"[a-z0-9]+")


@dataclass
class _Mem:
    message_id: str
    text: str
    speaker: str | None
    thread_id: str | None
    occurred_at: datetime


@dataclass
class _Hit:
    memory: _Mem
    context: tuple = ()

    @property
    def message_ids(self):
        return [m.message_id for m in self.context] or [self.memory.message_id]


@dataclass
class FakeStore:
    """The store methods the evaluation uses, with word-overlap search (no database)."""

    data: dict = field(default_factory=dict)
    searches: list = field(default_factory=list)
    adds: int = 0

    def count(self, ns):
        return len(self.data.get(ns, []))

    def forget(self, ns):
        self.data.pop(ns, None)

    def add(self, ns, turns):
        self.adds += 1
        rows = self.data.setdefault(ns, [])
        seen = {m.message_id for m in rows}
        rows.extend(_Mem(t.message_id, t.text, t.speaker, t.thread_id, t.occurred_at)
                    for t in turns if t.message_id not in seen)

    def flush(self):
        return 0

    def search(self, ns, query, *, k, window, mode):
        self.searches.append((ns, query, k, window, mode))
        rows = self.data.get(ns, [])
        q = set(_WORD.findall(query.lower()))
        ranked = sorted(range(len(rows)),
                        key=lambda i: -len(q & set(_WORD.findall(rows[i].text.lower()))))
        hits = []
        for i in ranked[:k]:
            ctx = tuple(m for m in rows[max(0, i - window):i + window + 1]
                        if m.thread_id == rows[i].thread_id) if window else ()
            hits.append(_Hit(rows[i], ctx))
        return hits


def _tiny():
    conv = {"speaker_a": "Ann", "speaker_b": "Bob",
            "session_1_date_time": "9:00 am on 1 June, 2024",
            "session_1": [
                {"speaker": "Ann", "dia_id": "D1:1", "text": "my kite is red"},
                {"speaker": "Bob", "dia_id": "D1:2", "text": "nice weather"},
                {"speaker": "Ann", "dia_id": "D1:3", "text": "the kite flew high"},
            ],
            "session_2_date_time": "9:00 am on 2 June, 2024",
            "session_2": [{"speaker": "Bob", "dia_id": "D2:1", "text": "my boat is blue"}]}
    qa = [
        {"question": "what colour is the kite", "answer": "red", "evidence": ["D1:1"],
         "category": 4},
        {"question": "boat colour", "answer": "blue", "evidence": ["D2:1", "D1:2"], "category": 1},
        {"question": "anything", "answer": "x", "evidence": [], "category": 3},
        {"question": "kite", "answer": "x", "evidence": ["D9:9"], "category": 2},
        {"question": "plane colour", "adversarial_answer": "green", "evidence": ["D2:1"],
         "category": 5},
    ]
    return parse_locomo([{"sample_id": "t1", "conversation": conv, "qa": qa}])


def test_retrieval_mode_on_fake_store_hand_checked():
    store = FakeStore()
    result = run_retrieval_eval(store, _tiny(), k=1, window=0, progress=False)
    retrieval = result["modes"]["retrieval"]
    recall = retrieval["recall_at_k"]
    # q0: top-1 is D1:1 "my kite is red" -> 1.0 ; q1: top-1 is D2:1 (boat) -> 1/2 ;
    # q2 no evidence and q3 unmatched evidence are excluded ; q4 (cat 5): "colour" matches
    # nothing, first row D1:1 wins -> 0.
    assert recall["4"] == 1.0 and recall["1"] == 0.5 and recall["5"] == 0.0
    assert recall["2"] is None and recall["3"] is None
    assert recall["overall"] == pytest.approx(0.75)
    assert recall["all"] == pytest.approx(0.5)
    assert retrieval["recall_n"] == {"overall": 2, "all": 3, "1": 1, "2": 0, "3": 0, "4": 1, "5": 1}
    assert retrieval["excluded"] == {"no_evidence": 1, "unmatched_evidence_only": 1,
                                     "unmatched_evidence_ids": 1}
    assert set(retrieval["latency_ms"]) >= {"p50", "p95"}
    assert "f1" not in retrieval  # retrieval alone produces no answers
    assert store.searches[0] == (("locomo-eval", "t1"), "what colour is the kite", 1, 0, "hybrid")
    meta = result["metadata"]
    assert meta["k"] == 1 and meta["window"] == 0 and meta["n_questions"] == 5
    assert meta["embedding_model"] is None  # the fake has no embeddings
    assert len(result["questions"]) == 5
    json.dumps(result)  # the whole result is JSON-able


def test_window_counts_every_turn_of_a_chunk():
    store = FakeStore()
    result = run_retrieval_eval(store, _tiny(), k=1, window=1, progress=False)
    # q1 ("boat colour") hits D2:1, alone in session 2: the window never crosses sessions.
    by_q = {q["index"]: q for q in result["questions"]}
    assert by_q[1]["retrieved"] == [["D2:1"]] and by_q[1]["recall"] == 0.5
    # q0 hits D1:1, whose window adds D1:2.
    assert by_q[0]["retrieved"] == [["D1:1", "D1:2"]]


def test_prepare_ingests_afresh_unless_reuse():
    store = FakeStore()
    conv = _tiny()[0]
    mode = RetrievalMode(store, k=3, progress=False)
    first = mode.prepare(conv)
    assert first["ingested"] == 4 and not first["reused"]
    assert mode.prepare(conv)["ingested"] == 4 and store.adds == 2  # forgotten, re-ingested
    reuse = RetrievalMode(store, k=3, progress=False, reuse=True)
    assert reuse.prepare(conv)["reused"] and store.adds == 2
    assert store.count(("locomo-eval", "t1")) == 4


def test_records_resume_skips_done_questions(tmp_path):
    store = FakeStore()
    records = tmp_path / "run.jsonl"
    convs = _tiny()
    run_retrieval_eval(store, convs, k=2, records_path=records, progress=False, max_questions=2)
    # A torn last line (the process died while writing) is tolerated.
    with open(records, "a") as fh:
        fh.write('{"kind": "question", "mo')
    with pytest.raises(InvalidInputError, match="other settings"):
        run_retrieval_eval(store, convs, k=5, records_path=records, resume=True, progress=False,
                           max_questions=2)
    n_before = len(store.searches)
    result = run_retrieval_eval(store, convs, k=2, records_path=records, resume=True,
                                progress=False, max_questions=2)
    assert len(store.searches) == n_before  # nothing left to do
    assert result["metadata"]["n_questions"] == 2
    lines = [json.loads(line) for line in records.read_text().splitlines()]
    assert lines[0]["kind"] == "run" and sum(r["kind"] == "question" for r in lines) == 2
    # Without --resume the file starts over.
    run_retrieval_eval(store, convs, k=2, records_path=records, progress=False)
    lines = records.read_text().splitlines()
    assert sum('"kind": "question"' in line for line in lines) == 5


def test_categories_filter():
    result = run_retrieval_eval(FakeStore(), _tiny(), k=2, categories=[4, 1], progress=False)
    assert {q["category"] for q in result["questions"]} == {1, 4}


def test_invalid_settings():
    with pytest.raises(InvalidInputError, match="k=0"):
        RetrievalMode(FakeStore(), k=0)
    with pytest.raises(InvalidInputError, match="window"):
        RetrievalMode(FakeStore(), window=-1)


class _Oracle:
    """A mode that answers perfectly, to check F1 aggregation and the router summary."""

    def __init__(self, name, route=None, wrong=False):
        self.name, self.route, self.wrong = name, route, wrong

    def describe(self):
        return {}

    def prepare(self, conversation):
        return {"turns": conversation.n_turns}

    def answer(self, conversation, question):
        pred = "Not mentioned" if question.category == 5 else question.answer
        if self.wrong:
            pred = "zebra"
        return ModeAnswer(prediction=pred, latency_ms=1.0, memory_tokens=10, route=self.route)


def test_harness_f1_and_router_summary():
    convs = load_sample()
    modes = [_Oracle("parametric", wrong=True), _Oracle("retrieval-reader"),
             _Oracle("routed", route="retrieval-reader")]
    rows = run_modes(convs, modes, progress=False)
    out = summarize(rows)
    assert out["modes"]["retrieval-reader"]["f1"]["overall"] == 1.0
    assert out["modes"]["retrieval-reader"]["f1"]["5"] == 1.0
    assert out["modes"]["parametric"]["f1"]["overall"] == 0.0
    assert out["modes"]["routed"]["memory_tokens"]["mean"] == 10
    assert out["router"]["mix"] == {"retrieval-reader": 1.0}
    assert out["router"]["accuracy_vs_oracle"] == 1.0
    with pytest.raises(InvalidInputError, match="distinct"):
        run_modes(convs, [_Oracle("a"), _Oracle("a")], progress=False)


def test_records_file_rejects_foreign_files(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"hello": 1}\n')
    with pytest.raises(InvalidInputError, match="not a ragtune records file"):
        RecordsFile(p, {}, resume=True)


def test_format_results_dedups_overlapping_windows():
    t = datetime(2024, 3, 3, tzinfo=timezone.utc)
    a, b, c = (_Mem(i, f"text {i}", "Ann", "s1", t) for i in ("D1:1", "D1:2", "D1:3"))
    text = format_results([_Hit(b, (a, b)), _Hit(c, (b, c))])
    assert text == ("[03 March 2024] Ann: text D1:1\n[03 March 2024] Ann: text D1:2\n\n"
                    "[03 March 2024] Ann: text D1:3")


# -- against the real store (PostgreSQL + pgvector; fake embeddings for speed) ----------------

def test_end_to_end_on_shipped_sample(store, tmp_path):
    convs = load_sample()
    result = run_retrieval_eval(store, convs, k=10, window=1, progress=False,
                                records_path=tmp_path / "r.jsonl")
    retrieval = result["modes"]["retrieval"]
    recall = retrieval["recall_at_k"]
    assert set(recall) >= {"overall", "all", "1", "2", "3", "4", "5"}
    # Hash (bag-of-words) embeddings plus keyword search on 60 turns with k=10, window 1:
    # most evidence is found. A broken search, namespace or window would fall far below.
    assert recall["overall"] >= 0.6, recall
    assert retrieval["recall_n"]["all"] == len(convs[0].qa)
    assert retrieval["latency_ms"]["p95"] > 0
    # Every retrieved id is a real turn of the conversation, windows within one session.
    ids = convs[0].dia_ids
    for q in result["questions"]:
        assert len(q["retrieved"]) <= 10
        for item in q["retrieved"]:
            assert set(item) <= ids and len({i.split(":")[0] for i in item}) == 1
    assert store.count(("locomo-eval", "sample-1")) == 60
    # A second run may reuse the ingested namespace, and gives the same numbers.
    again = run_retrieval_eval(store, convs, k=10, window=1, progress=False, reuse=True)
    assert again["modes"]["retrieval"]["prepare"].get("ingested", 0) == 0
    assert again["modes"]["retrieval"]["recall_at_k"] == recall
