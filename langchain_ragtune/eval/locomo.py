"""LoCoMo for evaluation: the dataset (:mod:`langchain_ragtune.datasets.locomo`) and its
conversations as store turns.

Every name of :mod:`langchain_ragtune.datasets.locomo` is importable from here too (its home
before the datasets room existed; kept for one release).

Example:
    >>> from langchain_ragtune.eval.locomo import load_sample, to_turns
    >>> turns = to_turns(load_sample()[0])
    >>> turns[0].message_id, turns[0].thread_id
    ('D1:1', 'sample-1/session_1')
"""

from __future__ import annotations

from langchain_ragtune.datasets.locomo import (CATEGORY_NAMES, DEFAULT_LOCOMO_RELPATH,
                                               LOCOMO_PATH_ENV, SAMPLE_PATH, LocomoConversation,
                                               LocomoQuestion, LocomoSession, LocomoTurn,
                                               canonical_dia_id, find_locomo_path, load_locomo,
                                               load_sample, parse_locomo, parse_session_datetime,
                                               select_conversations)
from langchain_ragtune.store.types import Turn

__all__ = [
    "CATEGORY_NAMES", "DEFAULT_LOCOMO_RELPATH", "LOCOMO_PATH_ENV", "SAMPLE_PATH",
    "LocomoConversation", "LocomoQuestion", "LocomoSession", "LocomoTurn", "canonical_dia_id",
    "find_locomo_path", "load_locomo", "load_sample", "parse_locomo", "parse_session_datetime",
    "select_conversations", "to_turns",
]


def to_turns(conv: LocomoConversation) -> list[Turn]:
    """Convert a conversation into store turns, one per LoCoMo turn, in order.

    Each turn keeps its dialogue id as ``message_id`` (so retrieved results can be matched
    with the evidence), its session as thread (``"<sample_id>/session_<n>"``, so a search
    window stays within a session), its speaker, and its session date as ``occurred_at``.

    Example:
        >>> t = to_turns(load_sample()[0])[0]
        >>> t.speaker, t.metadata
        ('Priya', {'dia_id': 'D1:1', 'session': 1})
    """
    return [
        Turn(
            text=t.memory_text(),
            speaker=t.speaker,
            role="human",
            message_id=t.dia_id,
            thread_id=f"{conv.sample_id}/session_{t.session}",
            occurred_at=t.occurred_at,
            metadata={"dia_id": t.dia_id, "session": t.session},
        )
        for t in conv.turns()
    ]
