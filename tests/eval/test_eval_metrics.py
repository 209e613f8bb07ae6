"""Scoring functions against hand-computed cases, including the official scorer's quirks.

Expected values below were worked out by hand from snap-research/LoCoMo
task_eval/evaluation.py (normalise: drop commas, lowercase, drop ASCII punctuation, drop
a/an/the/and, collapse spaces; Porter-stem; token F1).
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from langchain_ragtune.errors import InvalidInputError
from langchain_ragtune.eval.metrics import (
    by_category,
    count_by_category,
    evidence_recall_at_k,
    exact_match,
    is_abstention,
    latency_summary,
    mean,
    multi_answer_f1,
    normalize_answer,
    percentile,
    score_answer,
    token_f1,
)


@pytest.mark.parametrize("raw, expected", [
    ("The Cat, and a Hat!", "cat hat"),
    ("  Hello\tWORLD  ", "hello world"),
    ("1,000", "1000"),                         # commas go first, so numbers stay whole
    ("self-care", "selfcare"),                 # ASCII punctuation is deleted, not spaced
    ("Melanie\u2019s", "melanie\u2019s"),      # non-ASCII punctuation is kept (official quirk)
    ("Andrew and another", "andrew another"),  # only whole words are articles
    ("an apple", "apple"),
    ("", ""),
    (2022, "2022"),
])
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


@pytest.mark.parametrize("pred, gold, expected", [
    ("Biscuit", "Biscuit", 1.0),
    ("Tom and Jerry", "Tom Jerry", 1.0),            # "and" is dropped like an article
    ("adopted", "adoption", 1.0),                   # both stem to "adopt"
    ("a beagle called Biscuit", "Biscuit the beagle", 0.8),  # P=2/3, R=1
    ("running marathons", "she runs a marathon", 0.8),       # P=1, R=2/3
    ("7 May 2023", "7 May, 2023", 1.0),
    ("self-care", "self care", 0.0),                # official quirk: "selfcar" vs "self", "care"
    ("", "", 0.0),                                  # no overlap is 0 even when both are empty
    ("...", "beagle", 0.0),
    ("beagle beagle", "beagle", 2 / 3),             # P=1/2, R=1
])
def test_token_f1(pred, gold, expected):
    assert token_f1(pred, gold) == pytest.approx(expected)


def test_multi_answer_f1_hand_computed():
    # gold parts: "Psychology" -> 1.0 ; "counseling certification" vs best "counseling":
    # P=1, R=1/2 -> 2/3 ; mean = 5/6
    assert multi_answer_f1("Psychology, counseling", "Psychology, counseling certification") \
        == pytest.approx(5 / 6)
    # Order does not matter; a missing part scores 0 for that part.
    assert multi_answer_f1("beach, mountains", "mountains, beach, forest") == pytest.approx(2 / 3)
    # Without commas in the prediction the whole answer is compared with each gold part:
    # "beach mountains" vs "beach" -> P=1/2, R=1 -> 2/3 (twice) ; vs "forest" -> 0.
    assert multi_answer_f1("beach mountains", "mountains, beach, forest") == pytest.approx(4 / 9)
    # An empty gold part (trailing comma) counts as a 0 in the mean, as officially.
    assert multi_answer_f1("beach", "beach,") == pytest.approx(0.5)


def test_score_answer_by_category():
    gold = "Psychology, counseling certification"
    assert score_answer("Psychology, counseling", gold, 1) == pytest.approx(5 / 6)
    # Categories 2 and 4 do not split: "psychology counsel" vs "psychology counsel certif"
    assert score_answer("Psychology, counseling", gold, 4) == pytest.approx(0.8)
    assert score_answer("Psychology, counseling", gold, 2) == pytest.approx(0.8)
    # Category 3 keeps only the gold part before the first ';'.
    assert score_answer("psychology", "psychology; counseling", 3) == 1.0
    assert score_answer("counseling", "psychology; counseling", 3) == 0.0
    assert score_answer(None, "2022", 2) == 0.0
    assert score_answer("2022", 2022, 2) == 1.0
    with pytest.raises(InvalidInputError, match="category 6"):
        score_answer("x", "x", 6)


@pytest.mark.parametrize("pred, expected", [
    ("Not mentioned in the conversation", 1.0),
    ("That is NOT MENTIONED.", 1.0),
    ("No information available", 1.0),
    ("no information available about that", 1.0),
    ("No information.", 0.0),
    ("It was never mentioned", 0.0),
    ("I don't know", 0.0),
    ("self-care is important", 0.0),
    ("", 0.0),
])
def test_category_5_rule(pred, expected):
    assert score_answer(pred, "self-care is important", 5) == expected
    assert is_abstention(pred) is bool(expected)


def test_exact_match_is_token_set_equality():
    assert exact_match("The beagle", "beagle")
    assert exact_match("cat cat", "cat")                  # sets, so repetition is ignored
    assert exact_match("Tom, Jerry", "jerry tom")         # and order too
    assert exact_match("the", "")                         # both normalise to nothing
    assert not exact_match("beagles", "beagle")           # no stemming in exact match
    assert not exact_match("a beagle called Biscuit", "Biscuit")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40), st.text(max_size=40))
def test_f1_properties(a, b):
    f = token_f1(a, b)
    assert 0.0 <= f <= 1.0
    assert f == pytest.approx(token_f1(b, a))
    if normalize_answer(a):
        assert token_f1(a, a) == 1.0


def test_evidence_recall_counts_chunks_for_every_turn():
    retrieved = [["D1:2", "D1:3", "D1:4"], "D7:1", ["D2:1"]]
    r = evidence_recall_at_k(["D1:3", "D2:1"], retrieved, k=3)
    assert r.recall == 1.0 and r.found == ["D1:3", "D2:1"]
    r = evidence_recall_at_k(["D1:3", "D2:1"], retrieved, k=2)
    assert r.recall == 0.5 and r.found == ["D1:3"]
    r = evidence_recall_at_k(["D1:3", "D2:1"], retrieved, k=0)
    assert r.recall == 0.0


def test_evidence_recall_excludes_and_counts_bad_evidence():
    known = {"D1:1", "D1:2", "D1:3"}
    assert evidence_recall_at_k([], ["D1:1"], known_ids=known).excluded
    r = evidence_recall_at_k(["D9:9", "D"], ["D1:1"], known_ids=known)
    assert r.excluded and r.unmatched == ["D9:9", "D"]
    r = evidence_recall_at_k(["D1:1", "D9:9", "D1:1"], ["D1:1"], known_ids=known)
    assert r.recall == 1.0 and r.evidence == ["D1:1"] and r.unmatched == ["D9:9"]
    with pytest.raises(InvalidInputError):
        evidence_recall_at_k(["D1:1"], [], k=-1)


def test_percentiles_match_numpy_linear():
    values = list(range(1, 101))
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 95) == pytest.approx(95.05)
    assert percentile([7.0], 95) == 7.0
    assert percentile([], 50) is None
    with pytest.raises(InvalidInputError):
        percentile(values, 101)
    summary = latency_summary([3.0, 1.0, 2.0])
    assert summary == {"p50": 2.0, "p95": pytest.approx(2.9), "mean": 2.0, "n": 3}


def test_by_category_overall_is_1_2_4_and_skips_excluded():
    records = [
        {"category": 1, "r": 1.0}, {"category": 2, "r": 0.5}, {"category": 4, "r": 0.0},
        {"category": 4, "r": None}, {"category": 3, "r": 0.0}, {"category": 5, "r": 1.0},
    ]
    out = by_category(records, "r")
    assert out["overall"] == pytest.approx(0.5)
    assert out["all"] == pytest.approx(2.5 / 5)
    assert out["4"] == 0.0 and out["3"] == 0.0 and out["5"] == 1.0
    assert count_by_category(records, "r") == {"overall": 3, "all": 5, "1": 1, "2": 1,
                                               "3": 1, "4": 1, "5": 1}
    assert mean([]) is None and math.isclose(mean([1, 2]), 1.5)
