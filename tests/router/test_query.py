"""Query cues: scope, small talk, general knowledge, personal reference."""

from __future__ import annotations

import pytest

from langchain_ragtune.router.query import analyze_query, content_terms, is_echo


@pytest.mark.parametrize("query", [
    "Overall, what kind of person is Priya?",
    "How has Tomas's running changed over the months?",
    "Summarize what we talked about this year.",
    "What are Melanie's habits and routines?",
    "Tell me everything about Caroline.",
    "In general, what does Priya care about?",
])
def test_holistic_queries(query):
    f = analyze_query(query)
    assert f.scope >= 0.5, f.cues


@pytest.mark.parametrize("query", [
    "When did Tomas adopt Pepper?",
    "What is the name of Priya's dog?",
    "How many races has Tomas run?",
    "In which year did Tomas hurt his back?",
    "Where did I say I was going in May?",
    'Did Melanie read "Nothing is Impossible"?',
])
def test_specific_queries(query):
    assert analyze_query(query).scope <= -0.5, analyze_query(query).cues


@pytest.mark.parametrize("query, smalltalk", [
    ("hi", True), ("Hi Sam!", True), ("thanks so much!", True), ("ok, bye", True),
    ("good morning, how are you today?", True),
    ("hi, what is my dog called?", False), ("Thanks! When is my dentist appointment?", False),
    ("Tomas", False), ("", False),
])
def test_smalltalk(query, smalltalk):
    assert analyze_query(query).smalltalk is smalltalk


@pytest.mark.parametrize("query, general, personal", [
    ("What is the capital of France?", True, False),
    ("Who wrote Hamlet?", True, False),
    ("How do I convert celsius to fahrenheit?", True, False),
    ("What is 17*23?", True, False),
    ("What did I tell you about my sister?", False, True),
    ("Remember the trip to Lisbon?", False, True),
])
def test_general_and_personal(query, general, personal):
    f = analyze_query(query)
    assert (f.general >= 0.8) is general and f.personal is personal


def test_content_terms_and_echo():
    assert content_terms("The dogs were adopted!") == {"dog", "adopt"}
    q = content_terms("When did I adopt my dog?")
    assert is_echo(q, "when did i adopt my dog??")
    assert not is_echo(q, "I adopted my dog Biscuit in March at the shelter downtown.")
    assert not is_echo(frozenset(), "anything")
