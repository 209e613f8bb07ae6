"""The refresh pipeline on a real PostgreSQL, with fake gradient steps and generation.

Faults covered: empty namespace, nothing new, training crash and interruption, gate
rejection, handover failure, forgotten memories, concurrent refreshes, leftover folders.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from langchain_ragtune.distill.dataset import load_examples
from langchain_ragtune.distill.pipeline import DistillConfig
from langchain_ragtune.errors import NamespaceBusyError, TrainingError
from langchain_ragtune.eval.locomo import load_sample, to_turns
from langchain_ragtune.jobs.refresh import refresh
from langchain_ragtune.store.types import Turn
from langchain_ragtune.tuning.gate import GateConfig, adapter_home
from langchain_ragtune.tuning.registry import AdapterRegistry

DCFG = DistillConfig(teacher=None, canaries=2)


def _run(store, ns, model_config, trainer, evaluator, **kw):
    kw.setdefault("publish",
                  lambda rec: AdapterRegistry(store).switch_current(rec.namespace, rec.id))
    return refresh(ns, store=store, distill_config=DCFG, model_config=model_config,
                   trainer=trainer, evaluator=evaluator, **kw)


def _leftovers(model_config, ns) -> list[Path]:
    home = adapter_home(model_config, ns)
    return [p for p in home.iterdir() if p.name.startswith(".tmp-")] if home.exists() else []


@pytest.fixture
def ns(store, request):
    ns = (f"refresh-{request.node.name[:40]}",)
    store.add(ns, to_turns(load_sample()[0]))
    return ns


def test_empty_namespace_has_nothing_to_learn(store, model_config, fake_trainer, fake_evaluator):
    res = _run(store, ("empty-ns",), model_config, fake_trainer, fake_evaluator)
    assert res.status == "nothing_to_learn" and "no live memories" in res.reason


def test_a_history_too_small_trains_no_adapter(store, model_config, fake_trainer,
                                               fake_evaluator):
    """Two facts are not worth a training run: a clear status, no adapter, no version."""
    ns = ("tiny-ns",)
    store.add(ns, [{"text": "I adopted a beagle last week.", "speaker": "Mia"},
                   {"text": "I moved to Porto in May.", "speaker": "Mia"}])
    res = _run(store, ns, model_config, fake_trainer, fake_evaluator)
    assert res.status == "too_small" and res.ok
    assert "min_facts" in res.reason and "RAGTUNE_MIN_FACTS" in res.reason
    assert res.adapter_name is None and AdapterRegistry(store).current(ns) is None
    assert not adapter_home(model_config, ns).exists() or not any(
        adapter_home(model_config, ns).iterdir())
    assert res.adapter_name is None and not fake_trainer.calls
    assert AdapterRegistry(store).list(("empty-ns",)) == []


def test_publish_then_up_to_date_then_continue(store, ns, model_config, fake_trainer,
                                               fake_evaluator):
    reg = AdapterRegistry(store)
    res = _run(store, ns, model_config, fake_trainer, fake_evaluator)
    assert res.status == "published", res.reason
    assert res.version == 1 and res.mode == "retrain" and res.current == res.adapter_name
    d = res.as_dict()
    assert {"namespace", "status", "version", "adapter_name", "examples", "metrics"} <= set(d)
    assert set(d["examples"]) == {"local", "global", "digest"}
    assert d["metrics"]["closed_book_before"] == 0.1 and d["metrics"]["closed_book_after"] == 0.8
    cur = reg.current(ns)
    assert cur.name == res.adapter_name and cur.status == "serving"
    assert cur.watermark_seq == store.max_seq(ns) and Path(cur.path).is_dir()
    assert cur.metrics["canaries"], "the canaries the adapter answered are published"
    assert all(c["margin"] == 5.0 for c in cur.metrics["canaries"])
    assert cur.metrics["canaries_unsteady"] == []
    # their leads were measured up to the expected text, on the bare question
    [asked] = fake_evaluator.margin_calls
    assert [q for q, _ in asked] == [c["question"] for c in cur.metrics["canaries"]]
    assert all(a.casefold().endswith(c["expected"].casefold())
               for (_, a), c in zip(asked, cur.metrics["canaries"]))
    assert not _leftovers(model_config, ns)

    again = _run(store, ns, model_config, fake_trainer, fake_evaluator)
    assert again.status == "up_to_date" and len(fake_trainer.calls) == 1

    store.add(ns, [Turn(text="I signed up for a half marathon in Porto next spring.",
                        speaker="Priya", thread_id="sample-1/session_5")])
    res2 = _run(store, ns, model_config, fake_trainer, fake_evaluator)
    assert res2.status == "published" and res2.version == 2 and res2.mode == "continue"
    assert fake_trainer.calls[-1]["init_adapter"] == cur.path
    assert reg.get(cur.name).status == "retired"
    trained = fake_trainer.calls[-1]["examples"]
    assert any("Porto" in e.answer for e in trained)  # the new memory
    assert len(trained) < len(fake_trainer.calls[0]["examples"])  # new + replay, not all


def test_every_trained_fact_is_asked_not_a_sample(store, ns, model_config, fake_trainer,
                                                  fake_evaluator):
    """Trained-fact recall is over all the facts (up to ``eval_max_facts``), whatever the
    held-out sample's size: a sample of 48 of 115 facts read 0.875 where all read 0.765."""
    res = _run(store, ns, model_config, fake_trainer, fake_evaluator,
               gate_config=GateConfig(eval_max_questions=3))
    m = res.metrics
    assert m["heldout_questions"] == 3
    assert m["trained_fact_questions"] == m["facts"] > 3
    res = _run(store, ns, model_config, fake_trainer, fake_evaluator, force=True,
               gate_config=GateConfig(eval_max_facts=4))
    assert res.metrics["trained_fact_questions"] == 4


