"""The parametric side's records in PostgreSQL: adapter versions, datasets, router state.

The tables live next to the memories (one schema, one ``setup()``) and their queries live
in :mod:`~langchain_ragtune.store.sql` like every other; these methods execute them, so
connection handling, error translation and the schema name stay in one place. Rows come
back as plain dicts: what a row *means* (an :class:`~langchain_ragtune.tuning.registry.
AdapterRecord`, a dataset, a routing state) is decided by the room that owns the concept.

:class:`AdapterQueries` and :class:`DatasetQueries` are mixed into
:class:`~langchain_ragtune.store.MemoryStore`; the router's one read also has an awaitable
twin on :class:`~langchain_ragtune.store.AsyncMemoryStore`.

Example:
    >>> row = store.current_adapter(("user-42",))     # doctest: +SKIP
    >>> row["name"], row["watermark_seq"]             # doctest: +SKIP
    ('user-42-v3-1a2b3c', 412)
"""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Iterable, Mapping

import psycopg
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from langchain_ragtune.errors import AdapterError
from langchain_ragtune.store import sql

__all__ = ["AdapterQueries", "DatasetQueries", "SchemaAdmin"]


class _Executes:
    """What the mixins need from the store (:class:`~langchain_ragtune.store.MemoryStore`
    defines both): its connections, with errors translated, and its schema."""

    if TYPE_CHECKING:  # declared for type checkers only: the store's own methods serve
        def _conn(self, timeout: float | None = None
                  ) -> ContextManager[psycopg.Connection[DictRow]]: ...

        def render(self, template: str) -> str: ...

    def _one_row(self, template: str, params: Mapping[str, Any] | None = None
                 ) -> DictRow | None:
        with self._conn() as conn:
            return conn.execute(self.render(template), params).fetchone()

    def _rows(self, template: str, params: Mapping[str, Any] | None = None
              ) -> builtins.list[DictRow]:
        with self._conn() as conn:
            return conn.execute(self.render(template), params).fetchall()


