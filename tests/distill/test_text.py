"""Pure filters and text helpers of distillation."""

from __future__ import annotations

from datetime import datetime

from hypothesis import given
from hypothesis import strategies as st

from langchain_ragtune.distill.text import (
    answer_recall,
    content_words,
    dedupe_questions,
    format_date,
    grounding,
    length_ok,
    near_duplicate,
    sentences,
    truncate,
)


def test_content_words_drop_chatter_and_stem():
    assert content_words("Oh wow, I'm painting sunrises!") == ["paint", "sunris"]
    assert content_words("yeah totally, thanks!") == []


def test_grounding_measures_support_in_context():
    ctx = "Priya: I started a pottery class on Tuesday evenings."
    assert grounding("Priya started a pottery class.", ctx) == 1.0
    assert grounding("Priya moved to Tokyo for a job.", ctx) < 0.5
    assert grounding("Yes.", ctx) == 0.0  # nothing checkable


def test_answer_recall_ignores_words_given_by_the_question():
    q = "What is the name of Tomas's dog?"
    assert answer_recall("It is Biscuit.", "Tomas's dog is called Biscuit.", ignore=q) == 1.0
    assert answer_recall("Tomas has a dog.", "Tomas's dog is called Biscuit.", ignore=q) == 0.0
    assert answer_recall("anything", "Tomas's dog", ignore=q) == 1.0  # nothing left to find


def test_answer_recall_reads_number_words_as_digits():
    q = "How many legs does a spider have?"
    assert answer_recall("The answer is 8.", "eight", ignore=q) == 1.0
    assert answer_recall("It has eight legs.", "8", ignore=q) == 1.0
    assert answer_recall("It has 6 legs.", "eight", ignore=q) == 0.0
    assert answer_recall("Forty days.", "40 days") == 1.0


def test_near_duplicates_and_dedupe_keep_first():
    assert near_duplicate("What did Ann say about kites?", "what did Ann say about kites ?")
    assert not near_duplicate("What did Ann say about kites?", "When did Ann fly kites?")
    qs = ["Who is Ann?", "who is ann", "Where is Bob?", "WHO IS ANN!", "Where is Bob"]
    assert dedupe_questions(qs) == [0, 2]


def test_paraphrases_are_not_duplicates():
    a = "What did Caroline say about the support group on 8 May 2023?"
    b = "What did Caroline mention about the support group?"
    assert dedupe_questions([a, b]) == [0, 1]


def test_length_bounds_and_truncate():
    assert length_ok("  hello  ", min_chars=5, max_chars=5)
    assert not length_ok("hi", min_chars=3, max_chars=10)
    assert truncate("one two three four", 12) == "one two..."
    assert len(truncate("x" * 50, 20)) <= 20


def test_dates_and_sentences():
    assert format_date(datetime(2023, 10, 2, 9)) == "2 October 2023"
    assert format_date(None) == ""
    assert sentences("I went. It was great! Really?") == ["I went.", "It was great!", "Really?"]


@given(st.text(max_size=200), st.text(max_size=200))
def test_scores_stay_in_unit_interval(a, b):
    assert 0.0 <= grounding(a, b) <= 1.0
    assert 0.0 <= answer_recall(a, b, ignore=a[:10]) <= 1.0


@given(st.lists(st.text(max_size=40), max_size=30))
def test_dedupe_is_idempotent(qs):
    kept = [qs[i] for i in dedupe_questions(qs)]
    assert dedupe_questions(kept) == list(range(len(kept)))
