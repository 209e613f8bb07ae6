"""An LLM judge for LoCoMo answers: the CORRECT/WRONG protocol of Mem0's evaluation.

Token F1 punishes a right answer said in other words ("7 May" for "May 7th", a sentence for
a two-word gold answer). The protocol of Mem0's LoCoMo evaluation (Chhikara et al. 2025,
"Mem0: Building Production-Ready AI Agents with Scalable Long-Term Memory", which scored every
system in its table with it; Memobase and MemMachine reports reuse it) instead asks a chat model
whether a generated answer matches the gold one, generously about wording and date formats,
and takes its one-word label: CORRECT scores 1, WRONG 0. Categories 1-4 are judged;
adversarial questions (category 5) have no gold answer and are left out, as in the original.

Any LangChain chat model can judge (``init_chat_model("openai:gpt-4o-mini",
temperature=0)`` matches the published setup). The judge's reply is parsed leniently
(:func:`parse_label`), because small local judges wrap the JSON in code fences, change its
case or add a sentence after it. A failing call never stops a long run: the record gets no
score and the error is kept.

Example:
    >>> from langchain_core.language_models.fake_chat_models import FakeListChatModel
    >>> judge = FakeListChatModel(responses=['Same date. {"label": "CORRECT"}'])
    >>> judge_answer(judge, "When did Ann move?", "7 May 2023", "On May 7th, 2023.")["label"]
    'CORRECT'
    >>> records = [{"category": 2, "question": "When did Ann move?", "answer": "7 May 2023",
    ...             "prediction": "May 7th"}]
    >>> judge_records(records, judge, progress=False)
    {'judged': 1, 'correct': 1, 'unparsed': 0, 'errors': 0}
    >>> records[0]["judge"]
    1.0
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from langchain_ragtune.errors import InvalidInputError

if TYPE_CHECKING:  # a type only: importing the judge must not need a provider package
    from langchain_core.language_models import BaseChatModel

__all__ = [
    "JUDGE_CATEGORIES",
    "JUDGE_PROMPT",
    "JUDGE_PROTOCOL",
    "ajudge_answer",
    "describe_model",
    "judge_answer",
    "judge_records",
    "parse_label",
]

#: The id of the protocol below, for run metadata (results of different prompts don't mix).
JUDGE_PROTOCOL = "mem0-llm-judge"
#: The categories the published protocol judges (5, adversarial, has no gold answer).
JUDGE_CATEGORIES: tuple[int, ...] = (1, 2, 3, 4)

# The protocol of mem0ai/mem0, evaluation/metrics/llm_judge.py (ACCURACY_PROMPT, Apache-2.0;
# read at commit 2352a44193bd0e36cd544fc5664cbee14e020bc2), restated step for step: the same
# three inputs, the same two generosity rules (same topic; same date or period whatever the
# format or relative wording), a one-sentence reason, never both labels, the label as JSON
# under "label". Only the wording and the worked example are our own; the published run sent
# it as one user message to gpt-4o-mini at temperature 0 with JSON output requested.
JUDGE_PROMPT = """\
Grade an answer to a question as CORRECT or WRONG. You get three things:
    (1) a question, asked by one user of another user,
    (2) the gold answer (the ground truth),
    (3) a generated answer, which you grade as CORRECT or WRONG.

Each question is about something one user ought to know about the other from the \
conversations they have had. Gold answers are usually brief and name the topic in question, \
for example:
Question: What did I bring back from my trip to Lisbon?
Gold answer: A set of painted tiles
A generated answer can be a lot longer. Grade generously: if it is about the same topic as \
the gold answer, it is CORRECT.

For a question about time, the gold answer is a particular date, month, year or the like. \
A generated answer can be a lot longer or speak in relative terms ("last Tuesday", "next \
month"). Grade generously: if it points to the same date or period as the gold answer, it is \
CORRECT, whatever the format ("May 7th" and "7 May" are the same date).

The question to grade:
Question: {question}
Gold answer: {gold_answer}
Generated answer: {generated_answer}

Explain your reasoning in one short sentence first, then end with CORRECT or WRONG. Never \
write both CORRECT and WRONG in your reply: the reply could not be scored.

