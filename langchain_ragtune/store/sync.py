"""The synchronous memory store on PostgreSQL + pgvector.

Example:
    >>> from langchain_ragtune.store import MemoryStore               # doctest: +SKIP
    >>> with MemoryStore.from_env() as store:                        # doctest: +SKIP
    ...     store.setup()
    ...     store.add(("user-42",), ["I adopted a beagle called Toby."])
    ...     hits = store.search(("user-42",), "what is my dog's name?", k=3)
"""

from __future__ import annotations

import builtins  # `list` below is a method: annotations after it say builtins.list
import contextlib
import logging
import threading
from typing import Any, Iterator, Sequence, cast

import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg_pool import ConnectionPool

from langchain_ragtune.config import StoreConfig
from langchain_ragtune.errors import (
    EmbeddingDimensionError,
    InvalidInputError,
    NamespaceBusyError,
    PgvectorMissingError,
    StoreError,
)
from langchain_ragtune.store import sql
from langchain_ragtune.store.base import (
    BaseMemoryStore,
    check_ids,
    check_time,
    embedding_text,
    embedding_texts,
    row_to_memory,
    vector_literal,
)
from langchain_ragtune.store.records import AdapterQueries, DatasetQueries, SchemaAdmin
from langchain_ragtune.store.types import (
    Memory,
    SearchResult,
    turns_from,
    validate_namespace,
)

__all__ = ["MemoryStore"]

log = logging.getLogger(__name__)


def connection_kwargs() -> dict[str, Any]:
    """psycopg settings of every store connection (also right for LangGraph's savers)."""
    # prepare_threshold=None: prepared (generic) plans can skip the HNSW index for vector
    # search; the statements are cheap to plan.
    return {"autocommit": True, "prepare_threshold": None, "row_factory": dict_row}


def session_settings(config: StoreConfig) -> str:
    """Per-connection settings: iterative HNSW scans so filtered searches still return k rows."""
    return sql.SESSION_SETTINGS_SQL.format(ef_search=int(config.ef_search))


def store_error(exc: Exception, uri_hint: str) -> StoreError:
    """Translate a psycopg error into a StoreError that tells the fix."""
    if isinstance(exc, psycopg.errors.UndefinedTable):
        return StoreError(f"the ragtune tables are missing ({exc.diag.message_primary}); "
                          "call store.setup() once (or run `ragtune add` which does).")
    if isinstance(exc, psycopg.OperationalError):
        return StoreError(f"cannot reach PostgreSQL at {uri_hint}: {exc}. Check RAGTUNE_PG_URI "
                          "and that the server is running.")
    return StoreError(f"PostgreSQL error: {exc}")


