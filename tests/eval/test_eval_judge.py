"""The CORRECT/WRONG judge: reply parsing, prompts, and judging records, with fake judges.

No real model: the judges below reply from a script, so every expected value is worked out
by hand from the reply text.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field

from langchain_ragtune.errors import InvalidInputError
from langchain_ragtune.eval.judge import (
    JUDGE_CATEGORIES,
    JUDGE_PROMPT,
    JUDGE_PROTOCOL,
    ajudge_answer,
    describe_model,
    judge_answer,
    judge_records,
    parse_label,
)
from langchain_ragtune.testing import EchoChatModel


class ScriptedChatModel(BaseChatModel):
    """Replies ``reply(prompt)`` (which may raise) and keeps every list of messages it got."""

    reply: Callable[[str], str]
    calls: list[list[BaseMessage]] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: Any = None, **kwargs: Any) -> ChatResult:
        self.calls.append(list(messages))
        text = self.reply(str(messages[-1].content))
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])


def _by_prediction(prompt: str) -> str:
    """Grade from the generated answer's text, so each record's reply is known in advance."""
    generated = prompt.split("Generated answer: ", 1)[1].splitlines()[0]
    if generated == "boom":
        raise RuntimeError("judge unavailable")
    return {"right": 'Same topic. {"label": "CORRECT"}',
            "off": 'Other topic. {"label": "WRONG"}'}.get(generated, "I am not sure.")


@pytest.mark.parametrize("reply, expected", [
    ('{"label": "CORRECT"}', "CORRECT"),
    ('{"label": "WRONG"}', "WRONG"),
    ('```json\n{"label": "WRONG"}\n```', "WRONG"),                # in a code fence
    ('```\n{\n  "label": "CORRECT"\n}\n```', "CORRECT"),           # pretty-printed
    ('{"LABEL": "correct"}', "CORRECT"),                           # any case, key and value
    ("{'label': 'wrong'}", "WRONG"),                               # a Python dict
    ('The city matches.\n{"label": "CORRECT"}\nHope this helps!', "CORRECT"),  # text around
    ('{"label": "CORRECT"}\nNote: a WRONG date format is fine.', "CORRECT"),   # JSON wins
    ('{"reason": "the label is wrong?", "label": "CORRECT"}', "CORRECT"),
    ("Label: **WRONG**", "WRONG"),
    ('{"label": "INCORRECT"}', "WRONG"),                           # the judge's synonym
    ("INCORRECT", None),                                           # never reads as CORRECT
    ("The generated answer is incorrect.", None),
    ("The date matches, so this is CORRECT.", "CORRECT"),          # the word alone
    ("the generated answer is correct", "CORRECT"),                # any case when no capitals
    ("It is not wrong at all.\nCORRECT", "CORRECT"),               # capitals win over prose
    ("CORRECT. On second thought, WRONG.", None),                  # both labels
    ("CORRECT or WRONG", None),
    ('{"label": "CORRECT or WRONG"}', None),
    ('{"label": "CORRECT"} {"label": "WRONG"}', None),
    ("<think>CORRECT or WRONG? The years differ.</think>\nWRONG", "WRONG"),  # reasoning dropped
    ("", None),
    ("I cannot tell from this.", None),
    (None, None),
])
def test_parse_label(reply, expected):
    assert parse_label(reply) == expected


def test_prompt_has_the_three_fields_and_names_the_protocol():
    fields = {name for _, name, _, _ in string.Formatter().parse(JUDGE_PROMPT) if name}
    assert fields == {"question", "gold_answer", "generated_answer"}
    assert JUDGE_PROTOCOL == "mem0-llm-judge"
    assert JUDGE_CATEGORIES == (1, 2, 3, 4)
    assert '"label"' in JUDGE_PROMPT


def test_judge_answer_sends_one_user_message_with_the_inputs():
    judge = ScriptedChatModel(reply=lambda prompt: "Same year. CORRECT")
    out = judge_answer(judge, "When did Ann start painting?", 2022, "In 2022.")
    assert out == {"label": "CORRECT", "raw": "Same year. CORRECT"}
    (messages,) = judge.calls
    assert [m.type for m in messages] == ["human"]
    prompt = messages[0].content
    assert "Question: When did Ann start painting?\n" in prompt
    assert "Gold answer: 2022\n" in prompt                 # a numeric gold answer, as text
    assert "Generated answer: In 2022.\n" in prompt


def test_judge_answer_keeps_an_unparsed_reply():
    out = judge_answer(FakeListChatModel(responses=["Hard to say."]), "q", "a", "b")
    assert out == {"label": None, "raw": "Hard to say."}


def test_judge_answer_turns_a_model_error_into_a_result():
    out = judge_answer(ScriptedChatModel(reply=_by_prediction), "q", "gold", "boom")
    assert out["label"] is None and out["raw"] == ""
    assert out["error"] == "RuntimeError: judge unavailable"


async def test_ajudge_answer_matches_the_sync_result():
    judge = ScriptedChatModel(reply=_by_prediction)
    assert await ajudge_answer(judge, "q", "gold", "off") == judge_answer(judge, "q", "gold",
                                                                           "off")
    failed = await ajudge_answer(judge, "q", "gold", "boom")
    assert failed["label"] is None and failed["error"].startswith("RuntimeError")


def _records() -> list[dict[str, Any]]:
    return [
        {"kind": "prepare", "mode": "m", "conversation": "c"},
        {"kind": "question", "category": 1, "question": "q1", "answer": "g", "prediction": "right"},
        {"kind": "question", "category": 2, "question": "q2", "answer": "g", "prediction": None},
        {"kind": "question", "category": 2, "question": "q3", "answer": "g", "prediction": "off"},
        {"kind": "question", "category": 3, "question": "q4", "answer": "g", "prediction": "meh"},
        {"kind": "question", "category": 4, "question": "q5", "answer": "g", "prediction": "boom"},
        {"kind": "question", "category": 5, "question": "q6", "answer": "", "prediction": "right"},
    ]


def test_judge_records_skips_category_5_and_missing_predictions_and_counts_errors():
    records = _records()
    judge = ScriptedChatModel(reply=_by_prediction)
    counts = judge_records(records, judge, progress=False)
    # q1 CORRECT, q3 WRONG, q4 unparsed, q5 raised; q2 (no prediction) and q6 (category 5)
    # are never sent to the judge.
    assert counts == {"judged": 4, "correct": 1, "unparsed": 1, "errors": 1}
    assert len(judge.calls) == 4
    by_q = {r.get("question"): r for r in records}
    assert by_q["q1"]["judge"] == 1.0 and by_q["q1"]["judge_raw"].endswith('"CORRECT"}')
    assert by_q["q3"]["judge"] == 0.0
    assert by_q["q4"]["judge"] is None and by_q["q4"]["judge_raw"] == "I am not sure."
    assert by_q["q5"]["judge"] is None and by_q["q5"]["judge_raw"] == ""
    assert by_q["q5"]["judge_error"] == "RuntimeError: judge unavailable"
    for untouched in (records[0], by_q["q2"], by_q["q6"]):
        assert "judge" not in untouched and "judge_raw" not in untouched
    assert "judge_error" not in by_q["q1"]


def test_judge_records_only_the_categories_asked_for():
    records = _records()
    counts = judge_records(records, ScriptedChatModel(reply=_by_prediction), categories=[2],
                           progress=False)
    assert counts == {"judged": 1, "correct": 0, "unparsed": 0, "errors": 0}
    assert [r["question"] for r in records if "judge" in r] == ["q3"]


def test_judge_records_refuses_category_5():
    with pytest.raises(InvalidInputError, match=r"include 5 .*leave 5 out"):
        judge_records(_records(), FakeListChatModel(responses=["CORRECT"]),
                      categories=(1, 5), progress=False)


def test_a_rejudged_record_drops_its_old_error():
    rec = {"category": 1, "question": "q", "answer": "g", "prediction": "boom"}
    judge_records([rec], ScriptedChatModel(reply=_by_prediction), progress=False)
    assert "judge_error" in rec
    judge_records([rec], FakeListChatModel(responses=["CORRECT"]), progress=False)
    assert rec["judge"] == 1.0 and "judge_error" not in rec


def test_judge_records_shows_progress_on_stderr(capsys):
    records = [{"category": 1, "question": "q", "answer": "g", "prediction": "p"}]
    judge_records(records, FakeListChatModel(responses=["CORRECT"]), progress=True)
    captured = capsys.readouterr()
    assert "judge" in captured.err and captured.out == ""


class _Named:
    def __init__(self, **attrs: Any) -> None:
        self.__dict__.update(attrs)


@pytest.mark.parametrize("model, expected", [
    (EchoChatModel(), "EchoChatModel"),
    (FakeListChatModel(responses=["x"]), "FakeListChatModel"),
    (_Named(model_name="gpt-4o-mini"), "_Named:gpt-4o-mini"),
    (_Named(model="qwen3:8b"), "_Named:qwen3:8b"),
    (_Named(model_id="anthropic.claude-3"), "_Named:anthropic.claude-3"),
    (_Named(model_name="first", model="second"), "_Named:first"),   # model_name wins
    (_Named(model_name="", model=object()), "_Named"),               # empty / not text: skipped
])
def test_describe_model(model, expected):
    assert describe_model(model) == expected