Give the label, CORRECT or WRONG, as JSON with the key "label".
"""

_LABELS = {"CORRECT": "CORRECT", "WRONG": "WRONG", "INCORRECT": "WRONG"}
# `label: X`, `"label": "X"`, `'Label' = X` (JSON, a Python dict, or prose).
_LABEL_KV = re.compile(r"""(?i:\blabel\b)["']?\s*[:=]\s*["']?([^"'\n,}]*)""")
# Upper case first: a judge that reasons "not wrong" in prose still shouts its label.
_LABEL_UPPER = re.compile(r"\b(CORRECT|WRONG)\b")
_LABEL_ANY = re.compile(r"\b(correct|wrong)\b", re.IGNORECASE)


def _strip_thinking(text: str) -> str:
    """Drop a reasoning model's ``<think>...</think>`` preamble (it may name every label).

    Example:
        >>> _strip_thinking("<think>WRONG? no...</think> CORRECT")
        ' CORRECT'
    """
    if "</think>" in text:  # some chat templates open the block in the prompt, not the reply
        return text.rsplit("</think>", 1)[1]
    return text


def _one(values: Iterable[str]) -> str | None:
    found = set(values)
    return found.pop() if len(found) == 1 else None


def parse_label(text: str) -> str | None:
    """Read the judge's label, ``"CORRECT"`` or ``"WRONG"``, from its reply; ``None`` if unclear.

    A ``label`` key (JSON in a code fence or not, any case, text around it) wins; its value
    ``INCORRECT`` reads as WRONG. Otherwise the reply must name exactly one of the two labels
    as a standalone word (in capitals if any are, so prose like "it is not wrong" before a
    final ``CORRECT`` is fine). Both labels, or neither, give ``None``: the protocol tells the
    judge never to write both.

    Example:
        >>> parse_label('```json\\n{"Label": "correct"}\\n```')
        'CORRECT'
        >>> parse_label("The date matches.\\n\\nCORRECT")
        'CORRECT'
        >>> parse_label('{"label": "INCORRECT"}'), parse_label("INCORRECT")
        ('WRONG', None)
        >>> parse_label("CORRECT or WRONG?") is None
        True
    """
    if not isinstance(text, str):
        return None
    text = _strip_thinking(text)
    keyed = [_LABELS.get(v.strip(" *`.").upper()) for v in _LABEL_KV.findall(text)]
    if keyed and None not in keyed and (label := _one(keyed)):
        return label
    upper = _LABEL_UPPER.findall(text)
    if upper:
        return _one(upper)
    return _one(w.upper() for w in _LABEL_ANY.findall(text))


def _reply_text(model: BaseChatModel, prompt: str) -> str:
    """Send ``prompt`` as one user message and return the reply's text.

    Example:
        >>> from langchain_ragtune.testing import EchoChatModel
        >>> _reply_text(EchoChatModel(), "hi")
        'echo: hi'
    """
    from langchain_core.messages import HumanMessage

    from langchain_ragtune.store.types import message_text

    reply = model.invoke([HumanMessage(content=prompt)])
    return message_text(getattr(reply, "content", reply))


async def _areply_text(model: BaseChatModel, prompt: str) -> str:
    """The async twin of :func:`_reply_text`."""
    from langchain_core.messages import HumanMessage

    from langchain_ragtune.store.types import message_text

    reply = await model.ainvoke([HumanMessage(content=prompt)])
    return message_text(getattr(reply, "content", reply))


def _error_text(exc: BaseException) -> str:
    """A one-line description of a failed call, kept in the record instead of raising.

    Example:
        >>> _error_text(TimeoutError("judge took too long"))
        'TimeoutError: judge took too long'
    """
    return f"{type(exc).__name__}: {exc}"[:500]


def _judge_prompt(question: str, gold: Any, prediction: Any) -> str:
    # Gold answers are sometimes numbers in the file (2022); the judge sees them as text.
    return JUDGE_PROMPT.format(question=question, gold_answer=str(gold),
                               generated_answer=str(prediction))


def judge_answer(model: BaseChatModel, question: str, gold: str,
                 prediction: str) -> dict[str, Any]:
    """Ask ``model`` whether ``prediction`` answers ``question`` as ``gold`` does.

    Args:
        model: the judge, any LangChain chat model (temperature 0 for repeatable grades).
        question: the question.
        gold: the gold answer.
        prediction: the generated answer to grade.

    Returns:
        ``{"label": "CORRECT" | "WRONG" | None, "raw": <reply text>}``; when the call
        fails, ``label`` is ``None``, ``raw`` is ``""`` and ``"error"`` says what happened
        (a long run goes on rather than crash on one timeout).

    Example:
        >>> from langchain_core.language_models.fake_chat_models import FakeListChatModel
        >>> judge = FakeListChatModel(responses=["Different pet. WRONG"])
        >>> judge_answer(judge, "Which pet?", "a cat", "A dog")
        {'label': 'WRONG', 'raw': 'Different pet. WRONG'}
    """
    try:
        raw = _reply_text(model, _judge_prompt(question, gold, prediction))
    except Exception as exc:  # noqa: BLE001 - a judge failure costs one score, never the run
        return {"label": None, "raw": "", "error": _error_text(exc)}
    return {"label": parse_label(raw), "raw": raw}


async def ajudge_answer(model: BaseChatModel, question: str, gold: str,
                        prediction: str) -> dict[str, Any]:
    """The async twin of :func:`judge_answer` (``model.ainvoke``), same result.

    Example:
        >>> import asyncio
        >>> from langchain_core.language_models.fake_chat_models import FakeListChatModel
        >>> judge = FakeListChatModel(responses=['{"label": "CORRECT"}'])
        >>> asyncio.run(ajudge_answer(judge, "Which pet?", "a cat", "her cat"))["label"]
        'CORRECT'
    """
    try:
        raw = await _areply_text(model, _judge_prompt(question, gold, prediction))
    except Exception as exc:  # noqa: BLE001 - as in judge_answer
        return {"label": None, "raw": "", "error": _error_text(exc)}
    return {"label": parse_label(raw), "raw": raw}


def _category(rec: dict[str, Any]) -> int | None:
    try:
        return int(rec.get("category"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def judge_records(records: Iterable[dict[str, Any]], model: BaseChatModel, *,
                  categories: Iterable[int] = JUDGE_CATEGORIES,
                  progress: bool = True) -> dict[str, int]:
    """Judge every answered record of ``categories``, in place.

    Each selected record (a dict with ``category``, ``question``, ``answer`` (gold) and a
    non-``None`` ``prediction``, as :func:`~langchain_ragtune.eval.harness.score_record`
    makes them) gets ``rec["judge"]``: ``1.0`` for CORRECT, ``0.0`` for WRONG, ``None`` when
    the reply has no clear label or the call failed; ``rec["judge_raw"]``: the reply; and,
    after a failure, ``rec["judge_error"]``. Other records (category 5, retrieval-only
    records, ``"prepare"`` records) are left untouched.

    Args:
        records: the records to judge (dicts, changed in place).
        model: the judge, any LangChain chat model.
        categories: which categories to judge; 1-4 as published.
        progress: show a progress bar on stderr.

    Returns:
        ``{"judged", "correct", "unparsed", "errors"}`` counts, where ``judged`` counts every
        record the judge was asked about (so judged = correct + wrong + unparsed + errors).

    Raises:
        InvalidInputError: ``categories`` includes 5 (adversarial questions have no gold
            answer to compare with).

    Example:
        >>> from langchain_core.language_models.fake_chat_models import FakeListChatModel
        >>> judge = FakeListChatModel(responses=["WRONG", "hmm"])
        >>> recs = [{"category": 1, "question": "q1", "answer": "x", "prediction": "y"},
        ...         {"category": 4, "question": "q2", "answer": "x", "prediction": "z"},
        ...         {"category": 5, "question": "q3", "answer": "", "prediction": "w"}]
        >>> judge_records(recs, judge, progress=False)
        {'judged': 2, 'correct': 0, 'unparsed': 1, 'errors': 0}
        >>> [r.get("judge", "-") for r in recs]
        [0.0, None, '-']
    """
    wanted = {int(c) for c in categories}
    if 5 in wanted:
        raise InvalidInputError(
            f"categories {sorted(wanted)} include 5 (adversarial): those questions have no gold "
            "answer, and the published judge protocol covers categories 1-4 only; leave 5 out "
            "(their F1 already scores abstention)."
        )
    todo = [r for r in records
            if isinstance(r, dict) and _category(r) in wanted and r.get("prediction") is not None]
    counts = {"judged": 0, "correct": 0, "unparsed": 0, "errors": 0}
    bar: Iterable[dict[str, Any]] = todo
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(todo, desc="judge", unit="q", leave=False)
    for rec in bar:
        verdict = judge_answer(model, str(rec.get("question", "")), rec.get("answer", ""),
                               rec["prediction"])
        label = verdict["label"]
        rec["judge"] = None if label is None else float(label == "CORRECT")
        rec["judge_raw"] = verdict["raw"]
        counts["judged"] += 1
        if "error" in verdict:
            rec["judge_error"] = verdict["error"]
            counts["errors"] += 1
        else:
            rec.pop("judge_error", None)  # a re-judged record keeps no stale error
            if label is None:
                counts["unparsed"] += 1
            elif label == "CORRECT":
                counts["correct"] += 1
    return counts


def describe_model(model: Any) -> str:
    """A readable id of a chat model for run metadata: class name and model name.

    Example:
        >>> from langchain_ragtune.testing import EchoChatModel
        >>> describe_model(EchoChatModel())
        'EchoChatModel'
        >>> class ChatOpenAI:
        ...     model_name = "gpt-4o-mini"
        >>> describe_model(ChatOpenAI())
        'ChatOpenAI:gpt-4o-mini'
    """
    cls = type(model).__name__
    # Providers disagree on the attribute: OpenAI uses model_name, Anthropic and Ollama
    # model, Bedrock model_id.
    for attr in ("model_name", "model", "model_id"):
        value = getattr(model, attr, None)
        if isinstance(value, str) and value:
            return f"{cls}:{value}"
    return cls
