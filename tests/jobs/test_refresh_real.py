"""Real training, real evaluation, a real crash: the refresh path with nothing faked.

Kept small for the 2-core CI box: a dozen turns, a few dozen optimizer steps.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading

import pytest

from langchain_ragtune.distill.pipeline import DistillConfig, distill
from langchain_ragtune.jobs.refresh import refresh
from langchain_ragtune.store.types import Turn
from langchain_ragtune.tuning.gate import GateConfig, adapter_home
from langchain_ragtune.tuning.registry import AdapterRegistry
from langchain_ragtune.tuning.train import TrainConfig

pytestmark = [pytest.mark.slow, pytest.mark.train]

TURNS = [
    ("Quillon", "s1", "2024-02-01T10:00:00+00:00",
     "I adopted a grey parrot and named him Captain Fig."),
    ("Maren", "s1", "2024-02-01T10:01:00+00:00", "Captain Fig is a great name for a parrot!"),
    ("Quillon", "s1", "2024-02-01T10:02:00+00:00",
     "My sister Odalys lives in Tromso and repairs violins."),
    ("Quillon", "s2", "2024-03-05T18:00:00+00:00",
     "I finished knitting a blue scarf for the Tromso winter."),
    ("Maren", "s2", "2024-03-05T18:01:00+00:00",
     "I signed up for a pottery course on Thursday evenings."),
    ("Quillon", "s2", "2024-03-05T18:02:00+00:00",
     "Captain Fig learned to whistle the opening of a sea shanty."),
]


@pytest.fixture
def tiny_ns(store, request):
    ns = (f"real-{request.node.name[:30]}",)
    store.add(ns, [Turn(text=t, speaker=s, thread_id=th, occurred_at=at)
                   for s, th, at, t in TURNS])
    return ns


@pytest.mark.vllm
def test_real_refresh_trains_publishes_and_remembers(store, tiny_ns, model_config, vllm_server):
    from fixtures_vllm import vllm_test_config

    from langchain_ragtune.serving.client import VLLMAdminClient
    from langchain_ragtune.serving.publisher import Publisher

    reg = AdapterRegistry(store)
    publisher = Publisher(reg, endpoints=[vllm_server.url], config=vllm_test_config(),
                          base_model_path=model_config.base_model, min_drain_s=0.0)
    published = []
    res = refresh(tiny_ns, store=store, model_config=model_config,
                  distill_config=DistillConfig(teacher=None, canaries=3, heldout_fraction=0.3),
                  train_config=TrainConfig(max_steps=30, batch_size=1, learning_rate=2e-3,
                                           max_seq_len=192, progress=False),
                  # This test is the publish path's; the general-knowledge floor is the
                  # gate's (tests/tuning/test_gate.py) and measured in docs/benchmarks.md:
                  # 30 steps over 60 turns forget general answers (kept 0.73 here, 12-07).
                  gate_config=GateConfig(eval_max_questions=6, eval_max_facts=6,
                                         eval_max_new_tokens=40, general_min_kept=0.0),
                  publish=lambda rec: published.append(publisher.publish(rec)))
    assert res.status == "published", res.reason
    assert res.metrics["general_kept"] is not None and res.metrics["trained_fact_recall"]
    cur = reg.current(tiny_ns)
    assert cur.name == res.adapter_name and cur.metrics["steps"] == 30
    m = res.metrics
    assert m["closed_book_after"] >= m["closed_book_before"]
    # The gate's canary score is greedy recall, which for a 135M model after 30 steps is
    # close to a coin flip per canary: 3 canaries, 14 draws here and in CI (2026-12-02):
    # 0/3 once (a CI run), 1/3 to 3/3 otherwise. So the test checks the score's bookkeeping
    # here, and that the canaries were learned by their likelihood below.
    n_canaries = len(m["canaries_missed"]) + round(3 * m["canary_after"])
    assert n_canaries == 3 and m["canary_after"] >= m["canary_before"], m
    # Published canaries are those the adapter answers right by plain greedy decoding of the
    # bare question (what the serving side asks), with that answer recorded: 0 to 3 of them
    # in those draws. With none, the publisher only checks that the adapter generates.
    assert all(c["expected"].casefold() in c["answer"].casefold() for c in m["canaries"])
    # Published on the real vLLM server: its canaries (greedy answers of the in-process
    # float32 model) passed there too, scored where vLLM's greedy path agrees with them.
    [pub] = published
    assert pub.canaries and all(c.ok for c in pub.canaries), pub.canaries
    assert len(pub.canaries) == max(1, len(m["canaries"]))
    print("pipeline canaries checked by:", [c.method for c in pub.canaries])
    with VLLMAdminClient(vllm_server.url) as client:
        assert cur.name in client.adapters()
        client.unload_adapter(cur.name)

    from langchain_ragtune.distill.dataset import load_examples
    from langchain_ragtune.tuning.evaluate import AdapterEvaluator

    # The weights hold the trained memories: every trained local answer is far likelier with
    # the adapter than without. Teacher-forced, so it does not hang on greedy decoding's
    # choice between neighbouring turns. 6 draws here (2026-12-02): mean per-token negative
    # log-likelihood 1.95-2.02 with the base model, 0.04-0.06 with the adapter.
    ev = AdapterEvaluator(model_config.base_model, max_new_tokens=40)
    trained = load_examples(store, res.dataset_id, split="train")
    qa = [(e.question, e.answer) for e in trained if e.kind == "local"]
    assert qa
    base_nll, tuned_nll = ev.answer_nll(qa), ev.answer_nll(qa, adapter=cur.path)
    assert all(t < b for t, b in zip(tuned_nll, base_nll)), list(zip(qa, base_nll, tuned_nll))
    assert sum(tuned_nll) < 0.25 * sum(base_nll), (sum(base_nll), sum(tuned_nll))
    # The canaries among them, each: 1.9-2.4 with the base model, 0.008-0.11 tuned (6 draws).
    canaries = [(e.question, e.answer) for e in trained if e.meta.get("canary")]
    assert len(canaries) == 3
    for pair, b, t in zip(canaries, ev.answer_nll(canaries),
                          ev.answer_nll(canaries, adapter=cur.path)):
        assert t < 0.25 * b, (pair, b, t)
    # And it answers from them closed-book: asked a trained fact, the adapter states it and
    # the base model does not know it.
    q = "What did Quillon adopt?"
    base, tuned = ev.answer([q])[0], ev.answer([q], adapter=cur.path)[0]
    assert "grey parrot" in tuned.lower(), tuned
    assert "parrot" not in base.lower(), base

def test_training_killed_mid_run_leaves_previous_version(store, tiny_ns, pg_uri, model_config,
                                                         tmp_path):
    """SIGKILL the trainer process mid-training: nothing half-written is registered."""
    reg = AdapterRegistry(store)
    distill(tiny_ns, store=store, config=DistillConfig(teacher=None))
    before = [r.version for r in reg.list(tiny_ns)]
    env = {**os.environ, "RAGTUNE_PG_URI": pg_uri, "RAGTUNE_SCHEMA": store.schema,
           "RAGTUNE_HOME": str(model_config.home), "RAGTUNE_BASE_MODEL": model_config.base_model}
    proc = subprocess.Popen([sys.executable, "-m", "langchain_ragtune.cli", "train",
                             "--namespace", tiny_ns[0], "--max-steps", "500", "--batch-size", "2"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen = threading.Event()

    def watch():
        buf = ""
        while True:
            ch = proc.stderr.read(1)
            if not ch:
                return
            buf = (buf + ch)[-200:]
            if re.search(r"\b[3-9]/500\b", buf):  # the trainer's progress bar is moving
                seen.set()

    threading.Thread(target=watch, daemon=True).start()
    try:
        assert seen.wait(240), "training never started"
        home = adapter_home(model_config, tiny_ns)
        assert any(p.name.startswith(".tmp-") for p in home.iterdir())
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert [r.version for r in reg.list(tiny_ns)] == before  # nothing registered
    assert reg.current(tiny_ns) is None or reg.current(tiny_ns).version in before
    leftovers = [p for p in adapter_home(model_config, tiny_ns).iterdir()]
    assert leftovers and all(p.name.startswith(".tmp-") for p in leftovers)
    # The namespace lock died with the process: the next run proceeds and cleans up.
    res = refresh(tiny_ns, store=store, model_config=model_config, force=True,
                  distill_config=DistillConfig(teacher=None),
                  train_config=TrainConfig(max_steps=1, batch_size=2, progress=False),
                  gate_config=GateConfig(gate=False, eval_max_questions=1, eval_max_facts=1,
                                         eval_max_new_tokens=8),
                  publish=None)
    assert res.status == "ready", res.reason
    assert [p.name for p in adapter_home(model_config, tiny_ns).iterdir()] == [res.adapter_name]
