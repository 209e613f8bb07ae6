"""Holistic questions and pairwise comparisons, with fake judges and hand-computed counts."""

from __future__ import annotations

import random
import re
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
from langchain_ragtune.eval.holistic import (
    HOLISTIC_CATEGORY,
    HOLISTIC_TEMPLATES,
    PAIRWISE_PROMPT,
    compare_modes,
    compare_pair,
    holistic_questions,
    pairwise_summary,
    parse_winner,
)
from langchain_ragtune.eval.locomo import LocomoQuestion, load_sample


class ScriptedChatModel(BaseChatModel):
    """Replies ``reply(prompt)`` (which may raise) and keeps every prompt it got."""

    reply: Callable[[str], str]
    prompts: list[str] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: Any = None, **kwargs: Any) -> ChatResult:
        prompt = str(messages[-1].content)
        self.prompts.append(prompt)
        return ChatResult(generations=[ChatGeneration(
            message=AIMessage(content=self.reply(prompt)))])


class FixedRng(random.Random):
    """A Random whose ``random()`` always returns ``value`` (below 0.5: a is shown first)."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


def _shown(prompt: str) -> tuple[str, str]:
    m = re.search(r"Answer A:\n(.*)\n\nAnswer B:\n(.*)\n\nWhich", prompt, re.DOTALL)
    assert m, prompt
    return m.group(1), m.group(2)


def _prefers_specific(prompt: str) -> str:
    """A judge with no position bias: the answer mentioning 'specific' wins."""
    first, second = _shown(prompt)
    if "specific" in first and "specific" not in second:
        return 'A names details. {"winner": "A"}'
    if "specific" in second and "specific" not in first:
        return 'B names details. {"winner": "B"}'
    return '{"winner": "TIE"}'


ALWAYS_A = FakeListChatModel(responses=['The first one. {"winner": "A"}'])


# --- holistic questions ---------------------------------------------------------------------

def test_holistic_questions_are_filled_numbered_and_deterministic():
    conv = load_sample()[0]
    qs = holistic_questions(conv)
    assert len(qs) == 4 and all(isinstance(q, LocomoQuestion) for q in qs)
    assert [q.index for q in qs] == [0, 1, 2, 3]
    assert all(q.category == HOLISTIC_CATEGORY == 0 for q in qs)
    assert all(q.answer == "" and q.evidence == [] for q in qs)
    assert qs[0].question == f"Overall, what kind of person is {conv.speaker_a}?"
    assert qs[1].question == (f"How has {conv.speaker_b}'s life changed over the time of these "
                              "conversations?")
    assert all("{" not in q.question for q in qs)
    # the first four already ask about both speakers
    assert any(conv.speaker_a in q.question for q in qs)
    assert any(conv.speaker_b in q.question for q in qs)
    assert holistic_questions(conv) == qs


def test_every_template_is_distinct_and_uses_only_the_speakers():
    assert len(HOLISTIC_TEMPLATES) >= 6
    assert len(set(HOLISTIC_TEMPLATES)) == len(HOLISTIC_TEMPLATES)
    for template in HOLISTIC_TEMPLATES:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name}
        assert fields and fields <= {"a", "b"}, template
    conv = load_sample()[0]
    everything = holistic_questions(conv, n=len(HOLISTIC_TEMPLATES))
    assert [q.index for q in everything] == list(range(len(HOLISTIC_TEMPLATES)))
    assert holistic_questions(conv, n=0) == []


@pytest.mark.parametrize("n", [-1, len(HOLISTIC_TEMPLATES) + 1, 2.0, True, "4"])
def test_holistic_questions_rejects_a_bad_n(n):
    with pytest.raises(InvalidInputError, match=r"n=.* between 0 and"):
        holistic_questions(load_sample()[0], n=n)


# --- parsing the verdict --------------------------------------------------------------------

@pytest.mark.parametrize("reply, expected", [
    ('{"winner": "A"}', "A"),
    ('{"winner": "B"}', "B"),
    ('{"winner": "TIE"}', "TIE"),
    ('```json\n{"Winner": "b"}\n```', "B"),                         # fence, any case
    ("{'winner': 'tie'}", "TIE"),
    ('{"winner": "Answer A"}', "A"),
    ('A is more specific. {"winner": "A"} B is vague.', "A"),       # JSON wins over prose
    ('{"winner": "A or B"}', None),                                 # not one verdict
    ('{"winner": "A"} {"winner": "B"}', None),                      # two verdicts
    ("Winner: B", "B"),
    ("The winner is Answer B.", "B"),
    ("Answer A is better: it names her job.", "A"),
    ("Answer A is better. Answer B is better.", None),              # conflicting prose
    ("A names her job, B is vague.\n\n**A**", "A"),                 # a last line of its own
    ("Neither is better.\nTIE", "TIE"),
    ("Both vague.\nTie.", "TIE"),
    ("Final answer: B", "B"),
    ("A is fine", None),                                            # "A" inside a sentence
    ("a", None),                                                    # lower-case a is a word
    ("<think>A? or B?</think>\nB", "B"),
    ("", None),
    ("I cannot decide.", None),
    (None, None),
])
def test_parse_winner(reply, expected):
    assert parse_winner(reply) == expected


def test_pairwise_prompt_fields():
    fields = {name for _, name, _, _ in string.Formatter().parse(PAIRWISE_PROMPT) if name}
    assert fields == {"question", "answer_a", "answer_b"}
    assert '"winner"' in PAIRWISE_PROMPT and "TIE" in PAIRWISE_PROMPT


# --- one comparison -------------------------------------------------------------------------

@pytest.mark.parametrize("draw, first", [(0.1, "a"), (0.9, "b")])
def test_compare_pair_shows_the_drawn_order_and_maps_back(draw, first):
    judge = ScriptedChatModel(reply=lambda p: '{"winner": "A"}')
    out = compare_pair(judge, "Who is Ann?", "ann-answer", "bob-answer", rng=FixedRng(draw))
    assert out == {"winner": first, "shown_first": first, "raw": '{"winner": "A"}'}
    expected = ("ann-answer", "bob-answer") if first == "a" else ("bob-answer", "ann-answer")
    assert _shown(judge.prompts[0]) == expected
    assert "Question: Who is Ann?\n" in judge.prompts[0]


@pytest.mark.parametrize("reply, first, winner", [
    ("B", "a", "b"), ("B", "b", "a"), ("TIE", "a", "tie"), ("TIE", "b", "tie"),
    ("no idea", "a", None), ("no idea", "b", None),
])
def test_compare_pair_maps_every_verdict(reply, first, winner):
    rng = FixedRng(0.1 if first == "a" else 0.9)
    out = compare_pair(FakeListChatModel(responses=[reply]), "q", "x", "y", rng=rng)
    assert (out["shown_first"], out["winner"]) == (first, winner)


def test_an_always_a_judge_follows_the_shown_order():
    rng = random.Random(7)
    results = [compare_pair(ALWAYS_A, "q", "x", "y", rng=rng) for _ in range(20)]
    assert all(r["winner"] == r["shown_first"] for r in results)
    assert {r["shown_first"] for r in results} == {"a", "b"}   # the order does alternate


def test_an_unbiased_judge_picks_the_same_side_in_either_order():
    judge = ScriptedChatModel(reply=_prefers_specific)
    rng = random.Random(3)
    results = [compare_pair(judge, "q", "vague", "specific: she teaches", rng=rng)
               for _ in range(20)]
    assert {r["shown_first"] for r in results} == {"a", "b"}
    assert all(r["winner"] == "b" for r in results)


def test_compare_pair_turns_a_model_error_into_a_result_and_still_draws():
    def fail(prompt: str) -> str:
        raise TimeoutError("judge took too long")

    rng, twin = random.Random(5), random.Random(5)
    out = compare_pair(ScriptedChatModel(reply=fail), "q", "x", "y", rng=rng)
    assert out["winner"] is None and out["raw"] == ""
    assert out["error"] == "TimeoutError: judge took too long"
    assert out["shown_first"] == ("a" if twin.random() < 0.5 else "b")
    assert rng.getstate() == twin.getstate()                  # exactly one draw was used


# --- many comparisons -----------------------------------------------------------------------

ANSWERS = {
    "parametric": {"q1": "p1", "q2": "p2", "q3": "p3", "q4": None},
    "retrieval": {"q2": "r2", "q1": "r1", "q4": "r4"},
    "none": {"q1": "n1", "q3": "n3"},
}


def test_compare_modes_pairs_and_questions_in_a_stable_order():
    recs = compare_modes(ANSWERS, ALWAYS_A, progress=False)
    # pairs in the modes' order; questions in mode a's order, only where both answered
    # (q4 has no parametric answer, q3 no retrieval answer).
    assert [(r["a"], r["b"], r["question"]) for r in recs] == [
        ("parametric", "retrieval", "q1"), ("parametric", "retrieval", "q2"),
        ("parametric", "none", "q1"), ("parametric", "none", "q3"),
        ("retrieval", "none", "q1"),
    ]
    for r in recs:
        assert set(r) == {"kind", "a", "b", "question", "winner", "shown_first", "raw"}
        assert r["kind"] == "pairwise" and r["winner"] == r["shown_first"]


def test_compare_modes_is_deterministic_for_a_seed():
    many = {"x": {f"q{i}": f"x{i}" for i in range(30)}, "y": {f"q{i}": f"y{i}" for i in range(30)}}
    judge = ScriptedChatModel(reply=lambda p: '{"winner": "A"}')
    first = compare_modes(many, judge, seed=11, progress=False)
    prompts_first = list(judge.prompts)
    judge.prompts.clear()
    again = compare_modes(many, judge, seed=11, progress=False)
    assert first == again and judge.prompts == prompts_first
    other = compare_modes(many, judge, seed=12, progress=False)
    assert [r["shown_first"] for r in other] != [r["shown_first"] for r in first]


def test_compare_modes_sends_each_side_its_own_answer():
    judge = ScriptedChatModel(reply=lambda p: "TIE")
    recs = compare_modes(ANSWERS, judge, pairs=[("retrieval", "parametric")], progress=False)
    assert [(r["a"], r["b"], r["question"]) for r in recs] == [
        ("retrieval", "parametric", "q2"), ("retrieval", "parametric", "q1")]
    for r, prompt in zip(recs, judge.prompts):
        mine, theirs = ANSWERS["retrieval"][r["question"]], ANSWERS["parametric"][r["question"]]
        shown = (mine, theirs) if r["shown_first"] == "a" else (theirs, mine)
        assert _shown(prompt) == shown


def test_compare_modes_with_an_unbiased_judge_gives_the_better_mode_every_win():
    answers = {"parametric": {f"q{i}": f"specific {i}" for i in range(12)},
               "retrieval": {f"q{i}": "Not mentioned." for i in range(12)}}
    recs = compare_modes(answers, ScriptedChatModel(reply=_prefers_specific), progress=False)
    assert pairwise_summary(recs) == {"parametric vs retrieval": {
        "n": 12, "wins_a": 12, "wins_b": 0, "ties": 0, "unparsed": 0, "win_rate_a": 1.0}}


def test_position_bias_cancels_out_over_many_questions():
    same = {f"q{i}": "same" for i in range(200)}
    answers = {"x": same, "y": same}
    row = pairwise_summary(compare_modes(answers, ALWAYS_A, progress=False))["x vs y"]
    assert row["wins_a"] + row["wins_b"] == 200
    assert 0.4 < row["win_rate_a"] < 0.6


@pytest.mark.parametrize("pairs, match", [
    ([("parametric", "routed")], r"'routed', which has no answers; the modes with answers"),
    ([("parametric", "parametric")], r"two different modes"),
    ([("parametric",)], r"two different modes"),
])
def test_compare_modes_rejects_bad_pairs(pairs, match):
    with pytest.raises(InvalidInputError, match=match):
        compare_modes(ANSWERS, ALWAYS_A, pairs=pairs, progress=False)


def test_compare_modes_shows_progress_on_stderr(capsys):
    compare_modes({"x": {"q": "1"}, "y": {"q": "2"}}, ALWAYS_A, progress=True)
    assert "pairwise" in capsys.readouterr().err


# --- summary --------------------------------------------------------------------------------

def _cmp(a: str, b: str, winner: str | None) -> dict[str, Any]:
    return {"kind": "pairwise", "a": a, "b": b, "question": "q", "winner": winner}


def test_pairwise_summary_arithmetic():
    recs = ([_cmp("p", "r", w) for w in ("a", "a", "a", "b", "tie", None, None)]
            + [_cmp("p", "n", w) for w in ("b", "tie")]
            + [_cmp("r", "n", None)]
            + [{"kind": "question", "mode": "p", "question": "q"}])  # other kinds ignored
    assert pairwise_summary(recs) == {
        # (3 + 0.5) / 5 parsed = 0.7; the two unparsed are left out
        "p vs r": {"n": 7, "wins_a": 3, "wins_b": 1, "ties": 1, "unparsed": 2,
                   "win_rate_a": 0.7},
        # (0 + 0.5) / 2 = 0.25
        "p vs n": {"n": 2, "wins_a": 0, "wins_b": 1, "ties": 1, "unparsed": 0,
                   "win_rate_a": 0.25},
        # nothing parsed: no rate
        "r vs n": {"n": 1, "wins_a": 0, "wins_b": 0, "ties": 0, "unparsed": 1,
                   "win_rate_a": None},
    }
    assert pairwise_summary([]) == {}
