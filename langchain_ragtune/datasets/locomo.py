"""LoCoMo-format conversations: load and validate them.

LoCoMo (Maharana et al., ACL 2024) is a benchmark of very long two-person conversations, each
with question/answer pairs that cite the turns holding the evidence. This module reads any file
in its JSON format (the development set, or the small synthetic conversation shipped with the
package) into plain dataclasses (:mod:`langchain_ragtune.eval.locomo` turns them into store
turns dated with the conversation's own session dates).

It is pure and light: no store, no model, and imported by every room that needs the data. Only the turns and the questions are read; the
annotated side data (``observation``, ``session_summary``, ``event_summary``) is never touched,
because a memory system under evaluation must build its memory from the turns alone.

Example:
    >>> from langchain_ragtune.datasets.locomo import load_sample
    >>> conv = load_sample()[0]
    >>> conv.speaker_a, len(conv.sessions) > 0
    ('Priya', True)
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from langchain_ragtune.errors import DatasetError, InvalidInputError

__all__ = [
    "CATEGORY_NAMES",
    "DEFAULT_LOCOMO_RELPATH",
    "LOCOMO_PATH_ENV",
    "SAMPLE_PATH",
    "LocomoConversation",
    "LocomoQuestion",
    "LocomoSession",
    "LocomoTurn",
    "canonical_dia_id",
    "find_locomo_path",
    "load_locomo",
    "load_sample",
    "parse_locomo",
    "parse_session_datetime",
    "select_conversations",
]

#: Where the development set is expected, relative to the working directory or the repo root.
DEFAULT_LOCOMO_RELPATH = Path("..") / "shared" / "data" / "locomo" / "locomo10.json"
#: Environment variable that points at a LoCoMo-format file.
LOCOMO_PATH_ENV = "RAGTUNE_LOCOMO_PATH"
#: The small synthetic conversation shipped with the package (same format, written for it).
SAMPLE_PATH = Path(__file__).resolve().parent / "sample_conversation.json"
_REPO_ROOT = Path(__file__).resolve().parents[2]

#: Category ids as the official LoCoMo evaluation code numbers them.
CATEGORY_NAMES = {
    1: "multi-hop",
    2: "temporal",
    3: "open-domain",
    4: "single-hop",
    5: "adversarial",
}

_MONTHS = {name: i for i, name in enumerate(
    ["january", "february", "march", "april", "may", "june", "july", "august", "september",
     "october", "november", "december"], start=1)}
_MONTHS.update({name[:3]: i for name, i in list(_MONTHS.items())})
# "1:56 pm on 8 May, 2023" (the comma is sometimes missing in hand-written files).
_DATE_RE = re.compile(
    r"^\s*(\d{1,2}):(\d{2})\s*([ap])\.?\s*m\.?\s+on\s+(\d{1,2})\s+([A-Za-z]+)\.?,?\s+(\d{4})\s*$",
    re.IGNORECASE,
)
# Evidence ids in the file are "D<session>:<turn>"; a few are mistyped ("D:11:26", "D30:05")
# or several are packed into one string ("D8:6; D9:17", "D9:1 D4:4"). These are repaired;
# anything else is kept as written and simply matches no turn.
_DIA_RE = re.compile(r"^D:?(\d+):0*(\d+)$")
_SESSION_KEY = re.compile(r"^session_(\d+)$")


def parse_session_datetime(text: str) -> datetime:
    """Parse a LoCoMo session date such as ``"1:56 pm on 8 May, 2023"`` (UTC).

    Month names are matched in English whatever the process locale is.

    Raises:
        InvalidInputError: the text is not in that format.

    Example:
        >>> parse_session_datetime("1:56 pm on 8 May, 2023").isoformat()
        '2023-05-08T13:56:00+00:00'
        >>> parse_session_datetime("12:09 am on 13 September, 2023").hour
        0
    """
    m = _DATE_RE.match(text) if isinstance(text, str) else None
    month = _MONTHS.get(m.group(5).lower()) if m else None
    if not m or month is None:
        raise InvalidInputError(
            f"session date {text!r} is not in LoCoMo's format; write it like "
            "'1:56 pm on 8 May, 2023'."
        )
    hour, minute = int(m.group(1)), int(m.group(2))
    if not (1 <= hour <= 12 and minute < 60):
        raise InvalidInputError(f"session date {text!r} is not a real date (the time must be "
                                "on a 12-hour clock, e.g. '1:56 pm').")
    hour %= 12
    if m.group(3).lower() == "p":
        hour += 12
    try:
        return datetime(int(m.group(6)), month, int(m.group(4)), hour, minute,
                        tzinfo=timezone.utc)
    except ValueError as exc:
        raise InvalidInputError(f"session date {text!r} is not a real date ({exc}).") from None


def canonical_dia_id(value: str) -> str:
    """Return a dialogue id in its canonical ``D<session>:<turn>`` form, repairing typos.

    Example:
        >>> canonical_dia_id("D:11:26"), canonical_dia_id("D30:05"), canonical_dia_id("D1:3")
        ('D11:26', 'D30:5', 'D1:3')
    """
    m = _DIA_RE.match(value.strip())
    return f"D{int(m.group(1))}:{int(m.group(2))}" if m else value.strip()


def _split_evidence(raw: Any) -> list[str]:
    if raw is None:
        return []
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list):
        raise ValueError(f"evidence must be a list of dialogue ids, got {raw!r}")
    out: list[str] = []
    for item in raw:
        for part in re.split(r"[;,\s]+", str(item)):
            if part:
                ident = canonical_dia_id(part)
                if ident not in out:
                    out.append(ident)
    return out


@dataclass(frozen=True, kw_only=True)
class LocomoTurn:
    """One turn of a LoCoMo session.

    Attributes:
        dia_id: the dialogue id, ``"D<session>:<turn>"``; questions cite these as evidence.
        speaker: who said it.
        text: what was said.
        blip_caption: the caption of a photo shared with the turn, if any.
        occurred_at: the session's date plus ``i`` seconds for the ``i``-th turn, so that
            time order equals turn order.
        session: the session number.

    Example:
        >>> from datetime import datetime, timezone
        >>> t = LocomoTurn(dia_id="D1:2", speaker="Ann", text="Look!", blip_caption="a red kite",
        ...                occurred_at=datetime(2023, 5, 8, tzinfo=timezone.utc), session=1)
        >>> t.memory_text()
        'Look! [shares a photo: a red kite]'
    """

    dia_id: str
    speaker: str
    text: str
    blip_caption: str | None
    occurred_at: datetime
    session: int

    def memory_text(self) -> str:
        """The text to remember: the words plus, for a shared photo, its caption.

        The caption matters: some questions are answered only by what a photo showed.
        """
        text = self.text.strip()
        if self.blip_caption:
            caption = f"[shares a photo: {self.blip_caption.strip()}]"
            return f"{text} {caption}" if text else caption
        return text


@dataclass(frozen=True, kw_only=True)
class LocomoSession:
    """A dated session of a conversation.

    Attributes:
        index: the session number (``N`` in ``session_N``).
        date_time: when it took place (parsed from ``session_N_date_time``, UTC).
        turns: its turns, in order.
    """

    index: int
    date_time: datetime
    turns: tuple[LocomoTurn, ...]


@dataclass(frozen=True, kw_only=True)
class LocomoQuestion:
    """A question about a conversation, with its gold answer and evidence.

    Attributes:
        question: the question text.
        answer: the gold answer as a string (the file sometimes stores numbers); empty for
            adversarial questions, which have only ``adversarial_answer``.
        evidence: the cited dialogue ids, split and repaired (see :func:`canonical_dia_id`).
        category: 1 multi-hop, 2 temporal, 3 open-domain, 4 single-hop, 5 adversarial.
        adversarial_answer: for category 5, the plausible but unsupported answer a model
            should not give.
        index: position in the conversation's question list (stable id for results).

    Example:
        >>> q = LocomoQuestion(question="When?", answer="2022", evidence=["D1:12"], category=2)
        >>> q.category_name
        'temporal'
    """

    question: str
    answer: str
    evidence: list[str] = field(default_factory=list)
    category: int
    adversarial_answer: str | None = None
    index: int = 0

    @property
    def category_name(self) -> str:
        return CATEGORY_NAMES.get(self.category, f"category-{self.category}")


@dataclass(frozen=True, kw_only=True)
class LocomoConversation:
    """A LoCoMo conversation: two speakers, dated sessions of turns, and questions.

    Attributes:
        sample_id: the conversation id (e.g. ``"conv-26"``).
        speaker_a, speaker_b: the two speakers.
        sessions: the sessions that have turns, in session order.
        qa: the questions.

    Example:
        >>> conv = load_sample()[0]
        >>> conv.n_turns == len(list(conv.turns()))
        True
    """

    sample_id: str
    speaker_a: str
    speaker_b: str
    sessions: list[LocomoSession]
    qa: list[LocomoQuestion]

    def turns(self) -> Iterator[LocomoTurn]:
        """Every turn, in conversation order."""
        for session in self.sessions:
            yield from session.turns

    @property
    def n_turns(self) -> int:
        return sum(len(s.turns) for s in self.sessions)

    @property
    def dia_ids(self) -> frozenset[str]:
        """The ids of all turns (evidence citing anything else matches no turn)."""
        return frozenset(t.dia_id for t in self.turns())

    def question_id(self, question: LocomoQuestion) -> str:
        """A stable id for a question of this conversation, e.g. ``"conv-26#12"``."""
        return f"{self.sample_id}#{question.index}"


def _fail(source: str, where: str, problem: str) -> DatasetError:
    return DatasetError(
        f"{source} is not a valid LoCoMo-format file: {where}: {problem}. Expected a JSON list "
        "of {'sample_id', 'conversation': {speaker_a, speaker_b, session_N, "
        "session_N_date_time}, 'qa': [...]} items, as in snap-research/LoCoMo data/locomo10.json."
    )


def _parse_conversation(item: Any, pos: int, source: str) -> LocomoConversation:
    if not isinstance(item, dict):
        raise _fail(source, f"item {pos}", f"expected an object, got {type(item).__name__}")
    sample_id = str(item.get("sample_id") or f"conv-{pos}")
    conv = item.get("conversation")
    if not isinstance(conv, dict):
        raise _fail(source, sample_id, "missing the 'conversation' object")
    try:
        speaker_a, speaker_b = str(conv["speaker_a"]), str(conv["speaker_b"])
    except KeyError as exc:
        raise _fail(source, sample_id, f"missing {exc.args[0]!r}") from None

    sessions = []
    numbers = sorted(int(m.group(1)) for k in conv if (m := _SESSION_KEY.match(k)))
    for n in numbers:
        raw_turns = conv[f"session_{n}"]
        if not raw_turns:  # the file dates some sessions that have no turns
            continue
        where = f"{sample_id} session_{n}"
        if not isinstance(raw_turns, list):
            raise _fail(source, where, "expected a list of turns")
        try:
            start = parse_session_datetime(conv[f"session_{n}_date_time"])
        except KeyError:
            raise _fail(source, where, f"missing 'session_{n}_date_time'") from None
        except InvalidInputError as exc:
            raise _fail(source, where, str(exc)) from None
        turns = []
        for i, t in enumerate(raw_turns):
            if not isinstance(t, dict) or "text" not in t or "speaker" not in t:
                raise _fail(source, f"{where} turn {i}", "a turn needs 'speaker' and 'text'")
            caption = t.get("blip_caption")
            turns.append(LocomoTurn(
                dia_id=canonical_dia_id(str(t.get("dia_id") or f"D{n}:{i + 1}")),
                speaker=str(t["speaker"]),
                text=str(t["text"]),
                blip_caption=str(caption) if caption else None,
                occurred_at=start + timedelta(seconds=i),
                session=n,
            ))
        sessions.append(LocomoSession(index=n, date_time=start, turns=tuple(turns)))
    if not sessions:
        raise _fail(source, sample_id, "no session_N lists with turns")

    qa = []
    for i, q in enumerate(item.get("qa") or []):
        where = f"{sample_id} qa[{i}]"
        if not isinstance(q, dict) or "question" not in q or "category" not in q:
            raise _fail(source, where, "a question needs 'question' and 'category'")
        try:
            category = int(q["category"])
            evidence = _split_evidence(q.get("evidence"))
        except (TypeError, ValueError) as exc:
            raise _fail(source, where, str(exc)) from None
        adversarial = q.get("adversarial_answer")
        answer = q.get("answer")
        qa.append(LocomoQuestion(
            question=str(q["question"]),
            # Some gold answers are numbers (e.g. 2022); the official scorer str()s them.
            answer="" if answer is None else str(answer),
            evidence=evidence,
            category=category,
            adversarial_answer=None if adversarial is None else str(adversarial),
            index=i,
        ))
    return LocomoConversation(sample_id=sample_id, speaker_a=speaker_a, speaker_b=speaker_b,
                              sessions=sessions, qa=qa)


def parse_locomo(data: Any, *, source: str = "<data>") -> list[LocomoConversation]:
    """Build conversations from already-decoded LoCoMo JSON (a list, or one conversation).

    Raises:
        DatasetError: the structure is not LoCoMo's; the message names the item and field.

    Example:
        >>> data = [{"sample_id": "c1", "conversation": {"speaker_a": "A", "speaker_b": "B",
        ...          "session_1_date_time": "9:00 am on 1 June, 2024",
        ...          "session_1": [{"speaker": "A", "dia_id": "D1:1", "text": "Hi"}]},
        ...          "qa": [{"question": "Who?", "answer": 7, "evidence": ["D1:1"],
        ...                  "category": 4}]}]
        >>> conv = parse_locomo(data)[0]
        >>> conv.qa[0].answer, conv.sessions[0].turns[0].occurred_at.hour
        ('7', 9)
    """
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not data:
        raise _fail(source, "top level", "expected a non-empty JSON list of conversations")
    convs = [_parse_conversation(item, i, source) for i, item in enumerate(data)]
    seen: set[str] = set()
    for conv in convs:
        if conv.sample_id in seen:
            raise _fail(source, conv.sample_id, "duplicate sample_id")
        seen.add(conv.sample_id)
    return convs


def find_locomo_path(path: str | os.PathLike[str] | None = None) -> Path:
    """Locate the LoCoMo file: ``path``, else ``$RAGTUNE_LOCOMO_PATH``, else the default.

    The default, ``../shared/data/locomo/locomo10.json``, is tried relative to the current
    working directory and then to the repository root.

    Raises:
        InvalidInputError: an explicitly given path (argument or variable) does not exist.
        DatasetError: no path was given and the default file is not in either place.

    Example:
        >>> find_locomo_path("/no/such/file.json")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        langchain_ragtune.errors.InvalidInputError: LoCoMo file '/no/such/file.json' ...
    """
    given, origin = path, "given"
    if given is None and os.environ.get(LOCOMO_PATH_ENV):
        given, origin = os.environ[LOCOMO_PATH_ENV], f"from ${LOCOMO_PATH_ENV}"
    if given is not None:
        p = Path(given).expanduser()
        if not p.is_file():
            hint = (", or unset the variable to use the default location"
                    if origin != "given" else "")
            raise InvalidInputError(
                f"LoCoMo file {str(p)!r} ({origin}) does not exist or is not a file. "
                "Download data/locomo10.json from github.com/snap-research/LoCoMo and pass its "
                f"path with --data (or ${LOCOMO_PATH_ENV}){hint}."
            )
        return p
    candidates = [Path.cwd() / DEFAULT_LOCOMO_RELPATH, _REPO_ROOT / DEFAULT_LOCOMO_RELPATH]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    tried = ", ".join(repr(str(c.resolve())) for c in candidates)
    raise DatasetError(
        f"the LoCoMo dataset was not found (tried {tried}). Download data/locomo10.json from "
        "github.com/snap-research/LoCoMo (CC BY-NC 4.0: evaluation only, do not commit it) and "
        f"put it at {str(DEFAULT_LOCOMO_RELPATH)!r} next to the project folder, or pass "
        f"--data PATH / set ${LOCOMO_PATH_ENV}. Without it, use the shipped sample (--sample)."
    )


def load_locomo(path: str | os.PathLike[str] | None = None) -> list[LocomoConversation]:
    """Load a LoCoMo-format JSON file (see :func:`find_locomo_path` for where it looks).

    Raises:
        InvalidInputError, DatasetError: missing file (the message says where to put it),
            unreadable or malformed JSON, or a structure that is not LoCoMo's.

    Example:
        >>> convs = load_locomo()                       # doctest: +SKIP
        >>> [c.sample_id for c in convs][:2]            # doctest: +SKIP
        ['conv-26', 'conv-30']
    """
    p = find_locomo_path(path)
    try:
        with open(p, encoding="utf-8") as fh:
            data = json.load(fh)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"LoCoMo file {str(p)!r} is not valid JSON ({exc}); download it "
                           "again from github.com/snap-research/LoCoMo.") from None
    except OSError as exc:
        raise DatasetError(f"cannot read LoCoMo file {str(p)!r}: {exc}") from None
    return parse_locomo(data, source=f"LoCoMo file {str(p)!r}")


def load_sample() -> list[LocomoConversation]:
    """Load the small synthetic conversation shipped with the package (LoCoMo format).

    It is written for this project (two fictional speakers, four sessions, questions of
    categories 1, 2, 4 and 5): the demo and CI use it where LoCoMo itself is absent.
    """
    return load_locomo(SAMPLE_PATH)


def select_conversations(conversations: Sequence[LocomoConversation],
                         ids: Iterable[str] | None) -> list[LocomoConversation]:
    """Keep the conversations whose ``sample_id`` is in ``ids`` (all when ``ids`` is empty).

    Raises:
        InvalidInputError: an id matches no conversation (the message lists the known ones).

    Example:
        >>> [c.sample_id for c in select_conversations(load_sample(), ["sample-1"])]
        ['sample-1']
    """
    wanted = [i.strip() for i in (ids or []) if i and i.strip()]
    if not wanted:
        return list(conversations)
    by_id = {c.sample_id: c for c in conversations}
    unknown = [i for i in wanted if i not in by_id]
    if unknown:
        raise InvalidInputError(f"unknown conversation id(s) {unknown}; this file has: "
                                f"{', '.join(by_id)}.")
    return [by_id[i] for i in dict.fromkeys(wanted)]
