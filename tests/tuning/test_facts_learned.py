"""Parametric memory that knows: a real LoRA trained on the shipped conversation's facts
states them closed-book, and answers questions about them in words it never saw.

Real parts: the shipped conversation distilled by the default recipe (no teacher), the real
SmolLM2-135M base model, real training with the default settings, in-process greedy
answers. A few minutes of CPU; the full LoCoMo runs are benchmarks (``ragtune bench
parametric``, docs/benchmarks.md).
"""

from __future__ import annotations

from datetime import timezone

import pytest

from langchain_ragtune.distill.pipeline import DistillConfig, build_examples
from langchain_ragtune.eval.locomo import load_sample, to_turns
from langchain_ragtune.store.types import Memory
from langchain_ragtune.tuning.evaluate import AdapterEvaluator
from langchain_ragtune.tuning.train import TrainConfig, train_adapter

pytestmark = [pytest.mark.slow, pytest.mark.train]


def _memories():
    out = []
    for i, t in enumerate(to_turns(load_sample()[0])):
        when = t.occurred_at.replace(tzinfo=t.occurred_at.tzinfo or timezone.utc)
        out.append(Memory(id=f"00000000-0000-0000-0000-{i:012d}", seq=i + 1, namespace=("s",),
                          text=t.text, speaker=t.speaker, role="human", message_id=t.message_id,
                          thread_id=t.thread_id, metadata=t.metadata, occurred_at=when,
                          created_at=when))
    return out


@pytest.fixture(scope="module")
def learned(base_model, tmp_path_factory):
    from langchain_ragtune.tuning.replay import general_replay_examples

    result = build_examples(_memories(), config=DistillConfig(teacher=None))
    folder = tmp_path_factory.mktemp("facts")
    evaluator = AdapterEvaluator(base_model, max_new_tokens=32)
    config = TrainConfig(progress=False)
    # What a refresh trains: the facts and the replayed general prompts.
    replay = general_replay_examples(evaluator, config.general_replay, cache_dir=folder / "cache")
    trained = train_adapter(list(result.train) + replay, base_model, folder / "adapter", config)
    return result, trained, evaluator, folder / "cache"


def test_the_adapter_states_its_trained_facts_and_their_paraphrases(learned):
    result, trained, evaluator, cache = learned
    probes = [(e.question, e.expected) for e in result.train if e.meta.get("probe")]
    heldout = [(e.question, e.expected) for e in result.heldout]
    assert len(probes) >= 20 and len(heldout) >= 15
    facts_after, fact_answers = evaluator.score(probes, adapter=trained.path)
    para_after, para_answers = evaluator.score(heldout, adapter=trained.path)
    para_before, _ = evaluator.score(heldout, adapter=None)
    missed = [(q, e, a) for (q, e), a in zip(probes, fact_answers) if e.lower() not in
              a.lower()][:5]
    general = evaluator.general_knowledge(trained.path, cache_dir=cache)
    print(f"\nshipped sample: {len(probes)} facts, trained {facts_after}, held-out "
          f"{para_before} -> {para_after}, general kept {general['general_kept']}, "
          f"{trained.train_tokens} tokens in {trained.seconds} s ({trained.tokens_per_s}/s), "
          f"facts unlearned after the epochs and each focused round {trained.focus_missed}")
    # Measured on AVX-512 and AVX2 runs of this test: see docs/benchmarks.md.
    assert facts_after >= 0.8, f"trained facts {facts_after}: missed e.g. {missed}"
    assert para_after >= 0.5, f"held-out paraphrases {para_after}: {para_answers[:5]}"
    assert para_before <= 0.1, "the base model must not know the conversation's facts"
    assert trained.train_tokens > 0 and trained.tokens_per_s > 0
    # The base model's answers to general questions survive mostly (with 200 replayed
    # prompts: 0.90 in bfloat16, 0.81 in float32, the arithmetic of CPUs without bfloat16;
    # 0.71 with greedy-answer replay; the gate's floor for serving is 0.9, see
    # docs/benchmarks.md): below 0.7 fails here.
    assert general["general_kept"] >= 0.7, general["general_lost"]