def test_a_quiet_refresh_trains_without_the_progress_bar(store, ns, model_config, make_trainer,
                                                        fake_evaluator):
    from langchain_ragtune.tuning.train import TrainConfig

    for progress in (False, True):
        trainer = make_trainer()
        res = _run(store, ns, model_config, trainer, fake_evaluator, force=True,
                   progress=progress, train_config=TrainConfig(progress=True))
        assert res.status == "published", res.reason
        # --no-progress / --quiet reach the trainer's own bar, not only the refresh's lines
        assert trainer.calls[0]["config"].progress is progress


def test_training_crash_keeps_previous_version(store, ns, model_config, fake_trainer,
                                               fake_evaluator, make_trainer):
    reg = AdapterRegistry(store)
    first = _run(store, ns, model_config, fake_trainer, fake_evaluator)
    store.add(ns, [Turn(text="We repainted the workshop door bright orange.", speaker="Tomas",
                        thread_id="sample-1/session_5")])
    crash = make_trainer(crash=TrainingError("CUDA error: device lost at step 7"))
    res = _run(store, ns, model_config, crash, fake_evaluator)
    assert res.status == "failed" and "step 7" in res.reason
    assert reg.current(ns).name == first.adapter_name
    assert [r.version for r in reg.list(ns)] == [1]  # nothing half-written registered
    assert not _leftovers(model_config, ns)

    # A hard interruption (Ctrl-C, SIGTERM turned into an exception) propagates, but cleans up
    # and releases the lock.
    with pytest.raises(KeyboardInterrupt):
        _run(store, ns, model_config, make_trainer(crash=KeyboardInterrupt()), fake_evaluator)
    assert not _leftovers(model_config, ns) and [r.version for r in reg.list(ns)] == [1]
    ok = _run(store, ns, model_config, fake_trainer, fake_evaluator)
    assert ok.status == "published" and ok.version == 2


def test_gate_rejection_keeps_previous_version(store, ns, model_config, fake_trainer,
                                               fake_evaluator, make_evaluator):
    reg = AdapterRegistry(store)
    first = _run(store, ns, model_config, fake_trainer, fake_evaluator)
    store.add(ns, [Turn(text="My octopus study got accepted by a journal.", speaker="Priya",
                        thread_id="sample-1/session_5")])
    worse = make_evaluator(before=0.8, after=0.3)
    res = _run(store, ns, model_config, fake_trainer, worse,
               gate_config=GateConfig(gate_tolerance=0.05))
    assert res.status == "rejected" and "fell from 0.800 to 0.300" in res.reason
    assert reg.current(ns).name == first.adapter_name
    rejected = reg.get(res.adapter_name)
    assert rejected.status == "rejected" and rejected.reason == res.reason
    # The watermark did not move: the next refresh tries again.
    retry = _run(store, ns, model_config, fake_trainer, fake_evaluator)
    assert retry.status == "published"


def test_an_adapter_that_forgot_general_knowledge_is_rejected(store, ns, model_config,
                                                               fake_trainer, make_evaluator):
    store.add(ns, [Turn(text="I bought a red kayak for the summer.", speaker="Tomas",
                        thread_id="sample-1/session_6")])
    res = _run(store, ns, model_config, fake_trainer, make_evaluator(general_kept=0.5),
               gate_config=GateConfig(gate_tolerance=0.05))
    assert res.status == "rejected" and "general_kept is 0.500, below the floor 0.9" in res.reason
    assert res.metrics["general_kept"] == 0.5 and res.metrics["trained_fact_recall"] == 0.8


def test_near_tie_canaries_are_not_published(store, ns, model_config, fake_trainer,
                                             make_evaluator):
    """Answered right, but by a lead vLLM's bfloat16 can flip: the adapter is published
    (the gate's score counts them), its canaries are not, so the publisher checks only that
    it generates, instead of rejecting a good adapter."""
    res = _run(store, ns, model_config, fake_trainer, make_evaluator(margin=0.3),
               gate_config=GateConfig(canary_min_margin=0.5))
    assert res.status == "published", res.reason
    m = AdapterRegistry(store).current(ns).metrics
    assert m["canaries_missed"] == [] and m["canaries"] == []
    assert len(m["canaries_unsteady"]) == 2
    assert all(u["margin"] == 0.3 and u["question"] for u in m["canaries_unsteady"])
    assert res.as_dict()["metrics"]["canaries_unsteady"] == m["canaries_unsteady"]


