"""The teacher: lenient parsing, retries, timeouts and errors are counted, never fatal."""

from __future__ import annotations

import time
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel, FakeListChatModel
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from langchain_ragtune.distill.teacher import (
    Teacher,
    parse_json_loose,
    parse_qa_pairs,
    resolve_teacher,
)
from langchain_ragtune.errors import ConfigError


class SlowModel(BaseChatModel):
    delay: float = 2.0

    @property
    def _llm_type(self) -> str:
        return "slow"

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any):
        time.sleep(self.delay)
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content="[]"))])


class BrokenModel(BaseChatModel):
    @property
    def _llm_type(self) -> str:
        return "broken"

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any):
        raise ConnectionError("provider down")


@pytest.mark.parametrize("reply, expected", [
    ('[{"question": "Who?", "answer": "Ann"}]', [("Who?", "Ann")]),
    ("```json\n[{'question': 'Who?', 'answer': 'Ann',}]\n```", [("Who?", "Ann")]),
    ('Here you go: {"pairs": [{"Q": "Who?", "A": "Ann"}]} enjoy', [("Who?", "Ann")]),
    ("[{question: 'Who?', answer: 'Ann'}]", [("Who?", "Ann")]),
    ('[{"question": "Who?", "answer": "Ann"}, {"question": "When?", "ans', [("Who?", "Ann")]),
    ("Q: Who?\nA: Ann\nQ: When?\nA: In May", [("Who?", "Ann"), ("When?", "In May")]),
    ('{"question": "How many?", "answer": 3}', [("How many?", "3")]),
    ("I am a helpful assistant.", []),
    ('[{"question": "", "answer": "x"}, {"foo": 1}]', []),
    ("", []),
])
def test_parse_qa_pairs(reply, expected):
    assert parse_qa_pairs(reply) == expected


def test_parse_json_loose_hopeless_is_none():
    assert parse_json_loose("no json here") is None
    assert parse_json_loose(None) is None  # type: ignore[arg-type]


def test_junk_is_retried_then_skipped_and_counted():
    t = Teacher(FakeListChatModel(responses=["blah", "still blah"]), retries=1)
    assert t.qa_pairs("Ann: I moved to Lisbon.") == []
    assert t.stats["calls"] == 2 and t.stats["unparsable"] == 2 and t.stats["retries"] == 1


def test_timeout_is_skipped_and_counted_quickly():
    t = Teacher(SlowModel(delay=3.0), timeout_s=0.2, retries=0)
    started = time.monotonic()
    assert t.qa_pairs("Ann: hi") == []
    assert time.monotonic() - started < 1.5
    assert t.stats["timeouts"] == 1


def test_provider_errors_are_counted():
    t = Teacher(BrokenModel(), retries=1)
    assert t.qa_pairs("Ann: hi") == [] and t.summary("Ann: hi") is None
    assert t.stats["errors"] == 3


def test_resolve_teacher_specs():
    assert resolve_teacher(None) is None and resolve_teacher("none") is None
    fake = FakeListChatModel(responses=["x"])
    assert resolve_teacher(fake).model is fake
    t = Teacher(fake)
    assert resolve_teacher(t) is t
    with pytest.raises(ConfigError):
        resolve_teacher(42)
