"""The learned routing policy: labels, fit, predict, save/load, and use through decide()."""

from __future__ import annotations

import json

import pytest

from langchain_ragtune.config import RouterConfig
from langchain_ragtune.errors import ConfigError, DatasetError, InvalidInputError
from langchain_ragtune.router.decision import NamespaceState, Signals, decide
from langchain_ragtune.router.learned import (
    fit_policy,
    labels_from_eval_records,
    load_policy,
    read_labels,
)
from langchain_ragtune.router.query import analyze_query
from langchain_ragtune.testing import HashEmbeddings

LABELS = [
    {"question": "When did Ann move to Lisbon?", "route": "retrieval"},
    {"question": "When did Ann start her new job?", "route": "retrieval"},
    {"question": "Where did Ann buy her bike?", "route": "retrieval"},
    {"question": "When did Ann adopt the cat?", "route": "retrieval"},
    {"question": "What kind of person is Ann overall?", "route": "parametric"},
    {"question": "How has Ann changed over the year overall?", "route": "parametric"},
    {"question": "Summarize Ann's year overall", "route": "parametric"},
    {"question": "What kind of friend is Ann overall?", "route": "parametric"},
]


@pytest.fixture(scope="module")
def emb():
    return HashEmbeddings(dim=128)


@pytest.mark.parametrize("method", ["logreg", "knn"])
def test_fit_predicts_its_labels_and_paraphrases(method, emb):
    policy = fit_policy(LABELS, emb, method=method, k=3)
    assert policy.train_accuracy == 1.0
    assert policy.predict_query("When did Ann move to Porto?") == "retrieval"
    assert policy.predict_query("Overall, what kind of person is Ann really?") == "parametric"


@pytest.mark.parametrize("method", ["logreg", "knn"])
def test_save_load_and_use_through_decide(method, emb, tmp_path):
    path = fit_policy(LABELS, emb, method=method, k=3).save(tmp_path / f"{method}.json")
    loaded = load_policy(path, embeddings=emb)
    assert loaded.method == method and loaded.n_train == len(LABELS)
    config = RouterConfig(router_policy="learned", router_policy_path=path)
    state = NamespaceState(namespace=("u",), adapter="u-v1-aaaaaa", watermark_seq=50)
    for query, expected in (("When did Ann move to Porto?", "retrieval"),
                            ("Overall, what kind of person is Ann really?", "parametric")):
        signals = Signals(hits=4, top_vector=0.4, lexical=0.4, relevant_seqs=(3,),
                          query_embedding=emb.embed_query(query))
        d = decide(query, state, signals, config)
        assert d.route == expected and d.policy == "learned"
        assert set(d.scores["learned_probs"]) == {"parametric", "retrieval"}
    # the hard constraints still win over the policy
    stale = NamespaceState(namespace=("u",), adapter="u-v1-aaaaaa", watermark_seq=50, forgotten=1)
    q = "Overall, what kind of person is Ann really?"
    d = decide(q, stale, Signals(query_embedding=emb.embed_query(q)), config)
    assert d.route == "retrieval" and d.policy == "rules"
    assert decide("thanks!", state, Signals(), config).route == "none"


def test_policy_checks_the_embedding_dimension(emb, tmp_path):
    path = fit_policy(LABELS, emb, method="logreg").save(tmp_path / "p.json")
    policy = load_policy(path)
    with pytest.raises(ConfigError, match="128-dimensional"):
        policy.predict_one(analyze_query("x?"), Signals(query_embedding=[0.1] * 64))
    with pytest.raises(ConfigError, match="query_embedding"):
        policy.predict_one(analyze_query("x?"), Signals())


def test_labels_from_eval_records_pick_the_cheapest_best_route():
    def rec(qid, mode, f1, q="q?"):
        return {"kind": "question", "mode": mode, "qid": qid, "question": q, "f1": f1}

    records = [rec("c#1", "retrieval", 0.9), rec("c#1", "parametric", 0.2),
               rec("c#1", "hybrid", 0.9),
               rec("c#2", "retrieval", 0.3), rec("c#2", "parametric", 0.8),
               rec("c#3", "none", 1.0), rec("c#3", "retrieval", 1.0),
               rec("c#4", "retrieval", None),
               {"kind": "question", "mode": "routed", "qid": "c#2", "question": "q?",
                "extra": {"signals": {"top_vector": 0.5}}},
               {"kind": "prepare", "mode": "retrieval"}]
    labels = {row["qid"]: row for row in labels_from_eval_records(records)}
    assert {q: row["route"] for q, row in labels.items()} == {
        "c#1": "retrieval", "c#2": "parametric", "c#3": "none"}
    assert labels["c#2"]["signals"] == {"top_vector": 0.5}
    # within the margin, the cheaper route is enough (parametric is cheaper than retrieval)
    margin = {r["qid"]: r["route"] for r in labels_from_eval_records(records, margin=0.75)}
    assert margin["c#1"] == "parametric"


def test_read_labels_errors_name_the_line(tmp_path):
    p = tmp_path / "labels.jsonl"
    p.write_text('{"question": "a?", "route": "retrieval"}\nnot json\n')
    with pytest.raises(DatasetError, match="line 2"):
        read_labels(p)
    p.write_text('{"question": "a?", "route": "sideways"}\n')
    with pytest.raises(DatasetError, match="sideways"):
        read_labels(p)
    p.write_text("\n")
    with pytest.raises(DatasetError, match="empty"):
        read_labels(p)
    p.write_text("\n".join(json.dumps(row) for row in LABELS))
    assert len(read_labels(p)) == len(LABELS)


def test_fit_rejects_bad_input(emb):
    with pytest.raises(InvalidInputError):
        fit_policy(LABELS[:1], emb)
    with pytest.raises(InvalidInputError):
        fit_policy(LABELS, emb, method="forest")


def test_missing_policy_file_tells_how_to_fit(tmp_path):
    with pytest.raises(ConfigError, match="ragtune router fit"):
        load_policy(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text('{"format": "other"}')
    with pytest.raises(ConfigError, match="not a ragtune router policy"):
        load_policy(tmp_path / "bad.json")


def test_router_fit_command(tmp_path, capsys):
    from langchain_ragtune.cli import main

    labels = tmp_path / "labels.jsonl"
    labels.write_text("\n".join(json.dumps(row) for row in LABELS))
    out = tmp_path / "policy.json"
    code = main(["router", "fit", "--labels", str(labels), "--out", str(out), "--method",
                 "knn", "--embeddings", "hash", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["labels"] == len(LABELS) and result["mix"] == {"retrieval": 4, "parametric": 4}
    assert load_policy(out).method == "knn"