class MemoryStore(AdapterQueries, DatasetQueries, SchemaAdmin, BaseMemoryStore):
    """Long-term memory in PostgreSQL with pgvector: write turns, find them again.

    A namespace (a tuple of strings such as ``("user-42",)``) is a hard partition: no
    search, listing, count or deletion crosses it. Writes are acknowledged once the raw turn
    is committed; a background thread embeds new turns in batches, and keyword search finds
    a turn before its vector exists. Nothing acknowledged is lost: a turn whose embedding
    failed or was interrupted is picked up again by the next embedder run.

    Args:
        config: settings (``StoreConfig.from_env()`` when omitted).
        embeddings: any LangChain ``Embeddings``; the shipped all-MiniLM-L6-v2 by default.
        pool: an existing ``psycopg_pool.ConnectionPool`` to use instead of opening one.
        background_embedding: embed in a background thread (True) or only on ``flush()``.

    Example:
        >>> store = MemoryStore(StoreConfig(pg_uri="postgresql://localhost/app"))  # doctest: +SKIP
        >>> store.setup()                                                          # doctest: +SKIP
    """

    def __init__(self, config: StoreConfig | None = None, *, embeddings: Any = None,
                 pool: ConnectionPool | None = None, background_embedding: bool = True) -> None:
        super().__init__(config, embeddings)
        self._own_pool = pool is None
        if pool is None:
            from langchain_ragtune.store.embedded import resolve_pg_uri

            self._uri = resolve_pg_uri(self.config)
            settings = session_settings(self.config)

            def configure(conn: psycopg.Connection) -> None:
                conn.execute(settings)

            pool = ConnectionPool(self._uri, min_size=1, max_size=self.config.pool_size,
                                  kwargs=connection_kwargs(), configure=configure, open=False,
                                  name="ragtune")
            try:
                pool.open(wait=True, timeout=self.config.connect_timeout)
            except Exception as exc:
                raise store_error(psycopg.OperationalError(str(exc)), _hide_password(self._uri))
        else:
            self._uri = "<external pool>"
        self.pool = pool
        self._dim: int | None = None
        self._embed_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._background = background_embedding

    # -- lifecycle -------------------------------------------------------------------------

    @classmethod
    def from_env(cls, *, embeddings: Any = None, **overrides: Any) -> "MemoryStore":
        """A store configured from ``RAGTUNE_*`` variables; keyword arguments win."""
        return cls(StoreConfig.from_env(**overrides), embeddings=embeddings)

    @classmethod
    def from_conn_string(cls, uri: str, *, embeddings: Any = None, **overrides: Any) -> "MemoryStore":
        """A store on the PostgreSQL server at ``uri`` (must have pgvector)."""
        return cls(StoreConfig.from_env(pg_uri=uri, **overrides), embeddings=embeddings)

    def __enter__(self) -> "MemoryStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Stop the embedder (finishing its batch) and close the pool if the store opened it."""
        self._stop.set()
        self._wake.set()
        if self._worker is not None:
            self._worker.join(timeout=30)
            self._worker = None
        if self._own_pool:
            self.pool.close()

    @contextlib.contextmanager
    def _conn(self, timeout: float | None = None) -> Iterator[psycopg.Connection[DictRow]]:
        try:
            with self.pool.connection(timeout=timeout) as conn:
                # Rows are dicts: the store's pool sets dict_row, and a pool passed in must
                # too (connection_kwargs()); the pool's type does not carry its row factory.
                yield cast("psycopg.Connection[DictRow]", conn)
        except psycopg.Error as exc:
            raise store_error(exc, _hide_password(self._uri)) from exc

    def setup(self) -> None:
        """Create or migrate the schema (idempotent; safe from several processes at once).

        Raises:
            PgvectorMissingError: the server has no pgvector extension.
            EmbeddingDimensionError: the schema holds vectors of another size than the
                configured embeddings produce.
        """
        dim = self.dimension
        with self._conn() as conn:
            if conn.execute(sql.CHECK_PGVECTOR_SQL).fetchone() is None:
                raise PgvectorMissingError(
                    "the PostgreSQL server has no 'vector' extension (pgvector). Install it on "
                    "the server (e.g. the postgresql-<version>-pgvector package, or the "
                    "pgvector/pgvector Docker image), or unset RAGTUNE_PG_URI to use the "
                    "embedded server that ships with it.")
            with conn.transaction():
                conn.execute(self.render(sql.SETUP_LOCK_SQL))
                conn.execute(self.render(sql.CREATE_SCHEMA_SQL))
                conn.execute(self.render(sql.CREATE_MIGRATIONS_TABLE_SQL))
                version = conn.execute(self.render(sql.SELECT_MIGRATION_VERSION_SQL)).fetchone()["v"]
                for v in range(version + 1, len(sql.MIGRATIONS)):
                    stmt = sql.render(sql.MIGRATIONS[v], schema=self.schema, dim=dim)
                    conn.execute(stmt)
                    conn.execute(self.render(sql.INSERT_MIGRATION_SQL), {"v": v})
                    if v == 0:
                        conn.execute(self.render(sql.SET_SETTING_SQL),
                                     {"key": "embedding_dim", "value": str(dim)})
                stored = conn.execute(self.render(sql.GET_SETTING_SQL),
                                      {"key": "embedding_dim"}).fetchone()
                ann = self._ann_index_wanted(self._uri)
                conn.execute(self.render(sql.ENSURE_ANN_INDEX_SQL if ann
                                         else sql.DROP_ANN_INDEX_SQL))
                self.ann_index = ann
            if stored and int(stored["value"]) != dim:
                raise EmbeddingDimensionError(
                    f"schema {self.schema!r} stores {stored['value']}-dimensional vectors but the "
                    f"configured embeddings produce {dim}. Use the embedding model the schema was "
                    f"made with, or another schema (RAGTUNE_SCHEMA) for this model.")
        self._start_worker()

    @property
    def dimension(self) -> int:
        """The size of the vectors the configured embeddings produce."""
        if self._dim is None:
            from langchain_ragtune.embeddings import embedding_dimension

            self._dim = embedding_dimension(self.embeddings)
        return self._dim

    # -- writes ----------------------------------------------------------------------------

    def add(self, namespace: Any, items: Any, *, embed: bool = False) -> list[str]:
        """Remember turns; returns their ids once they are committed (the acknowledgement).

        Args:
            namespace: the namespace, e.g. ``("user-42",)``.
            items: :class:`Turn` objects, LangChain messages, dicts of Turn fields, or
                strings (a single one of these is accepted too).
            embed: embed before committing (slower acknowledgement, searchable by vector at
                once) instead of in the background.

        Returns:
            The memory ids, in input order. Re-adding a (namespace, message_id) returns the
            existing id and changes nothing.
        """
        namespace = validate_namespace(namespace)
        if isinstance(items, (str, dict)) or hasattr(items, "content"):
            items = [items]
        turns = turns_from(items)
        if not turns:
            return []
        vectors: list[Any] = [None] * len(turns)
        if embed:
            vectors = self.embeddings.embed_documents(
                embedding_texts(turns))
        params = [self._insert_params(namespace, t, v) for t, v in zip(turns, vectors)]
        ids: list[str] = []
        with self._conn() as conn, conn.transaction():
            with conn.cursor() as cur:
                cur.executemany(self.render(sql.INSERT_MEMORY_SQL), params, returning=True)
                while True:
                    ids.append(cur.fetchone()["id"])
                    if not cur.nextset():
                        break
        self._sizes.pop(namespace, None)
        self._wake.set()
        return ids

    def update(self, namespace: Any, memory_id: str, *, text: str | None = None,
               metadata: dict | None = None, expires_at: Any = ...) -> bool:
        """Change a memory's text, metadata or expiry; returns False if it is not there.

        Changing the text clears its vector; the embedder computes the new one.
        """
        namespace = validate_namespace(namespace)
        params = self._update_params(namespace, memory_id, text=text, metadata=metadata,
                                     expires_at=None if expires_at is ... else expires_at,
                                     set_expiry=expires_at is not ...)
        with self._conn() as conn:
            row = conn.execute(self.render(sql.UPDATE_MEMORY_SQL), params).fetchone()
        self._wake.set()
        return row is not None

    def delete(self, namespace: Any, ids: Any) -> int:
        """Hard-delete memories by id within ``namespace``; returns how many were deleted."""
        namespace = validate_namespace(namespace)
        with self._conn() as conn:
            rows = conn.execute(self.render(sql.DELETE_MEMORY_SQL),
                                {"namespace": list(namespace), "ids": check_ids(ids)}).fetchall()
        self._sizes.pop(namespace, None)
        return len(rows)

    def forget(self, namespace: Any) -> dict[str, Any]:
        """Hard-delete every memory, dataset and adapter record of ``namespace``.

        Returns:
            ``{"memories": n, "datasets": n, "adapters": [{"name", "path"}, ...]}``; the
            caller (``ragtune forget``) removes the adapter folders and unloads them from
            vLLM.
        """
        namespace = validate_namespace(namespace)
        p = {"namespace": list(namespace)}
        with self._conn() as conn, conn.transaction():
            n = len(conn.execute(self.render(sql.FORGET_NAMESPACE_SQL), p).fetchall())
            adapters = conn.execute(self.render(sql.FORGET_ADAPTERS_SQL), p).fetchall()
            d = conn.execute(self.render(sql.FORGET_DATASETS_SQL), p).rowcount
        self._sizes.pop(namespace, None)
        return {"memories": n, "datasets": d, "adapters": [dict(a) for a in adapters]}

    def expire(self) -> int:
        """Delete memories whose ``expires_at`` has passed (all namespaces); returns the count.

        Expired memories are already invisible to search and listing; this reclaims them.
        """
        with self._conn() as conn:
            return len(conn.execute(self.render(sql.EXPIRE_SQL)).fetchall())

    # -- embedding -------------------------------------------------------------------------

    def _start_worker(self) -> None:
        if self._background and self._worker is None:
            self._stop.clear()
            self._worker = threading.Thread(target=self._run_worker, name="ragtune-embedder",
                                            daemon=True)
            self._worker.start()
            self._wake.set()

    def _run_worker(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=5.0)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                while self.embed_pending() and not self._stop.is_set():
                    pass
            except Exception:  # keep the thread alive: the rows stay NULL and are retried
                log.exception("background embedding failed; will retry")
                self._stop.wait(2.0)

    def embed_pending(self, limit: int | None = None) -> int:
        """Embed one batch of turns that have no vector yet; returns how many were embedded."""
        limit = limit or self.config.embed_batch_size
        with self._embed_lock, self._conn() as conn, conn.transaction():
            rows = conn.execute(self.render(sql.CLAIM_UNEMBEDDED_SQL), {"limit": limit}).fetchall()
            if not rows:
                return 0
            vecs = self.embeddings.embed_documents(
                [embedding_text(r["speaker"], r["content"], r["prev_speaker"], r["prev_content"])
                 for r in rows])
            with conn.cursor() as cur:
                cur.executemany(self.render(sql.SET_EMBEDDING_SQL),
                                [{"id": r["id"], "embedding": vector_literal(v)}
                                 for r, v in zip(rows, vecs)])
        return len(rows)

    def flush(self) -> int:
        """Embed every pending turn now, in this thread; returns how many were embedded."""
        total = 0
        while n := self.embed_pending():
            total += n
        return total

    def pending(self) -> int:
        """How many turns (all namespaces) still wait for their vector."""
        with self._conn() as conn:
            return conn.execute(self.render(sql.COUNT_UNEMBEDDED_SQL)).fetchone()["n"]

    # -- reads -----------------------------------------------------------------------------

    def search(self, namespace: Any, query: str, *, k: int = 10, mode: str = "hybrid",
               window: int = 0, after: Any = None, before: Any = None,
               thread_id: str | None = None, metadata: dict | None = None,
               after_seq: int | None = None,
               roles: Sequence[str] | None = None) -> list[SearchResult]:
        """Find the memories of ``namespace`` that best match ``query``.

        Hybrid mode fuses HNSW/exact cosine search with PostgreSQL full-text search by
        reciprocal rank fusion; ``vector`` and ``keyword`` use one side only. The keyword
        side ranks by BM25 and leaves out query words common in the namespace
        (``StoreConfig.keyword_scoring``, ``keyword_max_df``).

        Args:
            namespace: where to search; nothing outside it is ever returned.
            query: the question or keywords.
            k: how many results (1..1000).
            mode: ``"hybrid"``, ``"vector"`` or ``"keyword"``.
            window: also return up to this many turns of the same thread on each side of
                every hit (``SearchResult.context``).
            after, before: only memories that occurred in ``[after, before)``.
            thread_id: only memories of this thread.
            metadata: only memories whose metadata matches this filter: plain values must
                be contained; ``{"k": {"$gt": 3}}`` and ``$eq $ne $gte $lt $lte`` compare
                (:func:`~langchain_ragtune.store.sql.metadata_filter_params`).
            after_seq: only memories written after this sequence number.
            roles: only memories of these roles (``"human"``, ``"ai"``, ``"note"``...).

        Returns:
            Up to ``k`` results, best first, with scores and provenance.
        """
        namespace, query, k, mode, window, params = self._search_params(
            namespace, query, k, mode, window, after, before, thread_id, metadata, after_seq,
            roles)
        vector_rows: list[dict] = []
        keyword_rows: list[dict] = []
        with self._conn() as conn:
            size = 0
            if self._needs_size(mode):
                size = self._cached_size(namespace)
                if size is None:
                    size = conn.execute(self.render(sql.COUNT_SQL),
                                        {"namespace": list(namespace)}).fetchone()["count"]
                    self._remember_size(namespace, size)
            if mode in ("hybrid", "vector"):
                params["vector"] = vector_literal(self.embeddings.embed_query(query))
                vector_rows = conn.execute(self._vector_sql(namespace, size), params).fetchall()
            if mode in ("hybrid", "keyword"):
                keyword_rows = conn.execute(self._keyword_sql(params, size), params).fetchall()
            results = self._fuse(mode, params["limit"] if window else k, vector_rows,
                                 keyword_rows)
            if window and results:
                rows = conn.execute(self.render(sql.CONTEXT_SQL),
                                    {"ids": [r.id for r in results], "window": window}).fetchall()
                results = self._attach_context(results, rows, k)
        return results

    def get(self, namespace: Any, memory_id: str) -> Memory | None:
        """The memory with this id in ``namespace``, or None."""
        namespace = validate_namespace(namespace)
        (mid,) = check_ids([memory_id])
        with self._conn() as conn:
            row = conn.execute(self.render(sql.GET_MEMORY_SQL),
                               {"namespace": list(namespace), "id": mid}).fetchone()
        return row_to_memory(row) if row else None

    def list(self, namespace: Any, *, after_seq: int = 0, limit: int = 100_000) -> list[Memory]:
        """Live memories of ``namespace`` written after ``after_seq``, oldest first."""
        namespace = validate_namespace(namespace)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
            raise InvalidInputError(f"limit={limit!r} must be a positive int.")
        if isinstance(after_seq, bool) or not isinstance(after_seq, int):
            raise InvalidInputError(f"after_seq={after_seq!r} must be an int.")
        with self._conn() as conn:
            rows = conn.execute(self.render(sql.LIST_SQL), {
                "namespace": list(namespace), "after_seq": after_seq, "limit": int(limit)}).fetchall()
        return [row_to_memory(r) for r in rows]

    def count(self, namespace: Any) -> int:
        """Number of live memories in ``namespace``."""
        namespace = validate_namespace(namespace)
        with self._conn() as conn:
            return conn.execute(self.render(sql.COUNT_SQL),
                                {"namespace": list(namespace)}).fetchone()["count"]

    def max_seq(self, namespace: Any) -> int:
        """The newest live memory's sequence number in ``namespace`` (0 when empty)."""
        namespace = validate_namespace(namespace)
        with self._conn() as conn:
            return conn.execute(self.render(sql.MAX_SEQ_SQL),
                                {"namespace": list(namespace)}).fetchone()["seq"]

    def forgotten_since(self, namespace: Any, *, watermark: int, since: Any) -> int:
        """How many memories at or below ``watermark`` were deleted at or after ``since``.

        The router uses this to tell that an adapter may hold forgotten facts.
        """
        namespace = validate_namespace(namespace)
        with self._conn() as conn:
            return conn.execute(self.render(sql.FORGOTTEN_SINCE_SQL), {
                "namespace": list(namespace), "watermark": watermark,
                "since": check_time(since, "since")}).fetchone()["n"]

    def list_namespaces(self, *, prefix: Sequence[str] | None = None, limit: int = 100,
                        offset: int = 0) -> builtins.list[tuple[tuple[str, ...], int]]:
        """Namespaces that hold memories (optionally under ``prefix``), with their sizes."""
        p = list(validate_namespace(prefix)) if prefix else None
        with self._conn() as conn:
            rows = conn.execute(self.render(sql.LIST_NAMESPACES_SQL),
                                {"prefix": p, "limit": limit, "offset": offset}).fetchall()
        return [(tuple(r["namespace"]), r["n"]) for r in rows]

    # -- coordination ----------------------------------------------------------------------

    @contextlib.contextmanager
    def namespace_lock(self, namespace: Any) -> Iterator[None]:
        """Hold the namespace's refresh lock (across processes and hosts) or raise.

        Raises:
            NamespaceBusyError: another process holds it.
        """
        namespace = validate_namespace(namespace)
        p = {"namespace": list(namespace)}
        with self._conn() as conn:
            if not conn.execute(self.render(sql.TRY_NAMESPACE_LOCK_SQL), p).fetchone()["locked"]:
                raise NamespaceBusyError(
                    f"namespace {namespace!r} is being refreshed by another process; try again "
                    "when it finishes (the lock is released when that process ends).")
            try:
                yield
            finally:
                conn.execute(self.render(sql.UNLOCK_NAMESPACE_SQL), p)


def _hide_password(uri: str) -> str:
    import re

    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", uri)
