"""The memory store as a LangGraph ``BaseStore``: ``graph.compile(store=...)``.

Nodes then read and write long-term memory through LangGraph's own API
(``store.put / get / search / delete / list_namespaces``), and a ``search`` with a
``query`` runs the same hybrid vector + keyword search as :meth:`MemoryStore.search`.

It follows LangGraph's ``BaseStore`` contract as ``InMemoryStore`` and ``PostgresStore``
implement it: ``search`` takes a namespace *prefix*; filters take the operators ``$eq $ne
$gt $gte $lt $lte`` (an unknown one is an error, not an empty result); TTLs (``TTLConfig``:
``default_ttl``, ``refresh_on_read``, ``sweep_interval_minutes``) with ``refresh_ttl`` on
reads; an ``IndexConfig``'s ``fields`` (JSONPath) and ``put(..., index=[...])`` choose the
text that is embedded; a hit's ``score`` is the cosine similarity to the query.

Items map onto memories: the item's key is the memory's ``message_id``; its value is kept
whole in the memory's metadata (under ``"value"``).

Deliberate differences (each checked against ``InMemoryStore`` in the tests):

* Query results come in hybrid order (vector and keyword ranks fused), which finds the
  memory a keyword names where vectors alone miss it; ``score`` is still the cosine
  similarity, so threshold code works, and the fusion score is ``item.fusion_score``.
  Scores are therefore not always decreasing down the list.
* Without an index config the embedded text is ``value["text"]`` or ``value["content"]``
  when present, else the value as JSON (``InMemoryStore`` without an index does no
  semantic search at all). Several fields give one vector over their joined text, not one
  vector per field. ``index=False`` still embeds the value: the store finds everything it
  holds by the same search.
* Items without a query come newest-updated first (as ``PostgresStore``), not in insertion
  order.
* A filter on a list matches by containment (the item's list holds the filter's elements);
  ``{"k": None}`` matches a stored ``null`` only, not a missing key.

Isolation: the store answers whatever namespace prefix a node asks for; the shipped nodes take
the namespace from the run's configuration, never from model output, and so should yours.

Example:
    >>> from langchain_ragtune.store.langgraph import RagtuneStore     # doctest: +SKIP
    >>> graph = builder.compile(store=RagtuneStore(memory_store))      # doctest: +SKIP
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import threading
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

from langgraph.store.base import (
    BaseStore,
    GetOp,
    IndexConfig,
    Item,
    ListNamespacesOp,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    TTLConfig,
)
from psycopg.types.json import Jsonb

from langchain_ragtune.errors import ConfigError, InvalidInputError
from langchain_ragtune.store import sql
from langchain_ragtune.store.base import vector_literal
from langchain_ragtune.store.sync import MemoryStore
from langchain_ragtune.store.types import clean_text, validate_metadata, validate_namespace

__all__ = ["RagtuneSearchItem", "RagtuneStore"]

log = logging.getLogger(__name__)

#: Most namespaces one prefix search looks into.
MAX_PREFIX_NAMESPACES = 1000


class RagtuneSearchItem(SearchItem):
    """A search hit: ``score`` is the cosine similarity to the query (``None`` when the
    memory has no vector yet), ``fusion_score`` the hybrid ranking's fused score."""

    __slots__ = ("fusion_score",)

    def __init__(self, *args: Any, fusion_score: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fusion_score = fusion_score


def _default_text(value: dict[str, Any]) -> str:
    for key in ("text", "content"):
        if isinstance(value.get(key), str) and value[key].strip():
            return value[key]
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _like_prefix(prefix: tuple[str, ...]) -> str:
    """The LIKE pattern of a namespace prefix's ns_path (see sql.NAMESPACES_UNDER_SQL)."""
    path = "".join(label + "\x1f" for label in prefix)
    return path.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _prefix_params(prefix: tuple[str, ...]) -> dict[str, Any]:
    return {"prefix": list(prefix), "ns_like": _like_prefix(prefix)}


def _item(row: dict[str, Any], *, score: float | None = None, fusion: float | None = None,
          search: bool = False) -> Item:
    value = (row["metadata"] or {}).get("value")
    if value is None:  # a memory written through MemoryStore.add, not through put()
        value = {"text": row["content"], "speaker": row["speaker"], "role": row["role"],
                 "occurred_at": row["occurred_at"].isoformat()}
    kw = dict(namespace=tuple(row["namespace"]), key=row["message_id"], value=value,
              created_at=row["created_at"], updated_at=row.get("updated_at") or row["created_at"])
    return RagtuneSearchItem(**kw, score=score, fusion_score=fusion) if search else Item(**kw)


class RagtuneStore(BaseStore):
    """LangGraph ``BaseStore`` backed by a :class:`~langchain_ragtune.store.MemoryStore`.

    Args:
        store: a set-up memory store (its pool, schema and embeddings are used).
        index: an ``IndexConfig``; only ``fields`` (JSONPath expressions into the value, as in
            LangGraph) is used: the store embeds with its own model, so ``dims`` must match
            it and ``embed`` must not be given.
        ttl: a ``TTLConfig``: ``default_ttl`` (minutes) for puts without one,
            ``refresh_on_read`` (default true), ``sweep_interval_minutes`` for
            :meth:`start_ttl_sweeper`.
    """

    supports_ttl = True

    def __init__(self, store: MemoryStore, *, index: IndexConfig | None = None,
                 ttl: TTLConfig | None = None) -> None:
        self.store = store
        self.index_config = dict(index) if index else None
        self.ttl_config = dict(ttl) if ttl else None  # type: ignore[assignment]
        self._fields: list[str] | None = None
        if index:
            if index.get("embed") is not None:
                raise ConfigError(
                    "RagtuneStore(index={'embed': ...}): the memory store embeds with its own "
                    "model (StoreConfig / RAGTUNE_EMBEDDING_MODEL); give only 'fields'.")
            dims = index.get("dims")
            if dims is not None and dims != store.dimension:
                raise ConfigError(f"RagtuneStore(index={{'dims': {dims}}}) differs from the "
                                  f"store's embedding dimension {store.dimension}; leave dims out.")
            fields = index.get("fields")
            self._fields = list(fields) if fields else None
        self._sweeper: threading.Thread | None = None
        self._sweeper_stop = threading.Event()

    # BaseStore's get/put/search/... all funnel into batch()/abatch().
    def batch(self, ops: Iterable[Op]) -> list[Result]:
        return [self._run(op) for op in ops]

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        import asyncio

        ops = list(ops)
        return await asyncio.to_thread(self.batch, ops)

    def _run(self, op: Op) -> Result:
        if isinstance(op, GetOp):
            return self._get(op)
        if isinstance(op, PutOp):
            return self._put(op)
        if isinstance(op, SearchOp):
            return self._search(op)
        if isinstance(op, ListNamespacesOp):
            return self._list_namespaces(op)
        raise InvalidInputError(f"unsupported store operation {type(op).__name__}")

    # -- operations ------------------------------------------------------------------------

    def _get(self, op: GetOp) -> Item | None:
        s = self.store
        ns = validate_namespace(op.namespace)
        with s.pool.connection() as conn:
            row = conn.execute(s.render(sql.GET_ITEMS_SQL),
                               {"namespace": list(ns), "message_id": op.key}).fetchone()
            if row and op.refresh_ttl:
                conn.execute(s.render(sql.REFRESH_ITEM_TTL_SQL), {"ids": [row["id"]]})
        return _item(row) if row else None

    def _index_text(self, value: dict[str, Any], index: Any) -> str:
        fields = index if isinstance(index, list) else self._fields
        if not fields:
            return _default_text(value)
        from langgraph.store.base.embed import get_text_at_path

        texts = [t for f in fields for t in get_text_at_path(value, f) if t and t.strip()]
        return "\n".join(texts) if texts else _default_text(value)

    def _put(self, op: PutOp) -> None:
        s = self.store
        ns = validate_namespace(op.namespace)
        if not isinstance(op.key, str) or not op.key:
            raise InvalidInputError(f"store key {op.key!r} must be a non-empty string.")
        with s.pool.connection() as conn:
            if op.value is None:
                conn.execute(s.render(sql.DELETE_ITEM_SQL),
                             {"namespace": list(ns), "message_id": op.key})
                return None
            value = validate_metadata(op.value)
            meta: dict[str, Any] = {"value": value}
            expires = None
            if op.ttl is not None:
                if isinstance(op.ttl, bool) or not isinstance(op.ttl, (int, float)) or op.ttl <= 0:
                    raise InvalidInputError(f"ttl={op.ttl!r} must be a positive number of "
                                            "minutes (or None for no expiry).")
                expires = datetime.now(timezone.utc) + timedelta(minutes=op.ttl)
                meta["ttl"] = float(op.ttl)
            conn.execute(s.render(sql.UPSERT_ITEM_SQL), {
                "namespace": list(ns), "message_id": op.key,
                "content": clean_text(self._index_text(value, op.index), what="item text"),
                "metadata": Jsonb(meta), "expires_at": expires})
        s._wake.set()
        return None

    def _search(self, op: SearchOp) -> list[SearchItem]:
        if op.limit < 0 or op.offset < 0:
            raise InvalidInputError(f"search limit={op.limit!r} and offset={op.offset!r} must "
                                    "be >= 0.")
        prefix = validate_namespace(op.namespace_prefix)
        if op.query:
            items = self._query_search(prefix, op)
        else:
            s = self.store
            with s.pool.connection() as conn:
                rows = conn.execute(s.render(sql.LIST_ITEMS_SQL), {
                    **_prefix_params(prefix),
                    **sql.metadata_filter_params(op.filter, under=("value",)),
                    "limit": op.limit, "offset": op.offset}).fetchall()
            items = [_item(r, search=True) for r in rows]  # type: ignore[misc]
            ids = [r["id"] for r in rows]
            if op.refresh_ttl and ids:
                with s.pool.connection() as conn:
                    conn.execute(s.render(sql.REFRESH_ITEM_TTL_SQL), {"ids": ids})
        return items

    def _query_search(self, prefix: tuple[str, ...], op: SearchOp) -> list[SearchItem]:
        s = self.store
        want = op.offset + op.limit
        if want == 0:
            return []
        sql.metadata_filter_params(op.filter)  # refuse a bad filter before any search runs
        with s.pool.connection() as conn:
            spaces = [tuple(r["namespace"]) for r in conn.execute(
                s.render(sql.NAMESPACES_UNDER_SQL),
                {**_prefix_params(prefix), "limit": MAX_PREFIX_NAMESPACES}).fetchall()]
        if len(spaces) == MAX_PREFIX_NAMESPACES:
            log.warning("search under %r looked into the first %d namespaces only", prefix,
                        MAX_PREFIX_NAMESPACES)
        meta = {"value": op.filter} if op.filter else None
        hits = []
        for ns in spaces:
            hits.extend(s.search(ns, op.query, k=min(want, 1000), metadata=meta))
        hits.sort(key=lambda h: (h.score, h.vector_score or -1.0), reverse=True)
        hits = hits[op.offset:want]
        if not hits:
            return []
        vector = vector_literal(s.embeddings.embed_query(op.query))
        ids = [h.memory.id for h in hits]
        with s.pool.connection() as conn:
            rows = {str(r["id"]): r for r in conn.execute(
                s.render(sql.ITEMS_BY_ID_SQL), {"ids": ids, "vector": vector}).fetchall()}
            if op.refresh_ttl:
                conn.execute(s.render(sql.REFRESH_ITEM_TTL_SQL), {"ids": ids})
        out = []
        for h in hits:
            row = rows.get(h.memory.id)
            if row is None:  # deleted between the search and now
                continue
            sim = row["similarity"]
            out.append(_item(row, score=float(sim) if sim is not None else None,
                             fusion=h.score, search=True))
        return out  # type: ignore[return-value]

    def _list_namespaces(self, op: ListNamespacesOp) -> list[tuple[str, ...]]:
        s = self.store
        prefix = suffix = None
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

    # -- TTL -------------------------------------------------------------------------------

    def sweep_ttl(self) -> int:
        """Delete the expired items (and memories) now; returns how many.

        Expired items are invisible to reads from the moment they expire; this reclaims
        their rows."""
        return self.store.expire()

    def start_ttl_sweeper(self, sweep_interval_minutes: float | None = None
                          ) -> concurrent.futures.Future:
        """Sweep expired items every ``sweep_interval_minutes`` (default: the TTL config's)
        in a daemon thread, until :meth:`stop_ttl_sweeper`. The future completes then."""
        minutes = sweep_interval_minutes or (self.ttl_config or {}).get("sweep_interval_minutes")
        if not minutes or minutes <= 0:
            raise ConfigError("start_ttl_sweeper needs sweep_interval_minutes > 0 (argument "
                              "or RagtuneStore(ttl={'sweep_interval_minutes': ...})).")
        done: concurrent.futures.Future = concurrent.futures.Future()
        if self._sweeper is not None and self._sweeper.is_alive():
            done.set_result(None)
            return done
        self._sweeper_stop.clear()

        def loop() -> None:
            while not self._sweeper_stop.wait(minutes * 60):
                try:
                    n = self.sweep_ttl()
                    if n:
                        log.info("TTL sweep deleted %d expired items", n)
                except Exception:  # the next sweep tries again
                    log.exception("TTL sweep failed")
            done.set_result(None)

        self._sweeper = threading.Thread(target=loop, name="ragtune-ttl-sweeper", daemon=True)
        self._sweeper.start()
        return done

    def stop_ttl_sweeper(self, timeout: float | None = None) -> bool:
        """Stop the sweeper thread; returns whether it stopped within ``timeout``."""
        if self._sweeper is None:
            return True
        self._sweeper_stop.set()
        self._sweeper.join(timeout)
        stopped = not self._sweeper.is_alive()
        if stopped:
            self._sweeper = None
        return stopped


def _matches(part: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
    return len(part) == len(pattern) and all(p in ("*", x) for x, p in zip(part, pattern))
