"""Plain data types of the memory store, and the validation of what callers pass in.

Pure: no database, no model. Every check raises
:class:`~langchain_ragtune.errors.InvalidInputError` naming the value and the fix.

Example:
    >>> from langchain_ragtune.store.types import validate_namespace
    >>> validate_namespace(("user-42",))
    ('user-42',)
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Literal, Mapping, Sequence

from langchain_ragtune.errors import InvalidInputError

__all__ = [
    "MAX_K",
    "MAX_TEXT_CHARS",
    "Memory",
    "NamespaceLike",
    "SearchResult",
    "Turn",
    "clean_text",
    "namespace_str",
    "validate_k",
    "validate_metadata",
    "validate_namespace",
]

NamespaceLike = tuple[str, ...] | list[str] | str

#: Largest text one memory may hold (characters). A 1 MB message is accepted; beyond this
#: callers should split the text themselves.
MAX_TEXT_CHARS = 2_000_000
#: Largest k a search accepts.
MAX_K = 1000
_MAX_NS_DEPTH = 8
_MAX_LABEL = 256

SearchMode = Literal["hybrid", "vector", "keyword"]


def validate_namespace(namespace: Any) -> tuple[str, ...]:
    """Return ``namespace`` as a tuple of non-empty labels, or raise InvalidInputError.

    A bare string is taken as a one-label namespace (``"user-42"`` -> ``("user-42",)``).
    Labels may hold any printable characters, quotes included: they are always passed to
    SQL as parameters, never spliced into it.
    """
    if isinstance(namespace, str):
        namespace = (namespace,)
    if not isinstance(namespace, (tuple, list)) or not namespace:
        raise InvalidInputError(
            f"namespace={namespace!r} must be a non-empty tuple of strings, e.g. ('user-42',)."
        )
    if len(namespace) > _MAX_NS_DEPTH:
        raise InvalidInputError(f"namespace={namespace!r} has {len(namespace)} labels; "
                                f"use at most {_MAX_NS_DEPTH}.")
    out = []
    for label in namespace:
        if not isinstance(label, str):
            raise InvalidInputError(f"namespace label {label!r} in {namespace!r} is a "
                                    f"{type(label).__name__}; every label must be a string.")
        if not label.strip():
            raise InvalidInputError(f"namespace={namespace!r} has an empty label; "
                                    "use non-blank labels such as ('user-42',).")
        if len(label) > _MAX_LABEL or "\x00" in label:
            raise InvalidInputError(f"namespace label {label[:40]!r}... must be at most "
                                    f"{_MAX_LABEL} characters without NUL bytes.")
        out.append(label)
    return tuple(out)


def namespace_str(namespace: Sequence[str]) -> str:
    """A human-readable, unambiguous rendering of a namespace (for logs and file names)."""
    return "/".join(label.replace("/", "%2F") for label in namespace)


def clean_text(text: Any, *, what: str = "text") -> str:
    """Validate memory text: a non-blank string, NUL bytes and lone surrogates removed.

    PostgreSQL rejects NUL bytes in text and UTF-8 cannot encode lone surrogates, so both
    are dropped rather than failing the write; anything else is stored as given.
    """
    if not isinstance(text, str):
        raise InvalidInputError(f"{what} must be a string, got {type(text).__name__}: "
                                f"{str(text)[:60]!r}. Pass the message text, not the message.")
    if "\x00" in text:
        text = text.replace("\x00", "")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    if not text.strip():
        raise InvalidInputError(f"{what}={text[:40]!r} is empty or whitespace; "
                                "there is nothing to remember or search for.")
    if len(text) > MAX_TEXT_CHARS:
        raise InvalidInputError(f"{what} has {len(text):,} characters; the limit is "
                                f"{MAX_TEXT_CHARS:,}. Split it into several memories.")
    return text


def validate_k(k: Any, *, what: str = "k") -> int:
    """Return ``k`` if it is an int in 1..MAX_K, else raise InvalidInputError."""
    if isinstance(k, bool) or not isinstance(k, int):
        raise InvalidInputError(f"{what}={k!r} must be an integer between 1 and {MAX_K}.")
    if k <= 0 or k > MAX_K:
        raise InvalidInputError(f"{what}={k} is out of range: use 1 <= {what} <= {MAX_K}.")
    return k


def validate_metadata(metadata: Any) -> dict[str, Any]:
    """Return metadata as a JSON-able dict with string keys, else raise InvalidInputError."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise InvalidInputError(f"metadata={metadata!r} must be a dict of JSON values.")
    import json

    try:
        text = json.dumps(dict(metadata), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"metadata={metadata!r} is not JSON-serialisable ({exc}); "
                                "use strings, numbers, booleans, lists and dicts.") from None
    if "\\u0000" in text:
        raise InvalidInputError("metadata contains a NUL character, which PostgreSQL "
                                "cannot store in JSON; remove it.")
    return json.loads(text)


