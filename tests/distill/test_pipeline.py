"""Distillation end to end on a real PostgreSQL: datasets, provenance, splits, canaries."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from langchain_core.language_models import FakeListChatModel

from langchain_ragtune.distill.dataset import (
    export_jsonl,
    latest_dataset,
    list_datasets,
    load_examples,
    read_jsonl,
)
from langchain_ragtune.distill.pipeline import DistillConfig, distill
from langchain_ragtune.errors import ConfigError, DatasetError
from langchain_ragtune.eval.locomo import load_sample, to_turns
from langchain_ragtune.store.types import Turn

CFG = DistillConfig(teacher=None, canaries=3)


@pytest.fixture(scope="module")
def ns(store):
    ns = ("distill-sample",)
    store.add(ns, to_turns(load_sample()[0]))
    return ns


def test_config_validates():
    with pytest.raises(ConfigError, match="kinds"):
        DistillConfig(kinds=("local", "bogus"))
    with pytest.raises(ConfigError, match="heldout_fraction"):
        DistillConfig(heldout_fraction=1.5)


def test_distill_stores_a_versioned_dataset_with_every_kind(store, ns):
    result = distill(ns, store=store, config=CFG)
    ds = result.dataset
    assert ds is not None and ds.version == 1 and ds.namespace == ns
    assert ds.watermark_seq == store.max_seq(ns)
    assert set(result.stats["examples"]) == {"local", "global", "digest"}
    assert result.stats["train"] > 50 and result.stats["heldout"] > 0
    # Facts, not quotes: short answers, in several forms, each with a held-out paraphrase
    # whose template no training question uses, and one probe.
    local = [e for e in result.examples if e.kind == "local"]
    assert max(len(e.answer.split()) for e in local if e.meta["template"] != "fact_what"
               or not e.answer.endswith(".")) <= 20
    held_templates = {e.question.split(" ")[0:3] == ["Do", "you", "recall"]
                      or e.question.startswith("Can you remind me")
                      for e in local if e.split == "heldout"}
    assert held_templates == {True}
    assert not any(e.question.startswith(("Do you recall", "Can you remind me"))
                   for e in local if e.split == "train")
    probes = [e for e in local if e.meta.get("probe")]
    assert len(probes) == len({e.meta["fact"] for e in local})
    assert 0 <= result.stats["rejection_rate"] < 0.5
    assert len(result.stats["canaries"]) == 3 and result.stats["sample"]
    stored = load_examples(store, ds.id)
    assert len(stored) == len(result.examples)
    assert {e.split for e in stored} == {"train", "heldout"}
    # Dates are in the data: temporal questions can be learned.
    assert any(e.question.startswith("When did") and "2024" in e.answer for e in stored)
    # Every held-out fact is also taught through another phrasing.
    train_facts = {e.meta["fact"] for e in stored if e.split == "train"}
    assert all(e.meta["fact"] in train_facts for e in stored if e.split == "heldout")
    # Provenance points at live memories of this namespace only.
    live = {m.id for m in store.list(ns)}
    assert all(e.source_ids and set(e.source_ids) <= live for e in stored)
    msgs = stored[0].messages
    assert [m["role"] for m in msgs] == ["system", "user", "assistant"]


def test_jsonl_round_trip(store, ns, tmp_path):
    ds = latest_dataset(store, ns)
    examples = load_examples(store, ds.id)
    path = tmp_path / "out" / "data.jsonl"
    assert export_jsonl(examples, path) == len(examples)
    first = json.loads(path.read_text().splitlines()[0])
    assert set(first) == {"messages", "kind", "split", "source_ids", "meta"}
    assert read_jsonl(path) == examples
    (tmp_path / "bad.jsonl").write_text('{"messages": []}\n')
    with pytest.raises(DatasetError):
        read_jsonl(tmp_path / "bad.jsonl")


def test_deleted_and_expired_memories_are_absent_by_provenance(store, ns):
    victim = next(m for m in store.list(ns) if "walnut" in m.text)
    store.delete(ns, [victim.id])
    past = datetime.now(timezone.utc) - timedelta(seconds=1)
    (expired_id,) = store.add(ns, [Turn(text="My secret locker code at the gym is 4417.",
                                        speaker="Tomas", thread_id="sample-1/session_9",
                                        expires_at=past)])
    result = distill(ns, store=store, config=CFG, after_seq=0)
    for e in result.examples:
        assert victim.id not in e.source_ids and expired_id not in e.source_ids
        assert "walnut" not in e.answer and "4417" not in e.answer
    assert result.dataset.version == 2


def test_watermark_limits_input_and_canaries_carry_over(store, ns):
    prev = latest_dataset(store, ns)
    old_canaries = {e.question for e in load_examples(store, prev.id) if e.meta.get("canary")}
    mark = store.max_seq(ns)
    store.add(ns, [Turn(text="I just booked a sailing trip to the Azores for September.",
                        speaker="Priya", thread_id="sample-1/session_10",
                        occurred_at="2024-07-01T10:00:00+00:00")])
    result = distill(ns, store=store, config=CFG, after_seq=mark)
    assert result.stats["input"]["new"] == 1
    assert 0 < result.stats["input"]["replay"] <= 8 + CFG.chunk_turns
    assert any("Azores" in e.answer for e in result.examples if e.kind == "local")
    now = {e.question for e in result.examples if e.meta.get("canary")}
    assert old_canaries <= now
    assert [d.version for d in list_datasets(store, ns)] == [1, 2, 3]
    # every fact taught before comes back once (its probe), so the continued adapter keeps it
    old_facts = {e.meta["fact"] for e in load_examples(store, prev.id, split="train")
                 if e.meta.get("probe")}
    train = [e for e in result.examples if e.split == "train"]
    assert old_facts and old_facts <= {e.meta.get("fact") for e in train}
    replayed = [e for e in train if e.meta.get("replayed_fact")]
    assert result.stats["replayed_facts"] == len(replayed) > 0
    assert len({e.meta["fact"] for e in replayed}) == len(replayed)  # one question per fact
    # a replayed fact whose memory was forgotten is not taught again
    gone = replayed[0]
    store.delete(ns, list(gone.source_ids))
    again = distill(ns, store=store, config=CFG, after_seq=mark, save=False)
    assert gone.meta["fact"] not in {e.meta.get("fact") for e in again.examples}
    off = distill(ns, store=store, config=DistillConfig(teacher=None, canaries=3,
                                                        replay_facts=False),
                  after_seq=mark, save=False)
    assert off.stats["replayed_facts"] == 0


def test_junk_teacher_is_counted_and_grounded_teacher_pairs_kept(store, ns):
    # The chunk with the new memory goes first: junk, then (retry) a good and a made-up
    # pair; the replayed chunks get junk only.
    replies = ["total junk",
               '[{"question": "Where is Priya sailing in September?", "answer": "Priya is '
               'sailing to the Azores."}, {"question": "Who won the 1998 World Cup?", '
               '"answer": "France won the 1998 football World Cup in Paris."}]',
               "{not json", "I cannot do that"]
    teacher = FakeListChatModel(responses=replies + ["junk"] * 10)
    cfg = DistillConfig(teacher=None, teacher_max_chunks=3, teacher_retries=1, canaries=2)
    result = distill(ns, store=store, config=cfg, teacher=teacher, after_seq=store.max_seq(ns) - 1)
    stats = result.stats
    assert stats["teacher"]["unparsable"] >= 2 and stats["teacher"]["calls"] >= 3
    assert stats["rejected"].get("ungrounded", 0) >= 1  # the World Cup answer
    teacher_examples = [e for e in result.examples if e.meta.get("origin") == "teacher"]
    assert any("Azores" in e.answer for e in teacher_examples)
    assert not any("World Cup" in e.question for e in result.examples)


def test_max_examples_caps_training_data_but_keeps_canaries(store, ns):
    result = distill(ns, store=store, config=DistillConfig(teacher=None, max_examples=30,
                                                           canaries=3), save=False)
    assert result.dataset is None
    assert len(result.train) <= 34 and len(result.canaries) == 3
    assert {e.kind for e in result.train} == {"local", "global", "digest"}


def test_broader_kind_is_opt_in(store, ns):
    result = distill(ns, store=store, config=DistillConfig(teacher=None, kinds=(
        "local", "broader")), save=False)
    assert {e.kind for e in result.train} == {"local", "broader"}


def test_empty_namespace_distills_nothing(store):
    result = distill(("nobody-here",), store=store, config=CFG)
    assert result.examples == [] and result.dataset is None


def test_capping_keeps_held_out_facts_taught(store, ns):
    result = distill(ns, store=store, config=DistillConfig(teacher=None, max_examples=40,
                                                           heldout_fraction=0.3), save=False)
    taught = {e.meta["fact"] for e in result.train}
    assert result.heldout and all(e.meta["fact"] in taught for e in result.heldout)
    assert len(result.train) <= 40
