"""Holistic questions about a whole conversation, and a judge that compares two answers.

LoCoMo asks about facts a few turns hold; it has no "big picture" questions ("how has her
life changed?"), where the claim for parametric memory (a LoRA adapter tuned on the whole
history) is strongest: retrieval brings back a handful of turns, the adapter has seen them
all. Such questions have no gold answer, so the answers of two memory modes are compared
pairwise by a judge model instead of scored.

:func:`holistic_questions` fills hand-written templates with a conversation's speakers and
returns them as ordinary :class:`~langchain_ragtune.eval.locomo.LocomoQuestion` objects
(category 0), so every evaluation mode answers them like any other question.
:func:`compare_modes` asks the judge about every pair of modes on every question both
answered; which answer is shown first is drawn at random per comparison, so a judge's
preference for a position cancels out over many questions. :func:`pairwise_summary`
turns the comparisons into win rates.

Example:
    >>> from langchain_core.language_models.fake_chat_models import FakeListChatModel
    >>> from langchain_ragtune.eval.locomo import load_sample
    >>> qs = holistic_questions(load_sample()[0], n=2)
    >>> qs[0].question, qs[0].category
    ('Overall, what kind of person is Priya?', 0)
    >>> answers = {"parametric": {q.question: "Caring and adventurous." for q in qs},
    ...            "retrieval": {q.question: "Not mentioned." for q in qs}}
    >>> judge = FakeListChatModel(responses=['{"winner": "A"}'])  # always the first shown
    >>> comparisons = compare_modes(answers, judge, progress=False)
    >>> summary = pairwise_summary(comparisons)["parametric vs retrieval"]
    >>> summary["n"], summary["wins_a"] + summary["wins_b"]
    (2, 2)
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from langchain_ragtune.errors import InvalidInputError
from langchain_ragtune.eval.judge import _error_text, _one, _reply_text, _strip_thinking
from langchain_ragtune.eval.locomo import LocomoConversation, LocomoQuestion

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

__all__ = [
    "HOLISTIC_CATEGORY",
    "HOLISTIC_TEMPLATES",
    "PAIRWISE_PROMPT",
    "PAIRWISE_PROTOCOL",
    "compare_modes",
    "compare_pair",
    "holistic_questions",
    "pairwise_summary",
    "parse_winner",
]

#: The category of holistic questions (LoCoMo's own run 1-5), so reports keep them apart.
HOLISTIC_CATEGORY = 0
#: The id of the pairwise prompt below, for run metadata.
PAIRWISE_PROTOCOL = "ragtune-pairwise-v1"

#: Question templates; ``{a}`` and ``{b}`` are the two speakers. Ordered so that the first
#: few already cover both speakers and the pair (``n=4`` asks about a, b, both, b).
HOLISTIC_TEMPLATES: tuple[str, ...] = (
    "Overall, what kind of person is {a}?",
    "How has {b}'s life changed over the time of these conversations?",
    "What topics do {a} and {b} talk about most?",
    "What are {b}'s main hobbies and interests?",
    "What does {a} care about most?",
    "Overall, what kind of person is {b}?",
    "How has {a}'s life changed over the time of these conversations?",
    "What does {b} care about most?",
    "What are {a}'s main hobbies and interests?",
    "How would you describe the relationship between {a} and {b}, and how has it developed?",
)

# The judge does not see the history (it is far longer than a judge's context): it is asked
# which answer reads as coming from someone who knows it. Length is named as no merit
# because judges are known to prefer the longer answer; the order as meaningless because
# they prefer a position (the caller also randomises it).
PAIRWISE_PROMPT = """\
Two assistants remember a long conversation history between two people, spread over many \
sessions and months. Each was asked the same question about that history.

Question: {question}

Answer A:
{answer_a}

Answer B:
{answer_b}

Which answer better answers the question, as someone who knows the whole conversation \
history would answer it? Prefer the answer that is more specific to these people, sounds \
correct and consistent, and covers the big picture of the whole history rather than a single \
moment of it. A vague, generic or evasive answer (one that could fit anyone, or says it \
does not know) is worse than a specific one. Do not prefer an answer for being longer, and \
ignore the order in which the answers are shown. Say TIE only if neither is better.