class AdapterQueries(_Executes):
    """The adapter registry's table and the per-namespace "current version" pointer."""

    def next_adapter_version(self, namespace: tuple[str, ...]) -> int:
        """The version number the next adapter of ``namespace`` gets (1 for the first)."""
        row = self._one_row(sql.NEXT_ADAPTER_VERSION_SQL, {"namespace": list(namespace)})
        return int(row["version"]) if row else 1

    def insert_adapter(self, params: Mapping[str, Any]) -> DictRow:
        """Insert an adapter version (``params`` as :data:`sql.INSERT_ADAPTER_SQL` names them).

        Raises:
            AdapterError: the name or the (namespace, version) pair is already taken.
        """
        params = {**params, "metrics": Jsonb(dict(params.get("metrics") or {}))}
        with self._conn() as conn:
            try:
                row = conn.execute(self.render(sql.INSERT_ADAPTER_SQL), params).fetchone()
            except psycopg.errors.UniqueViolation as exc:  # a conflict, not a server fault
                raise AdapterError(
                    f"cannot register adapter {params['name']!r} as version "
                    f"{params['version']} of {tuple(params['namespace'])!r}: "
                    f"{exc.diag.message_detail or exc}. Use registry.next_version() and "
                    "make_adapter_name() for a fresh version and name.") from None
        assert row is not None  # INSERT ... RETURNING
        return row

    def set_adapter_status(self, adapter_id: int, status: str, reason: str | None
                           ) -> DictRow | None:
        """Change a version's status; the updated row, or None if no such id."""
        return self._one_row(sql.SET_ADAPTER_STATUS_SQL,
                             {"id": adapter_id, "status": status, "reason": reason})

    def update_adapter_metrics(self, adapter_id: int, metrics: Mapping[str, Any]
                               ) -> DictRow | None:
        """Merge ``metrics`` into a version's metrics; the updated row, or None."""
        return self._one_row(sql.UPDATE_ADAPTER_METRICS_SQL,
                             {"id": adapter_id, "metrics": Jsonb(dict(metrics))})

    def switch_current_adapter(self, namespace: tuple[str, ...], adapter_id: int,
                               check: Callable[[DictRow | None], None]) -> DictRow:
        """Point ``namespace`` at ``adapter_id`` in one transaction; the new current row.

        Under the namespace's switch lock the target row is locked and handed to ``check``
        (which raises to refuse: wrong namespace, not switchable); then the pointer moves,
        the target becomes ``serving`` and the version it replaces ``retired``. Readers see
        the old pointer or the new one, never a state in between.
        """
        p = {"namespace": list(namespace), "id": adapter_id, "adapter_id": adapter_id}
        with self._conn() as conn, conn.transaction():
            conn.execute(self.render(sql.SWITCH_LOCK_SQL), p)
            check(conn.execute(self.render(sql.LOCK_ADAPTER_SQL), p).fetchone())
            prev = conn.execute(self.render(sql.SELECT_CURRENT_POINTER_SQL), p).fetchone()
            conn.execute(self.render(sql.UPSERT_CURRENT_ADAPTER_SQL), p)
            if prev and prev["adapter_id"] != adapter_id:
                conn.execute(self.render(sql.SET_ADAPTER_STATUS_SQL),
                             {"id": prev["adapter_id"], "status": "retired", "reason": None})
            conn.execute(self.render(sql.SET_ADAPTER_STATUS_SQL),
                         {"id": adapter_id, "status": "serving", "reason": None})
            row = conn.execute(self.render(sql.CURRENT_ADAPTER_SQL), p).fetchone()
        assert row is not None  # just written, under the lock
        return row

    def clear_current_adapter(self, namespace: tuple[str, ...]) -> None:
        """Remove ``namespace``'s pointer (under its switch lock)."""
        p = {"namespace": list(namespace)}
        with self._conn() as conn, conn.transaction():
            conn.execute(self.render(sql.SWITCH_LOCK_SQL), p)
            conn.execute(self.render(sql.CLEAR_CURRENT_ADAPTER_SQL), p)

    def current_adapter(self, namespace: tuple[str, ...]) -> DictRow | None:
        """The row of the version serving ``namespace`` now, or None."""
        return self._one_row(sql.CURRENT_ADAPTER_SQL, {"namespace": list(namespace)})

    def current_adapters(self) -> builtins.list[DictRow]:
        """Every namespace's current version, most recently switched first."""
        return self._rows(sql.ALL_CURRENT_ADAPTERS_SQL)

    def adapter_by_name(self, name: str) -> DictRow | None:
        """The version registered under ``name``, or None."""
        return self._one_row(sql.GET_ADAPTER_BY_NAME_SQL, {"name": name})

    def adapter_by_id(self, adapter_id: int) -> DictRow | None:
        """The version with this registry id, or None."""
        return self._one_row(sql.GET_ADAPTER_BY_ID_SQL, {"id": adapter_id})

    def list_adapters(self, namespace: tuple[str, ...]) -> builtins.list[DictRow]:
        """Every version of ``namespace``, oldest first."""
        return self._rows(sql.LIST_ADAPTERS_SQL, {"namespace": list(namespace)})

    def latest_adapter(self, namespace: tuple[str, ...],
                       statuses: builtins.list[str] | None) -> DictRow | None:
        """The newest version of ``namespace`` (among ``statuses`` when given), or None."""
        return self._one_row(sql.LATEST_ADAPTER_SQL,
                             {"namespace": list(namespace), "statuses": statuses})

    def router_state(self, namespace: tuple[str, ...], *, timeout_s: float | None = None
                     ) -> DictRow | None:
        """The current adapter with the count of memories forgotten since it was trained,
        in one round trip (what the router reads per query when no registry object is
        at hand)."""
        with self._conn(timeout=timeout_s) as conn:
            return conn.execute(self.render(sql.ROUTER_STATE_SQL),
                                {"namespace": list(namespace)}).fetchone()

    def pending_namespaces(self, *, min_new: int, limit: int, min_interval_s: float = 0.0
                           ) -> builtins.list[tuple[tuple[str, ...], int]]:
        """Namespaces with at least ``min_new`` live memories newer than their adapter's
        watermark and no adapter switched in during the last ``min_interval_s`` seconds,
        most new memories first."""
        rows = self._rows(sql.PENDING_NAMESPACES_SQL, {"min_new": min_new, "limit": limit,
                                                       "min_interval_s": float(min_interval_s)})
        return [(tuple(r["namespace"]), int(r["new"])) for r in rows]


