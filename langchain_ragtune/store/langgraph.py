"""The memory store as a LangGraph ``BaseStore``: ``graph.compile(store=...)``.

Nodes then read and write long-term memory through LangGraph's own API
(``store.put / get / search / delete / list_namespaces``), and a ``search`` with a
``query`` runs the same hybrid vector + keyword search as :meth:`MemoryStore.search`.

Items map onto memories: the item's key is the memory's ``message_id``; its value is kept
whole in the memory's metadata (under ``"value"``), and the text that is embedded and
indexed is ``value["text"]`` or ``value["content"]`` when present, else the value as JSON.

One deliberate difference from LangGraph's in-memory and Postgres stores: a namespace is a
hard partition here, so ``search(("users", "42"), ...)`` looks in exactly that namespace and
never in ``("users", "42", "notes")``. Cross-tenant leaks through prefix search are ruled
out by construction.

Example:
    >>> from langchain_ragtune.store.langgraph import RagtuneStore     # doctest: +SKIP
    >>> graph = builder.compile(store=RagtuneStore(memory_store))      # doctest: +SKIP
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

from langgraph.store.base import (
    BaseStore,
    GetOp,
    Item,
    ListNamespacesOp,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
)
from psycopg.types.json import Jsonb

from langchain_ragtune.errors import InvalidInputError
from langchain_ragtune.store import sql
from langchain_ragtune.store.sync import MemoryStore
from langchain_ragtune.store.types import clean_text, validate_metadata, validate_namespace

__all__ = ["RagtuneStore"]


def _item_text(value: dict[str, Any]) -> str:
    for key in ("text", "content"):
        if isinstance(value.get(key), str) and value[key].strip():
            return value[key]
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _item(row: dict[str, Any], score: float | None = None, search: bool = False) -> Item:
    value = (row["metadata"] or {}).get("value")
    if value is None:  # a memory written through MemoryStore.add, not through put()
        value = {"text": row["content"], "speaker": row["speaker"], "role": row["role"],
                 "occurred_at": row["occurred_at"].isoformat()}
    kw = dict(namespace=tuple(row["namespace"]), key=row["message_id"], value=value,
              created_at=row["created_at"], updated_at=row.get("updated_at") or row["created_at"])
    return SearchItem(**kw, score=score) if search else Item(**kw)


class RagtuneStore(BaseStore):
    """LangGraph ``BaseStore`` backed by a :class:`~langchain_ragtune.store.MemoryStore`.

    Args:
        store: a set-up memory store (its pool, schema and embeddings are used).
    """

    supports_ttl = True

    def __init__(self, store: MemoryStore) -> None:
        self.store = store

    # BaseStore's get/put/search/... all funnel into batch()/abatch().
    def batch(self, ops: Iterable[Op]) -> list[Result]:
        return [self._run(op) for op in ops]

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        import asyncio

        ops = list(ops)
        return await asyncio.to_thread(self.batch, ops)

    def _run(self, op: Op) -> Result:
        s = self.store
        if isinstance(op, GetOp):
            ns = validate_namespace(op.namespace)
            with s.pool.connection() as conn:
                row = conn.execute(s.render(sql.GET_ITEMS_SQL),
                                   {"namespace": list(ns), "message_id": op.key}).fetchone()
            return _item(row) if row else None
        if isinstance(op, PutOp):
            ns = validate_namespace(op.namespace)
            if not isinstance(op.key, str) or not op.key:
                raise InvalidInputError(f"store key {op.key!r} must be a non-empty string.")
            with s.pool.connection() as conn:
                if op.value is None:
                    conn.execute(s.render(sql.DELETE_ITEM_SQL),
                                 {"namespace": list(ns), "message_id": op.key})
                    return None
                value = validate_metadata(op.value)
                expires = (datetime.now(timezone.utc) + timedelta(minutes=op.ttl)
                           if op.ttl else None)
                conn.execute(s.render(sql.UPSERT_ITEM_SQL), {
                    "namespace": list(ns), "message_id": op.key,
                    "content": clean_text(_item_text(value), what="item text"),
                    "metadata": Jsonb({"value": value}), "expires_at": expires})
            s._wake.set()
            return None
        if isinstance(op, SearchOp):
            ns = validate_namespace(op.namespace_prefix)
            meta = {"value": op.filter} if op.filter else None
            if op.query:
                hits = s.search(ns, op.query, k=op.limit + op.offset, metadata=meta)
                out = []
                for h in hits[op.offset:]:
                    m = h.memory
                    row = {"namespace": m.namespace, "message_id": m.message_id,
                           "metadata": m.metadata, "content": m.text, "speaker": m.speaker,
                           "role": m.role, "occurred_at": m.occurred_at,
                           "created_at": m.created_at}
                    out.append(_item(row, score=h.score, search=True))
                return out
            with s.pool.connection() as conn:
                rows = conn.execute(s.render(sql.LIST_ITEMS_SQL), {
                    "namespace": list(ns), "metadata": Jsonb(meta) if meta else None,
                    "limit": op.limit, "offset": op.offset}).fetchall()
            return [_item(r, search=True) for r in rows]
        if isinstance(op, ListNamespacesOp):
            prefix = None
            suffix = None
            for cond in op.match_conditions or ():
                if cond.match_type == "prefix":
                    prefix = tuple(cond.path)
                elif cond.match_type == "suffix":
                    suffix = tuple(cond.path)
            rows = s.list_namespaces(prefix=prefix if prefix and "*" not in prefix else None,
                                     limit=10_000)
            names = []
            for ns, _ in rows:
                if prefix and not _matches(ns[:len(prefix)], prefix):
                    continue
                if suffix and not _matches(ns[-len(suffix):], suffix):
                    continue
                names.append(ns[:op.max_depth] if op.max_depth else ns)
            names = list(dict.fromkeys(names))
            return names[op.offset:op.offset + op.limit]
        raise InvalidInputError(f"unsupported store operation {type(op).__name__}")


def _matches(part: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
    return len(part) == len(pattern) and all(p in ("*", x) for x, p in zip(part, pattern))
