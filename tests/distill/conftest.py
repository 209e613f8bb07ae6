"""Fixtures of the distillation tests: memories built without a database."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import pytest

from langchain_ragtune.store.types import Memory


def memory(text: str, *, speaker: str = "Ann", thread: str = "s1", seq: int = 1,
           when: datetime | None = None) -> Memory:
    when = when or datetime(2023, 5, 8, 13, 0, tzinfo=timezone.utc)
    return Memory(id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{thread}/{seq}/{text}")), seq=seq,
                  namespace=("t",), text=text, speaker=speaker, role="human",
                  message_id=f"m{seq}", thread_id=thread, occurred_at=when, created_at=when,
                  metadata={})


def sample_memories() -> list[Memory]:
    """The shipped sample conversation (Priya and Tomas) as memories."""
    from langchain_ragtune.eval.locomo import load_sample, to_turns

    turns = to_turns(load_sample()[0])
    return [memory(t.text, speaker=t.speaker, thread=t.thread_id, seq=i + 1, when=t.occurred_at)
            for i, t in enumerate(turns)]


@pytest.fixture(scope="session")
def make_memory():
    """The :func:`memory` factory."""
    return memory


@pytest.fixture(scope="session")
def sample_mems() -> list[Memory]:
    return sample_memories()