First give a short (one sentence) explanation, then finish with the winner, A, B or TIE, in \
JSON format with "winner" as the key.
"""

_WINNERS = {"A": "A", "B": "B", "TIE": "TIE", "DRAW": "TIE", "EQUAL": "TIE"}
_WINNER_KV = re.compile(r"""(?i:\bwinner\b)["']?\s*[:=]\s*["']?([^"'\n,}]*)""")
# Prose verdicts small judges write instead of JSON. A and B must be capitals: "a" is a word.
_WINNER_PROSE = [
    re.compile(r"(?i:\bwinner\s+is\s+)(?:(?i:answer|response)\s+)?[*\"']*(A|B|TIE|[Tt]ie)\b"),
    re.compile(r"(?i:\b(?:answer|response)\s+)(A|B)\s+(?i:is\s+(?:the\s+)?"
               r"(?:better|stronger|more))"),
]
_WINNER_LINE = re.compile(r"[\W_]*(?:(?i:final answer|final verdict|verdict|winner|"
                          r"better answer|answer)[\W_]*)?(A|B|TIE|Tie|tie)[\W_]*")


def _winner_value(value: str) -> str | None:
    value = value.strip(" *`.!").upper()
    value = re.sub(r"^(ANSWER|RESPONSE)\s+", "", value)
    return _WINNERS.get(value)


def holistic_questions(conv: LocomoConversation, n: int = 4) -> list[LocomoQuestion]:
    """The first ``n`` holistic questions about ``conv``, filled with its speakers' names.

    Deterministic: the same conversation and ``n`` always give the same questions. Each is a
    :class:`LocomoQuestion` with ``category=0``, no gold answer, no evidence, and ``index``
    ``0..n-1``.

    Raises:
        InvalidInputError: ``n`` is not between 0 and the number of templates.

    Example:
        >>> from langchain_ragtune.eval.locomo import load_sample
        >>> conv = load_sample()[0]
        >>> qs = holistic_questions(conv, n=3)
        >>> qs[2].question, qs[2].index, qs[2].answer
        ('What topics do Priya and Tomas talk about most?', 2, '')
    """
    total = len(HOLISTIC_TEMPLATES)
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= total:
        raise InvalidInputError(
            f"n={n!r} holistic questions asked for, but there are {total} templates; pass an "
            f"integer n between 0 and {total}."
        )
    names = {"a": conv.speaker_a, "b": conv.speaker_b}
    return [
        LocomoQuestion(question=template.format(**names), answer="", evidence=[],
                       category=HOLISTIC_CATEGORY, index=i)
        for i, template in enumerate(HOLISTIC_TEMPLATES[:n])
    ]


def parse_winner(text: str) -> str | None:
    """Read the judge's verdict, ``"A"``, ``"B"`` or ``"TIE"``, from its reply; ``None`` if unclear.

    A ``winner`` key (JSON in a code fence or not, any case) decides; a value that is not
    one verdict (``"A or B"``) gives ``None``. Without one, a prose verdict ("the winner is
    B", "Answer A is better") or a last line holding only the verdict is read. Conflicting
    verdicts give ``None``.

    Example:
        >>> parse_winner('```json\\n{"Winner": "b"}\\n```')
        'B'
        >>> parse_winner("Answer A is more specific.\\n\\n**A**")
        'A'
        >>> parse_winner('{"winner": "tie"} (both are vague)')
        'TIE'
        >>> parse_winner('{"winner": "A or B"}') is None, parse_winner("A is fine") is None
        (True, True)
    """
    if not isinstance(text, str):
        return None
    text = _strip_thinking(text)
    keyed = [_winner_value(v) for v in _WINNER_KV.findall(text)]
    if keyed:
        return _one(keyed) if None not in keyed else None
    prose = [m.upper() for pattern in _WINNER_PROSE for m in pattern.findall(text)]
    if prose:
        return _one(prose)
    lines = [line for line in text.splitlines() if line.strip()]
    if lines and (m := _WINNER_LINE.fullmatch(lines[-1].strip())):
        return m.group(1).upper()
    return None


def compare_pair(model: BaseChatModel, question: str, answer_a: str, answer_b: str, *,
                 rng: random.Random) -> dict[str, Any]:
    """Ask ``model`` which of two answers to ``question`` is better, in a random order.

    ``rng`` decides which answer the judge sees first (labelled "A"); the verdict is mapped
    back to the caller's sides, so ``"a"`` always means ``answer_a``.

    Args:
        model: the judge, any LangChain chat model.
        question: the question both answers answer.
        answer_a, answer_b: the two answers.
        rng: the source of the presentation order (one draw per call, made even when the
            call then fails, so a seeded run stays reproducible).

    Returns:
        ``{"winner": "a" | "b" | "tie" | None, "shown_first": "a" | "b", "raw": <reply>}``;
        when the call fails, ``winner`` is ``None``, ``raw`` is ``""`` and ``"error"`` says
        what happened.

    Example:
        >>> from langchain_core.language_models.fake_chat_models import FakeListChatModel
        >>> judge = FakeListChatModel(responses=["B"])  # always the one shown second
        >>> out = compare_pair(judge, "Who?", "x", "y", rng=random.Random(0))
        >>> out["shown_first"], out["winner"]
        ('b', 'a')
    """
    first = "a" if rng.random() < 0.5 else "b"
    second = "b" if first == "a" else "a"
    shown = (answer_a, answer_b) if first == "a" else (answer_b, answer_a)
    prompt = PAIRWISE_PROMPT.format(question=question, answer_a=shown[0], answer_b=shown[1])
    try:
        raw = _reply_text(model, prompt)
    except Exception as exc:  # noqa: BLE001 - one failed comparison must not end a long run
        return {"winner": None, "shown_first": first, "raw": "", "error": _error_text(exc)}
    verdict = parse_winner(raw)
    winner = {"A": first, "B": second, "TIE": "tie"}.get(verdict) if verdict else None
    return {"winner": winner, "shown_first": first, "raw": raw}


def compare_modes(answers: Mapping[str, Mapping[str, str | None]], model: BaseChatModel, *,
                  pairs: Sequence[tuple[str, str]] | None = None, seed: int = 0,
                  progress: bool = True) -> list[dict[str, Any]]:
    """Compare the answers of every pair of modes on every question both answered.

    Args:
        answers: ``answers[mode][question_text] = answer``; a ``None`` answer counts as not
            answered.
        model: the judge, any LangChain chat model.
        pairs: the ``(mode_a, mode_b)`` pairs to compare; by default every pair, in the
            order the modes appear in ``answers`` (``("parametric", "retrieval")`` when
            parametric comes first).
        seed: seeds the presentation order; the same inputs and seed give the same prompts.
        progress: show a progress bar on stderr.

    Returns:
        One record per comparison, pairs in order and questions in ``mode_a``'s order:
        ``{"kind": "pairwise", "a", "b", "question", "winner", "shown_first", "raw"}``
        (``winner`` in ``"a"``, ``"b"``, ``"tie"``, ``None``), plus ``"error"`` after a
        failed call.

    Raises:
        InvalidInputError: a pair names a mode missing from ``answers``, or a mode twice.

    Example:
        >>> from langchain_core.language_models.fake_chat_models import FakeListChatModel
        >>> answers = {"x": {"q1": "one", "q2": "two"}, "y": {"q2": "deux", "q3": "trois"}}
        >>> recs = compare_modes(answers, FakeListChatModel(responses=["TIE"]), progress=False)
        >>> [(r["a"], r["b"], r["question"], r["winner"]) for r in recs]
        [('x', 'y', 'q2', 'tie')]
    """
    modes = list(answers)
    chosen = list(itertools.combinations(modes, 2)) if pairs is None else list(pairs)
    for pair in chosen:
        if len(pair) != 2 or pair[0] == pair[1]:
            raise InvalidInputError(f"pair {pair!r} must name two different modes, e.g. "
                                    "('parametric', 'retrieval').")
        missing = [m for m in pair if m not in answers]
        if missing:
            raise InvalidInputError(f"pair {pair!r} names {missing[0]!r}, which has no answers; "
                                    f"the modes with answers are {modes}.")
    jobs = [(a, b, q) for a, b in chosen for q, ans in answers[a].items()
            if ans is not None and answers[b].get(q) is not None]
    rng = random.Random(seed)
    bar: Iterable[tuple[str, str, str]] = jobs
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(jobs, desc="pairwise", unit="cmp", leave=False)
    out = []
    for a, b, q in bar:
        verdict = compare_pair(model, q, str(answers[a][q]), str(answers[b][q]), rng=rng)
        out.append({"kind": "pairwise", "a": a, "b": b, "question": q, **verdict})
    return out


def pairwise_summary(comparisons: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Win counts and rates per pair of modes, keyed ``"<a> vs <b>"``.

    ``win_rate_a`` is mode a's share of the parsed verdicts, a tie counting half; unparsed
    (and failed) comparisons are counted but left out of it, and it is ``None`` when no
    verdict was parsed. Records of other kinds are ignored.

    Example:
        >>> recs = [{"kind": "pairwise", "a": "p", "b": "r", "winner": w}
        ...         for w in ("a", "a", "b", "tie", None)]
        >>> pairwise_summary(recs)["p vs r"]  # (2 + 0.5) / 4 parsed
        {'n': 5, 'wins_a': 2, 'wins_b': 1, 'ties': 1, 'unparsed': 1, 'win_rate_a': 0.625}
    """
    out: dict[str, dict[str, Any]] = {}
    for rec in comparisons:
        if rec.get("kind", "pairwise") != "pairwise":
            continue
        row = out.setdefault(f"{rec['a']} vs {rec['b']}",
                             {"n": 0, "wins_a": 0, "wins_b": 0, "ties": 0, "unparsed": 0})
        row["n"] += 1
        key = {"a": "wins_a", "b": "wins_b", "tie": "ties"}.get(rec.get("winner"), "unparsed")
        row[key] += 1
    for row in out.values():
        parsed = row["n"] - row["unparsed"]
        row["win_rate_a"] = (row["wins_a"] + 0.5 * row["ties"]) / parsed if parsed else None
    return out
