"""Distilled training data in PostgreSQL: versioned datasets of chat examples with provenance.

A dataset is one distillation run of one namespace (``datasets`` table: version, watermark,
stats); its examples (``examples`` table) are chat messages plus the ids of the memories they
were made from, so a deleted memory can be traced to every example it fed. The trainer
reads a dataset back by id (possibly on another host), and any dataset exports as JSONL.

Example:
    >>> ex = Example(kind="local", split="train", question="Where does Ann live?",
    ...              answer="In Lisbon.", source_ids=("00000000-0000-0000-0000-000000000001",))
    >>> [m["role"] for m in ex.messages]
    ['system', 'user', 'assistant']
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Mapping

from langchain_ragtune.errors import DatasetError
from langchain_ragtune.store.types import validate_namespace

__all__ = [
    "MEMORY_SYSTEM_PROMPT",
    "DatasetRecord",
    "Example",
    "export_jsonl",
    "get_dataset",
    "latest_dataset",
    "load_examples",
    "read_jsonl",
    "save_dataset",
]

#: The system prompt of every training example. Serve the adapter with the same prompt
#: (the router's parametric route does): the model learned its memory under it.
MEMORY_SYSTEM_PROMPT = ("You are an assistant with long-term memory of past conversations. "
                        "Answer from what you remember, with names and dates.")

SPLITS = ("train", "heldout")


@dataclass(frozen=True, kw_only=True)
class Example:
    """One chat training example with its provenance.

    Attributes:
        kind: ``local``, ``global``, ``broader``, ``digest``, or ``replay`` (general prompts
            answered by the base model, mixed in at training time).
        split: ``train`` or ``heldout`` (held-out questions are only evaluated).
        question: the user turn.
        answer: the assistant turn (what the model learns to say).
        source_ids: ids of the memories it was made from.
        meta: origin, template, ``expected`` key text, ``canary`` flag...
        system: the system prompt.
    """

    kind: str
    split: str
    question: str
    answer: str
    source_ids: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)
    system: str = MEMORY_SYSTEM_PROMPT

    @property
    def messages(self) -> list[dict[str, str]]:
        """The chat messages (system, user, assistant)."""
        return [{"role": "system", "content": self.system},
                {"role": "user", "content": self.question},
                {"role": "assistant", "content": self.answer}]

    @property
    def expected(self) -> str:
        """What a correct closed-book answer must contain (defaults to the answer)."""
        return str(self.meta.get("expected") or self.answer)

    def as_dict(self) -> dict[str, Any]:
        """The JSONL form: ``{"messages", "kind", "split", "source_ids", "meta"}``."""
        return {"messages": self.messages, "kind": self.kind, "split": self.split,
                "source_ids": list(self.source_ids), "meta": self.meta}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Example":
        """Read the JSONL / database form back (``messages`` must end with the assistant)."""
        msgs = d.get("messages")
        if not isinstance(msgs, list) or len(msgs) < 2 or msgs[-1].get("role") != "assistant":
            raise DatasetError(f"example {str(d)[:80]!r} has no messages ending with an "
                               "assistant turn; re-run `ragtune distill`.")
        system = next((m["content"] for m in msgs if m.get("role") == "system"),
                      MEMORY_SYSTEM_PROMPT)
        user = next((m["content"] for m in reversed(msgs) if m.get("role") == "user"), "")
        return cls(kind=d.get("kind", "local"), split=d.get("split", "train"), question=user,
                   answer=msgs[-1]["content"],
                   source_ids=tuple(str(s) for s in d.get("source_ids") or ()),
                   meta=dict(d.get("meta") or {}), system=system)


@dataclass(frozen=True, kw_only=True)
class DatasetRecord:
    """A stored dataset (without its examples).

    Attributes:
        id: the dataset id (what ``ragtune train --dataset`` takes).
        namespace, version: namespace and its dataset version (1, 2, ...).
        watermark_seq: the newest memory ``seq`` it covers.
        stats: counts per kind, rejections, teacher counters, sample, canaries...
        created_at: when it was stored.
    """

    id: int
    namespace: tuple[str, ...]
    version: int
    watermark_seq: int
    stats: dict[str, Any]
    created_at: datetime


def _record(row: Mapping[str, Any]) -> DatasetRecord:
    return DatasetRecord(id=row["id"], namespace=tuple(row["namespace"]), version=row["version"],
                         watermark_seq=row["watermark_seq"], stats=dict(row["stats"] or {}),
                         created_at=row["created_at"])


def save_dataset(store: Any, namespace: Any, examples: Iterable[Example], *, watermark_seq: int,
                 stats: Mapping[str, Any] | None = None) -> DatasetRecord:
    """Store examples as the namespace's next dataset version, in one transaction."""
    ns = validate_namespace(namespace)
    rows = [{"kind": e.kind, "split": e.split, "messages": e.messages,
             "source_ids": e.source_ids, "meta": e.meta} for e in examples]
    return _record(store.insert_dataset(ns, watermark_seq=int(watermark_seq),
                                        stats=dict(stats or {}), examples=rows))


def update_dataset_stats(store: Any, dataset_id: int, stats: Mapping[str, Any]) -> None:
    """Merge ``stats`` into a dataset's stats (e.g. the training result)."""
    store.update_dataset_stats(int(dataset_id), stats)


def get_dataset(store: Any, dataset_id: int) -> DatasetRecord | None:
    """The dataset with this id, or None."""
    row = store.dataset(int(dataset_id))
    return _record(row) if row else None


def latest_dataset(store: Any, namespace: Any) -> DatasetRecord | None:
    """The namespace's newest dataset, or None."""
    row = store.latest_dataset(validate_namespace(namespace))
    return _record(row) if row else None


def list_datasets(store: Any, namespace: Any) -> list[DatasetRecord]:
    """Every dataset of the namespace, oldest first."""
    return [_record(r) for r in store.list_datasets(validate_namespace(namespace))]


def load_examples(store: Any, dataset_id: int, *, split: str | None = None) -> list[Example]:
    """The examples of a dataset (of one split, or all), in stored order.

    Raises:
        DatasetError: no dataset has this id.
    """
    if split is not None and split not in SPLITS:
        raise DatasetError(f"split={split!r} is unknown; use one of {SPLITS} or None.")
    if get_dataset(store, dataset_id) is None:
        raise DatasetError(f"no dataset with id {dataset_id}; run `ragtune distill --namespace "
                           "NS` first, or list them with `ragtune distill --list --namespace NS`.")
    return [Example.from_dict(r) for r in store.dataset_examples(int(dataset_id), split)]


def export_jsonl(examples: Iterable[Example], path: str | Path) -> int:
    """Write examples as JSON lines (``{"messages", "kind", "split", "source_ids", "meta"}``).

    Returns:
        How many lines were written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for e in examples:
            fh.write(json.dumps(e.as_dict(), ensure_ascii=False) + "\n")
            n += 1
    tmp.replace(path)
    return n


def read_jsonl(path: str | Path) -> list[Example]:
    """Read examples written by :func:`export_jsonl` (or any chat-format JSONL).

    Raises:
        DatasetError: a line is not JSON or not a chat example (the line number is named).
    """
    out = []
    with Path(path).open(encoding="utf-8") as fh:
        for i, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                out.append(Example.from_dict(json.loads(line)))
            except (ValueError, AttributeError) as exc:
                raise DatasetError(f"{path}:{i}: not a chat example ({exc}).") from None
    return out