def _utc(value: Any, what: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidInputError(f"{what}={value!r} is not an ISO-8601 date or time, "
                                    "e.g. '2023-05-08T13:56:00+00:00'.") from None
    if not isinstance(value, datetime):
        raise InvalidInputError(f"{what}={value!r} must be a datetime or an ISO-8601 string.")
    if value.tzinfo is None:  # naive times are taken as UTC, consistently
        value = value.replace(tzinfo=timezone.utc)
    return value


@dataclass(kw_only=True)
class Turn:
    """One thing to remember: a conversation turn or a plain note.

    Attributes:
        text: the content.
        speaker: who said it (a person's name, or "user"/"assistant").
        role: ``"human"``, ``"ai"``, ``"system"`` or ``"note"``.
        message_id: the caller's id; writes are idempotent on (namespace, message_id).
            A random id is made when missing.
        thread_id: the conversation (or session) it belongs to; turns of one thread are
            neighbours when a search returns a window of context.
        occurred_at: when it was said in the conversation (defaults to now).
        metadata: JSON-able extra fields, searchable by containment.
        expires_at: when it should be forgotten (TTL); ``None`` keeps it.
    """

    text: str
    speaker: str | None = None
    role: str = "human"
    message_id: str | None = None
    thread_id: str | None = None
    occurred_at: datetime | str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    expires_at: datetime | str | None = None

    def __post_init__(self) -> None:
        self.text = clean_text(self.text)
        if self.message_id is None:
            self.message_id = str(uuid.uuid4())
        elif not isinstance(self.message_id, str) or not self.message_id.strip():
            raise InvalidInputError(f"message_id={self.message_id!r} must be a non-empty string.")
        for name in ("speaker", "thread_id", "role"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise InvalidInputError(f"{name}={value!r} must be a string or None.")
            if isinstance(value, str):
                setattr(self, name, value.replace("\x00", ""))
        self.occurred_at = _utc(self.occurred_at, "occurred_at") or datetime.now(timezone.utc)
        self.expires_at = _utc(self.expires_at, "expires_at")
        self.metadata = validate_metadata(self.metadata)


@dataclass(frozen=True, kw_only=True)
class Memory:
    """A stored memory, as read back.

    Attributes:
        id: the store's id (a UUID string).
        seq: a per-store increasing sequence number: the distillation watermark compares it.
        namespace: the namespace it belongs to.
        text, speaker, role, message_id, thread_id, occurred_at, metadata, expires_at:
            as written (see :class:`Turn`).
        created_at: when it was written.
        embedded: whether its vector has been computed yet.
    """

    id: str
    seq: int
    namespace: tuple[str, ...]
    text: str
    speaker: str | None
    role: str
    message_id: str
    thread_id: str | None
    occurred_at: datetime
    created_at: datetime
    metadata: dict[str, Any]
    expires_at: datetime | None = None
    embedded: bool = True


@dataclass(frozen=True, kw_only=True)
class SearchResult:
    """One hit of a search: a memory, its scores and, optionally, its neighbouring turns.

    Attributes:
        memory: the memory that matched.
        score: the fused score (reciprocal rank fusion in hybrid mode; cosine similarity in
            vector mode; the keyword score in keyword mode). Higher is better.
        vector_score: cosine similarity to the query, if vector search saw it.
        keyword_score: the keyword side's score, if keyword search matched it: BM25 over
            the query's words that are not common in the namespace (or PostgreSQL's
            ``ts_rank_cd`` with ``StoreConfig.keyword_scoring = "ts_rank_cd"``).
        context: the memory with up to ``window`` turns of its thread on each side, in order.
    """

    memory: Memory
    score: float
    vector_score: float | None = None
    keyword_score: float | None = None
    context: tuple[Memory, ...] = ()

    @property
    def id(self) -> str:
        return self.memory.id

    @property
    def text(self) -> str:
        return self.memory.text

    @property
    def message_ids(self) -> list[str]:
        """Provenance: the message ids this hit covers (the memory and its context)."""
        if not self.context:
            return [self.memory.message_id]
        return [m.message_id for m in self.context]

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form (what ``ragtune search --json`` prints)."""
        m = self.memory
        return {
            "id": m.id,
            "text": m.text,
            "score": self.score,
            "vector_score": self.vector_score,
            "keyword_score": self.keyword_score,
            "timestamp": m.occurred_at.isoformat(),
            "created_at": m.created_at.isoformat(),
            "speaker": m.speaker,
            "message_id": m.message_id,
            "thread_id": m.thread_id,
            "seq": m.seq,
            "metadata": m.metadata,
            "message_ids": self.message_ids,
            "context": [{"speaker": c.speaker, "text": c.text, "message_id": c.message_id,
                         "timestamp": c.occurred_at.isoformat()} for c in self.context],
        }


def turns_from(items: Iterable[Any]) -> list[Turn]:
    """Coerce an iterable of :class:`Turn`, LangChain messages, dicts or strings to turns.

    LangChain message content may be a list of blocks: text blocks are joined; images and
    tool calls carry no remembered text and are skipped (a message with none is an error).
    """
    out = []
    for item in items:
        if isinstance(item, Turn):
            out.append(item)
        elif isinstance(item, str):
            out.append(Turn(text=item))
        elif isinstance(item, Mapping):
            out.append(Turn(**dict(item)))
        elif hasattr(item, "content") and hasattr(item, "type"):
            out.append(_turn_from_message(item))
        else:
            raise InvalidInputError(f"cannot remember {type(item).__name__} {str(item)[:60]!r}: "
                                    "pass a Turn, a LangChain message, a dict or a string.")
    return out


def message_text(content: Any) -> str:
    """The plain text of a LangChain message's content (text blocks joined, others skipped)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for block in content:
            if isinstance(block, str):
                parts.append(block)
            elif isinstance(block, Mapping) and block.get("type") == "text":
                parts.append(str(block.get("text", "")))
        return "\n".join(p for p in parts if p)
    raise InvalidInputError(f"message content of type {type(content).__name__} is not text.")


def _turn_from_message(msg: Any) -> Turn:
    text = message_text(msg.content)
    if not text.strip():
        raise InvalidInputError(
            f"{type(msg).__name__} id={getattr(msg, 'id', None)!r} has no text content "
            "(only images or tool calls); there is nothing to remember."
        )
    role = {"human": "human", "ai": "ai", "system": "system", "tool": "tool"}.get(msg.type, msg.type)
    extra = dict(getattr(msg, "additional_kwargs", {}) or {})
    meta = validate_metadata(extra.get("ragtune_metadata")) if "ragtune_metadata" in extra else {}
    return Turn(
        text=text,
        role=role,
        speaker=getattr(msg, "name", None) or ("user" if role == "human" else "assistant"),
        message_id=getattr(msg, "id", None) or None,
        occurred_at=extra.get("ragtune_occurred_at"),
        metadata=meta,
    )
