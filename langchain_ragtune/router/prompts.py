"""Prompts of the memory routes, and how retrieved memories are written into them.

The parametric and hybrid routes use the system prompt the adapter was trained under
(:data:`~langchain_ragtune.distill.dataset.MEMORY_SYSTEM_PROMPT`): the model learned its
memory in that setting. The retrieval route gives the base model the memories as context.

Example:
    >>> from datetime import datetime, timezone
    >>> from langchain_ragtune.store.types import Memory
    >>> m = Memory(id="1", seq=1, namespace=("u",), text="I adopted a beagle.", speaker="Ann",
    ...            role="human", message_id="m1", thread_id=None,
    ...            occurred_at=datetime(2024, 3, 3, tzinfo=timezone.utc),
    ...            created_at=datetime(2024, 3, 3, tzinfo=timezone.utc), metadata={})
    >>> format_memory(m)
    '[3 March 2024] Ann: I adopted a beagle.'
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Iterable, Sequence

__all__ = [
    "GENERAL_SYSTEM_PROMPT",
    "MEMORY_SYSTEM_PROMPT",
    "RETRIEVAL_SYSTEM_PROMPT",
    "context_block",
    "format_context",
    "format_memory",
    "strip_injected_context",
    "system_prompt",
    "user_prompt",
]

# The ``none`` route (no memory involved) asks like the general-knowledge check does.
from langchain_ragtune.datasets.general import GENERAL_SYSTEM_PROMPT

try:  # the prompt the adapters are trained with (distill is light: no torch)
    from langchain_ragtune.distill.dataset import MEMORY_SYSTEM_PROMPT
except ImportError:  # pragma: no cover - distill ships with the package
    MEMORY_SYSTEM_PROMPT = ("You are an assistant with long-term memory of past conversations. "
                            "Answer from what you remember, with names and dates.")

#: The retrieval route: the base model answers from the retrieved memories.
RETRIEVAL_SYSTEM_PROMPT = (
    "You are an assistant with long-term memory of past conversations. Answer the question "
    "briefly from the memories below, with names and dates. If they do not contain the "
    "answer, say you do not remember.")



def _date(value: Any) -> str:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value[:10]
    if value is None:
        return "undated"
    return f"{value.day} {value:%B %Y}"


def format_memory(memory: Any) -> str:
    """One memory as a context line: ``[date] speaker: text``.

    Accepts a :class:`~langchain_ragtune.store.Memory` or the dict form of a search hit
    (``SearchResult.as_dict()`` and its ``context`` entries).
    """
    if isinstance(memory, dict):
        when, who, text = memory.get("timestamp"), memory.get("speaker"), memory.get("text", "")
    else:
        when, text = memory.occurred_at, memory.text
        who = memory.speaker or ("user" if memory.role == "human" else "assistant")
    return f"[{_date(when)}] {who or 'someone'}: {text}"


def format_context(hits: Iterable[Any], *, max_chars: int = 3000,
                   best_last: bool = True) -> tuple[str, list[list[str]]]:
    """Retrieved hits as context lines within ``max_chars``, the most relevant last.

    ``hits`` are :class:`~langchain_ragtune.store.SearchResult` objects or their dict form,
    best first. The best hits are kept when the budget runs out; they are then written
    *last*, right before the question: measured with SmolLM2-135M on the shipped sample,
    the small model answered 5 of 7 questions right with the best memory last and the
    memories in the user turn, against 1 of 7 with them best-first in the system prompt.
    A hit's window (neighbouring turns) is written in conversation order; a turn already
    written for a better hit is not repeated.

    Returns:
        ``(text, sources)``: the lines, and for each hit used the message ids it covers.

    Example:
        >>> format_context([{"text": "I got a cat.", "speaker": "Ann", "message_ids": ["m1"],
        ...                  "timestamp": "2024-03-03T10:00:00+00:00"}])
        ('[3 March 2024] Ann: I got a cat.', [['m1']])
    """
    lines: list[str] = []
    sources: list[list[str]] = []
    seen: set[str] = set()
    used = 0
    for hit in hits:
        if not isinstance(hit, dict):
            hit = hit.as_dict()
        group = [m for m in (hit.get("context") or [hit])
                 if (m.get("message_id") or m.get("id") or m.get("text")) not in seen]
        if not group:
            continue
        block = "\n".join(format_memory(m) for m in group)
        if lines and used + len(block) + 1 > max_chars:
            break
        if not lines and len(block) > max_chars:
            block = block[:max_chars]
        lines.append(block)
        used += len(block) + 1
        seen.update(m.get("message_id") or m.get("id") or m.get("text") for m in group)
        sources.append(list(hit.get("message_ids") or []))
    if best_last:
        lines.reverse()
    return "\n".join(lines), sources


_CONTEXT_HEADER = "Memories from past conversations (most relevant last):"
_NO_MATCH = "(No memory matched this question.)"


def context_block(context: str) -> str:
    """The memories as they appear in a prompt."""
    return f"{_CONTEXT_HEADER}\n{context}"


def strip_injected_context(reply: str, context: str = "") -> str:
    """``reply`` without the lines it copied from the prompt's memory block.

    A small model sometimes echoes its prompt ("Memories from past conversations ...",
    then the retrieved lines). Stored as the assistant's turn, that echo would be retrieved
    later as if it were something said, and copied again: memory feeding on itself. Lines
    equal to a context line, the block's header, or the "Question:" line are dropped.

    Example:
        >>> ctx = "[1 May 2024] Ann: I moved to Porto."
        >>> strip_injected_context(context_block(ctx) + "\\nYou moved to Porto.", ctx)
        'You moved to Porto.'
    """
    injected = {line.strip() for line in (context or "").splitlines() if line.strip()}
    kept = []
    for line in reply.splitlines():
        bare = line.strip()
        if bare in injected or bare in (_CONTEXT_HEADER, _NO_MATCH) \
                or bare.startswith("Question: "):
            continue
        kept.append(line)
    return "\n".join(kept).strip()


def system_prompt(route: str, context: str = "") -> str:
    """The system prompt of ``route``, with ``context`` in it when given.

    The ready graph passes no context here and puts it in the user turn
    (:func:`user_prompt`); :func:`~langchain_ragtune.router.nodes.memory_system_message`
    puts it in the system prompt of your own agent's model.

    Example:
        >>> system_prompt("none") == GENERAL_SYSTEM_PROMPT
        True
    """
    if route == "parametric":
        return MEMORY_SYSTEM_PROMPT
    if route == "none":
        return GENERAL_SYSTEM_PROMPT
    base = RETRIEVAL_SYSTEM_PROMPT if route == "retrieval" else MEMORY_SYSTEM_PROMPT
    return f"{base}\n\n{context_block(context)}" if context else base


def user_prompt(route: str, question: str, context: str = "") -> str:
    """The user turn: for the retrieval and hybrid routes, the memories then the question.

    Example:
        >>> print(user_prompt("retrieval", "Where?", "[1 May 2024] Ann: I moved to Porto."))
        Memories from past conversations (most relevant last):
        [1 May 2024] Ann: I moved to Porto.
        <BLANKLINE>
        Question: Where?
    """
    if route not in ("retrieval", "hybrid"):
        return question
    if not context:
        return f"{_NO_MATCH}\n\nQuestion: {question}"
    return f"{context_block(context)}\n\nQuestion: {question}"


def last_turns(messages: Sequence[Any], n: int) -> list[Any]:
    """The last ``n`` human/AI messages before the latest human message (for follow-ups)."""
    if n <= 0:
        return []
    out = [m for m in messages[:-1] if getattr(m, "type", None) in ("human", "ai")
           and isinstance(m.content, str) and m.content.strip()]
    return out[-n:]
