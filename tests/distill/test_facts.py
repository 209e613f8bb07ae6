"""Atomic facts out of chat turns, and the question forms that teach and measure them (pure)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from langchain_ragtune.distill.facts import (
    extract_facts,
    fact_drafts,
    fact_questions,
    heldout_questions,
)
from langchain_ragtune.eval.locomo import load_sample, to_turns

WHEN = datetime(2023, 5, 8, 13, 56, tzinfo=timezone.utc)


@pytest.mark.parametrize("text, statement", [
    ("I went to a LGBTQ support group yesterday and it was so powerful.",
     "Caroline went to a LGBTQ support group on 7 May 2023."),
    ("I just booked a sailing trip to the Azores!",
     "Caroline booked a sailing trip to the Azores on 8 May 2023."),
    ("I'm learning the piano these days.", "Caroline is learning the piano."),
    ("My goal is to give kids a loving home.", "Caroline's goal is to give kids a loving home."),
    ("Yeah, I painted that lake sunrise last year!", "Caroline painted that lake sunrise in 2022."),
    ("We went camping with the kids last week.",
     "Caroline went camping with the kids during the week before 8 May 2023."),
    ("Researching adoption agencies - it's been a dream.",
     "Caroline is researching adoption agencies."),
    ("I love my new bike.", "Caroline loves Caroline's new bike."),
])
def test_first_person_clauses_become_third_person_dated_facts(text, statement):
    facts = extract_facts(text, speaker="Caroline", when=WHEN, source_id="m1")
    assert [f.statement for f in facts] == [statement]
    assert facts[0].source_id == "m1"


@pytest.mark.parametrize("text", [
    "How are you?",                        # a question states nothing
    "Wow, that's so cool!",                # a reaction
    "I think so too.",                     # talk about talking
    "I loved it.",                         # an object that says nothing
    "I saw your painting.",                # about the listener
])
def test_no_fact_from_chit_chat(text):
    assert extract_facts(text, speaker="Ann", when=WHEN) == []


def test_forms_ask_the_object_in_several_phrasings_and_both_directions():
    (f,) = extract_facts("I adopted a beagle called Toby yesterday.", speaker="Ann", when=WHEN)
    forms = dict(fact_questions(f))
    assert forms["What did Ann adopt?"] == "a beagle called Toby"
    assert forms["Tell me what Ann adopted."] == "a beagle called Toby"
    assert forms["When did Ann adopt a beagle called Toby?"] == "7 May 2023"
    assert forms["Who adopted a beagle called Toby?"] == "Ann"
    assert forms["What happened with Ann on 7 May 2023?"] == f.statement


def test_held_out_forms_share_no_template_with_training_forms():
    turns = to_turns(load_sample()[0])
    facts = [f for t in turns for f in extract_facts(t.text, speaker=t.speaker,
                                                     when=t.occurred_at)]
    assert len(facts) >= 20
    train_openers = {" ".join(q.split()[:2]) for f in facts for q, _ in fact_questions(f)}
    held_openers = {" ".join(q.split()[:2]) for f in facts for q, _ in heldout_questions(f)}
    assert train_openers.isdisjoint(held_openers)
    # Each held-out question asks for the object it was trained with, never giving it away.
    for f in facts:
        (q, a), = heldout_questions(f)
        assert a == f.obj and f.obj.lower() not in q.lower()


def test_drafts_give_every_fact_one_unique_probe_and_one_held_out_form():
    facts = extract_facts("I made a vase on Monday. I made a bowl yesterday.", speaker="Mel",
                          when=WHEN)
    drafts = fact_drafts(facts)
    probes = [d for d in drafts if d.meta.get("probe")]
    assert len(probes) == 2 and len({d.question for d in probes}) == 2
    # "What did Mel make?" is shared, so the probes are the dated forms.
    assert all("on " in d.question for d in probes)
    held = [d for d in drafts if d.meta.get("heldout_form")]
    assert len(held) == 2 and {d.fact for d in held} == {f.key for f in facts}