class DatasetQueries(_Executes):
    """Distilled training datasets and their examples."""

    def insert_dataset(self, namespace: tuple[str, ...], *, watermark_seq: int,
                       stats: Mapping[str, Any], examples: Iterable[Mapping[str, Any]]
                       ) -> DictRow:
        """Store a dataset version and its examples in one transaction; the dataset row.

        Each example is a mapping with ``kind``, ``split``, ``messages``, ``source_ids`` and
        ``meta``.
        """
        with self._conn() as conn, conn.transaction():
            row = conn.execute(self.render(sql.INSERT_DATASET_SQL), {
                "namespace": list(namespace), "watermark_seq": int(watermark_seq),
                "stats": Jsonb(dict(stats))}).fetchone()
            assert row is not None  # INSERT ... RETURNING
            params = [{"dataset_id": row["id"], "kind": e["kind"], "split": e["split"],
                       "messages": Jsonb(e["messages"]), "source_ids": list(e["source_ids"]),
                       "meta": Jsonb(e["meta"])} for e in examples]
            if params:
                with conn.cursor() as cur:
                    cur.executemany(self.render(sql.INSERT_EXAMPLE_SQL), params)
        return row

    def update_dataset_stats(self, dataset_id: int, stats: Mapping[str, Any]) -> None:
        """Merge ``stats`` into a dataset's stats."""
        with self._conn() as conn:
            conn.execute(self.render(sql.UPDATE_DATASET_STATS_SQL),
                         {"id": int(dataset_id), "stats": Jsonb(dict(stats))})

    def dataset(self, dataset_id: int) -> DictRow | None:
        """The dataset row with this id, or None."""
        return self._one_row(sql.GET_DATASET_SQL, {"id": int(dataset_id)})

    def latest_dataset(self, namespace: tuple[str, ...]) -> DictRow | None:
        """The namespace's newest dataset row, or None."""
        return self._one_row(sql.LATEST_DATASET_SQL, {"namespace": list(namespace)})

    def list_datasets(self, namespace: tuple[str, ...]) -> builtins.list[DictRow]:
        """Every dataset row of the namespace, oldest first."""
        return self._rows(sql.LIST_DATASETS_SQL, {"namespace": list(namespace)})

    def dataset_examples(self, dataset_id: int, split: str | None) -> builtins.list[DictRow]:
        """A dataset's example rows (of one split, or all), in stored order."""
        return self._rows(sql.LOAD_EXAMPLES_SQL, {"dataset_id": int(dataset_id), "split": split})


class SchemaAdmin(_Executes):
    """Whole-schema operations for throwaway schemas (benchmarks, evaluations) and the
    approximate index around a bulk load."""

    def drop_schema(self) -> None:
        """Drop this store's schema and everything in it. Irreversible."""
        with self._conn() as conn:
            conn.execute(self.render(sql.DROP_SCHEMA_SQL))

    def install_job_queue(self, schema: str, ddl: str) -> bool:
        """Create ``schema`` and run the job queue's ``ddl`` in it unless already done (one
        process at a time); returns whether it was installed now."""
        with self._conn() as conn, conn.transaction():
            conn.execute(sql.render(sql.QUEUE_INSTALL_LOCK_SQL, schema=schema))
            conn.execute(sql.render(sql.CREATE_QUEUE_SCHEMA_SQL, schema=schema))
            if conn.execute(sql.render(sql.QUEUE_INSTALLED_SQL, schema=schema)).fetchone()["ok"]:
                return False
            conn.execute(sql.render(sql.SET_QUEUE_SEARCH_PATH_SQL, schema=schema))
            conn.execute(ddl)  # no parameters: sent as written
            return True

    def drop_job_queue(self, schema: str) -> None:
        """Drop the job queue's schema (throwaway queues of benchmarks). Irreversible."""
        with self._conn() as conn:
            conn.execute(sql.render(sql.DROP_SCHEMA_SQL, schema=schema))

    def drop_ann_index(self) -> None:
        """Drop the HNSW index (before a bulk load: one build afterwards is much faster than
        growing the index row by row)."""
        with self._conn() as conn:
            conn.execute(self.render(sql.DROP_ANN_INDEX_SQL))

    def build_ann_index(self, *, maintenance_work_mem: str = "1GB", index: bool = True) -> None:
        """Build the HNSW index (unless ``index`` is false) with ``maintenance_work_mem`` for
        the build, then refresh the planner's statistics of the memories table."""
        with self._conn() as conn:
            conn.execute(sql.SET_MAINTENANCE_WORK_MEM_SQL, {"value": maintenance_work_mem})
            if index:
                conn.execute(self.render(sql.ENSURE_ANN_INDEX_SQL))
            conn.execute(self.render(sql.ANALYZE_MEMORIES_SQL))
