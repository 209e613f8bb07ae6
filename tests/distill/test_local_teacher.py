"""The local teacher: the real base model in-process. Weak, so only robustness is asserted."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_local_teacher_replies_and_never_crashes_the_job(sample_mems):
    pytest.importorskip("transformers", reason="install the [train] extra")
    from langchain_ragtune.config import ModelConfig
    from langchain_ragtune.distill.extract import chunk_memories
    from langchain_ragtune.distill.pipeline import DistillConfig, build_examples
    from langchain_ragtune.distill.teacher import LocalChatModel, Teacher, resolve_teacher
    from langchain_ragtune.models import prepare_base_model

    prepare_base_model(quiet=True)
    teacher = resolve_teacher("local", model_config=ModelConfig.from_env(), timeout_s=120)
    assert isinstance(teacher, Teacher) and isinstance(teacher.model, LocalChatModel)
    teacher.model.max_new_tokens = 96
    reply = teacher.model.invoke("Reply with the word yes.").content
    assert isinstance(reply, str) and reply
    mems = [m for c in chunk_memories(sample_mems)[:2] for m in c.memories]
    result = build_examples(mems, config=DistillConfig(teacher=None, teacher_max_chunks=2),
                            teacher=teacher)
    stats = result.stats["teacher"]
    assert stats["calls"] >= 2 and stats["name"].startswith("local:")
    assert stats.get("ok", 0) + stats.get("timeouts", 0) + stats.get("errors", 0) == stats["calls"]
    # Whatever the small model wrote, only grounded pairs became examples.
    from langchain_ragtune.distill.text import grounding

    context = " ".join(m.text for m in mems) + " " + " ".join(
        m.speaker for m in mems if m.speaker)
    for e in result.examples:
        if e.meta.get("origin") == "teacher":
            assert grounding(e.answer, context + " 2024 March") >= 0.6
