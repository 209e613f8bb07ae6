"""The extractive recipes: chunks, topics, entities and the four kinds of drafts."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from langchain_ragtune.distill.extract import (
    TEMPLATE_WORDS,
    broader_drafts,
    chunk_memories,
    digest_drafts,
    extract_entities,
    global_drafts,
    local_drafts,
    resolve_relative_date,
    topic_phrase,
)
from langchain_ragtune.distill.text import grounding


@pytest.fixture(scope="module")
def mems(sample_mems):
    return sample_mems


def test_chunks_never_cross_threads_and_respect_size(make_memory):
    memory = make_memory
    ms = [memory(f"turn number {i} about kites", thread=f"s{i // 5}", seq=i) for i in range(12)]
    chunks = chunk_memories(ms, max_turns=3)
    assert all(len({m.thread_id for m in c.memories}) == 1 for c in chunks)
    assert all(len(c.memories) <= 3 for c in chunks)
    assert [m.seq for c in chunks for m in c.memories] == list(range(12))
    assert chunks[0].render().startswith("[8 May 2023, s0]\nAnn: turn number 0")


def test_topic_phrase_prefers_names_and_skips_small_talk():
    assert topic_phrase("My friend Jo moved to Lisbon.", exclude=["Ann"]) == "Jo"
    assert topic_phrase("Thanks Mel, you too!", exclude=["Melanie"]) is None  # nickname
    assert topic_phrase("Yeah, totally!") is None
    assert topic_phrase("Wait. Pottery classes are relaxing") == "Pottery classes"


def test_relative_dates_resolve_against_the_session_date():
    d = datetime(2023, 5, 8)
    assert resolve_relative_date("I went yesterday", d) == "7 May 2023"
    assert resolve_relative_date("we moved last year", d) == "2022"
    assert resolve_relative_date("last week was busy", d) == "the week before 8 May 2023"


def test_local_drafts_quote_the_turn_with_its_date(mems):
    chunk = chunk_memories(mems)[0]
    drafts = local_drafts(chunk)
    assert drafts, "the first chunk has informative turns"
    d = next(d for d in drafts if "walnut" in d.answer)
    assert d.kind == "local" and d.source_ids == (mems[1].id,)
    assert "Tomas" in d.question and d.meta["origin"] == "extractive"
    variants = sorted(x.variant for x in drafts if x.fact == d.fact)
    assert variants == [0, 1, 2]  # main, paraphrase, temporal
    when = next(x for x in drafts if x.fact == d.fact and x.variant == 2)
    assert when.question.startswith("When did Tomas") and "2024" in when.answer
    assert "the week before" in when.answer  # "last week" resolved
    assert all(grounding(x.answer, x.context + " " + TEMPLATE_WORDS) >= 0.6 for x in drafts)


def test_entities_people_places_and_topics(mems):
    ents = extract_entities(mems)
    by_name = {e.name: e for e in ents}
    assert by_name["Priya"].type == "person" and by_name["Tomas"].type == "person"
    assert "Biscuit" in by_name  # the dog, named in several turns
    assert all(len(e.mentions) >= 2 for e in ents)
    topics = [e for e in ents if e.type == "topic"]
    assert topics and all(getattr(e, "speaker", None) for e in topics)
    desc = by_name["Biscuit"].description()
    assert desc.startswith("Biscuit (") and "2024" in desc


def test_global_broader_digest_are_grounded_and_traceable(mems):
    ents = extract_entities(mems)
    chunks = chunk_memories(mems)
    ids = {m.id for m in mems}
    glob, broad, dig = global_drafts(ents), broader_drafts(chunks, ents), digest_drafts(mems, ents)
    assert glob and broad and dig
    assert any(q.question == "What do you know about Biscuit?" for q in glob)
    assert any(q.question.startswith("How are") for q in glob)  # a relation
    assert any(d.meta["template"] == "summary" for d in dig)
    assert any(d.meta["template"] == "session" and "2024" in d.question for d in dig)
    for d in glob + broad + dig:
        assert set(d.source_ids) <= ids and d.source_ids
        assert grounding(d.answer, d.context + " " + TEMPLATE_WORDS) >= 0.6, d.question
    for d in broad:  # combines two threads
        threads = {m.thread_id for m in mems if m.id in d.source_ids}
        assert len(threads) == 2


def test_digest_covers_span_of_time(make_memory):
    memory = make_memory
    t0 = datetime(2023, 1, 1, tzinfo=timezone.utc)
    ms = [memory(f"I practised the violin for the concert {i}", thread=f"s{i}", seq=i,
                 when=t0 + timedelta(days=30 * i)) for i in range(4)]
    dig = digest_drafts(ms, extract_entities(ms))
    span = next(d for d in dig if d.meta["template"] == "span")
    assert "1 January 2023" in span.answer and "1 April 2023" in span.answer
    assert any(d.meta["template"] == "change" for d in dig)