def test_handover_failure_and_no_handover(store, ns, model_config, fake_trainer, fake_evaluator):
    reg = AdapterRegistry(store)

    def broken(rec):
        raise ConnectionError("vLLM at http://127.0.0.1:8765 refused the connection")

    res = _run(store, ns, model_config, fake_trainer, fake_evaluator, publish=broken)
    assert res.status == "failed" and "refused" in res.reason
    assert reg.current(ns) is None and reg.get(res.adapter_name).status == "failed"
    ready = _run(store, ns, model_config, fake_trainer, fake_evaluator, publish=None, force=True)
    assert ready.status == "ready" and reg.get(ready.adapter_name).status == "ready"
    assert reg.current(ns) is None


def test_forgotten_memories_force_a_retrain_without_them(store, ns, model_config, fake_trainer,
                                                         fake_evaluator):
    _run(store, ns, model_config, fake_trainer, fake_evaluator)
    victim = next(m for m in store.list(ns) if "Biscuit" in m.text)
    store.delete(ns, [victim.id])
    res = _run(store, ns, model_config, fake_trainer, fake_evaluator)
    assert res.status == "published" and res.mode == "retrain"
    assert fake_trainer.calls[-1]["init_adapter"] is None  # not continued from the old weights
    for e in load_examples(store, res.dataset_id):
        assert victim.id not in e.source_ids


def test_concurrent_refreshes_one_runs_one_is_busy(store, ns, model_config, make_trainer,
                                                   fake_evaluator):
    slow = make_trainer(delay=2.0)
    results = {}

    def first():
        results["a"] = _run(store, ns, model_config, slow, fake_evaluator)

    t = threading.Thread(target=first)
    t.start()
    assert slow.started.wait(30)
    results["b"] = _run(store, ns, model_config, make_trainer(), fake_evaluator)
    with pytest.raises(NamespaceBusyError):
        _run(store, ns, model_config, make_trainer(), fake_evaluator, raise_busy=True)
    t.join()
    assert results["a"].status == "published"
    assert results["b"].status == "busy" and "another process" in results["b"].reason


def test_leftover_folders_are_cleaned_up(store, ns, model_config, fake_trainer, fake_evaluator):
    home = adapter_home(model_config, ns)
    (home / ".tmp-crashed-run").mkdir(parents=True)
    (home / "unregistered-v9-abcdef").mkdir()
    res = _run(store, ns, model_config, fake_trainer, fake_evaluator)
    assert res.status == "published"
    assert sorted(p.name for p in home.iterdir()) == [res.adapter_name]


def test_a_continued_refresh_replays_general_prompts_in_the_full_runs_share(
        store, ns, model_config, fake_trainer, fake_evaluator):
    """A continued refresh trains a fraction of a full run's examples; the general prompts
    replayed against forgetting shrink with it instead of staying at the full count."""
    from langchain_ragtune.tuning.gate import continued_replay
    from langchain_ragtune.tuning.train import TrainConfig

    class AnsweringEvaluator(type(fake_evaluator)):
        def answer(self, questions, **kwargs):  # the base model's greedy answers
            return ["It is a well known fact, stated plainly."] * len(questions)

    evaluator = AnsweringEvaluator()
    config = TrainConfig(general_replay=40)

    def replayed(call):
        return [e for e in call["examples"] if e.meta.get("replay") == "general"]

    first = _run(store, ns, model_config, fake_trainer, evaluator, train_config=config)
    assert first.status == "published", first.reason
    full = fake_trainer.calls[0]
    assert len(replayed(full)) == 40 == first.metrics["general_replay"]
    store.add(ns, [Turn(text="I signed up for a half marathon in Porto next spring.",
                        speaker="Priya", thread_id="sample-1/session_5")])
    res = _run(store, ns, model_config, fake_trainer, evaluator, train_config=config)
    assert res.mode == "continue", res.reason
    call = fake_trainer.calls[-1]
    n_train = len(call["examples"]) - len(replayed(call))
    n_full = len(full["examples"]) - 40
    assert n_train < n_full
    assert len(replayed(call)) == continued_replay(40, n_train, first.metrics) \
        == res.metrics["general_replay"] == -(-40 * n_train // n_full)
    assert 0 < len(replayed(call)) < 40
    # A retrain replays the full count again.
    again = _run(store, ns, model_config, fake_trainer, evaluator, train_config=config,
                 force=True, mode="retrain")
    assert len(replayed(fake_trainer.calls[-1])) == 40 == again.metrics["general_replay"]
