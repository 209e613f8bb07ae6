"""The asynchronous twin of :class:`~langchain_ragtune.store.MemoryStore`.

Same methods with the same arguments, awaited; the SQL, validation and fusion come from
the shared :class:`~langchain_ragtune.store.base.BaseMemoryStore`.

Example:
    >>> async with AsyncMemoryStore.from_env() as store:          # doctest: +SKIP
    ...     await store.setup()
    ...     await store.add(("user-42",), ["I moved to Lisbon."])
    ...     hits = await store.search(("user-42",), "where do I live?")
"""

from __future__ import annotations

import asyncio
import builtins  # `list` below is a method: annotations after it say builtins.list
import contextlib
import logging
from typing import Any, AsyncIterator, Sequence, cast

import psycopg
from psycopg.rows import DictRow
from psycopg_pool import AsyncConnectionPool

from langchain_ragtune.config import StoreConfig
from langchain_ragtune.errors import (
    EmbeddingDimensionError,
    InvalidInputError,
    NamespaceBusyError,
    PgvectorMissingError,
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
from langchain_ragtune.store.sync import _hide_password, connection_kwargs, session_settings, store_error
from langchain_ragtune.store.types import Memory, SearchResult, turns_from, validate_namespace

__all__ = ["AsyncMemoryStore"]

log = logging.getLogger(__name__)


class AsyncMemoryStore(BaseMemoryStore):
    """Long-term memory in PostgreSQL with pgvector, for asyncio applications.

    See :class:`~langchain_ragtune.store.MemoryStore` for the semantics; every method here is
    its awaitable twin. Embedding runs in a background task that calls the embeddings'
    ``aembed_documents`` (LangChain runs sync models in a thread executor).

    Args:
        config: settings (``StoreConfig.from_env()`` when omitted).
        embeddings: any LangChain ``Embeddings``; all-MiniLM-L6-v2 by default.
        pool: an existing ``AsyncConnectionPool``.
        background_embedding: embed in a background task (True) or only on ``flush()``.
    """

    def __init__(self, config: StoreConfig | None = None, *, embeddings: Any = None,
                 pool: AsyncConnectionPool | None = None, background_embedding: bool = True) -> None:
        super().__init__(config, embeddings)
        self._own_pool = pool is None
        self._uri = "<external pool>"
        if pool is None:
            from langchain_ragtune.store.embedded import resolve_pg_uri

            self._uri = resolve_pg_uri(self.config)
            settings = session_settings(self.config)

            async def configure(conn: psycopg.AsyncConnection) -> None:
                await conn.execute(settings)

            pool = AsyncConnectionPool(self._uri, min_size=1, max_size=self.config.pool_size,
                                       kwargs=connection_kwargs(), configure=configure,
                                       open=False, name="ragtune-async")
        self.pool = pool
        self._dim: int | None = None
        self._embed_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._background = background_embedding

    @classmethod
    def from_env(cls, *, embeddings: Any = None, **overrides: Any) -> "AsyncMemoryStore":
        """A store configured from ``RAGTUNE_*`` variables; keyword arguments win."""
        return cls(StoreConfig.from_env(**overrides), embeddings=embeddings)

    @classmethod
    def from_conn_string(cls, uri: str, *, embeddings: Any = None, **overrides: Any) -> "AsyncMemoryStore":
        """A store on the PostgreSQL server at ``uri`` (must have pgvector)."""
        return cls(StoreConfig.from_env(pg_uri=uri, **overrides), embeddings=embeddings)

    async def __aenter__(self) -> "AsyncMemoryStore":
        await self.open()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def open(self) -> None:
        """Open the pool (called by ``async with``)."""
        if self._own_pool:
            try:
                await self.pool.open(wait=True, timeout=self.config.connect_timeout)
            except Exception as exc:
                raise store_error(psycopg.OperationalError(str(exc)), _hide_password(self._uri))

    async def close(self) -> None:
        """Stop the embedder task and close the pool if the store opened it."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        if self._own_pool:
            await self.pool.close()

    @contextlib.asynccontextmanager
    async def _conn(self, timeout: float | None = None
                    ) -> AsyncIterator[psycopg.AsyncConnection[DictRow]]:
        if self._own_pool and self.pool.closed:
            await self.open()
        try:
            async with self.pool.connection(timeout=timeout) as conn:
                # Rows are dicts (see MemoryStore._conn).
                yield cast("psycopg.AsyncConnection[DictRow]", conn)
        except psycopg.Error as exc:
            raise store_error(exc, _hide_password(self._uri)) from exc

    @property
    def dimension(self) -> int:
        """The size of the vectors the configured embeddings produce."""
        if self._dim is None:
            from langchain_ragtune.embeddings import embedding_dimension

            self._dim = embedding_dimension(self.embeddings)
        return self._dim

    async def setup(self) -> None:
        """Create or migrate the schema; see :meth:`MemoryStore.setup`."""
        dim = await asyncio.to_thread(lambda: self.dimension)
        async with self._conn() as conn:
            if await (await conn.execute(sql.CHECK_PGVECTOR_SQL)).fetchone() is None:
                raise PgvectorMissingError(
                    "the PostgreSQL server has no 'vector' extension (pgvector). Install it on "
                    "the server, or unset RAGTUNE_PG_URI to use the embedded server.")
            async with conn.transaction():
                await conn.execute(self.render(sql.SETUP_LOCK_SQL))
                await conn.execute(self.render(sql.CREATE_SCHEMA_SQL))
                await conn.execute(self.render(sql.CREATE_MIGRATIONS_TABLE_SQL))
                cur = await conn.execute(self.render(sql.SELECT_MIGRATION_VERSION_SQL))
                version = (await cur.fetchone())["v"]
                for v in range(version + 1, len(sql.MIGRATIONS)):
                    await conn.execute(sql.render(sql.MIGRATIONS[v], schema=self.schema, dim=dim))
                    await conn.execute(self.render(sql.INSERT_MIGRATION_SQL), {"v": v})
                    if v == 0:
                        await conn.execute(self.render(sql.SET_SETTING_SQL),
                                           {"key": "embedding_dim", "value": str(dim)})
                cur = await conn.execute(self.render(sql.GET_SETTING_SQL), {"key": "embedding_dim"})
                stored = await cur.fetchone()
                ann = self._ann_index_wanted(self._uri)
                await conn.execute(self.render(sql.ENSURE_ANN_INDEX_SQL if ann
                                               else sql.DROP_ANN_INDEX_SQL))
                self.ann_index = ann
            if stored and int(stored["value"]) != dim:
                raise EmbeddingDimensionError(
                    f"schema {self.schema!r} stores {stored['value']}-dimensional vectors but the "
                    f"configured embeddings produce {dim}. Use the embedding model the schema was "
                    "made with, or another schema (RAGTUNE_SCHEMA) for this model.")
        if self._background and self._task is None:
            self._task = asyncio.create_task(self._run_worker(), name="ragtune-embedder")

    # -- writes ----------------------------------------------------------------------------

    async def add(self, namespace: Any, items: Any, *, embed: bool = False) -> list[str]:
        """Remember turns; returns their ids once committed. See :meth:`MemoryStore.add`."""
        namespace = validate_namespace(namespace)
        if isinstance(items, (str, dict)) or hasattr(items, "content"):
            items = [items]
        turns = turns_from(items)
        if not turns:
            return []
        vectors: list[Any] = [None] * len(turns)
        if embed:
            vectors = await self.embeddings.aembed_documents(
                embedding_texts(turns))
        params = [self._insert_params(namespace, t, v) for t, v in zip(turns, vectors)]
        ids: list[str] = []
        async with self._conn() as conn, conn.transaction():
            async with conn.cursor() as cur:
                await cur.executemany(self.render(sql.INSERT_MEMORY_SQL), params, returning=True)
                while True:
                    ids.append((await cur.fetchone())["id"])
                    if not cur.nextset():
                        break
        self._sizes.pop(namespace, None)
        self._wake.set()
        return ids

    async def update(self, namespace: Any, memory_id: str, *, text: str | None = None,
                     metadata: dict | None = None, expires_at: Any = ...) -> bool:
        """Change a memory; see :meth:`MemoryStore.update`."""
        namespace = validate_namespace(namespace)
        params = self._update_params(namespace, memory_id, text=text, metadata=metadata,
                                     expires_at=None if expires_at is ... else expires_at,
                                     set_expiry=expires_at is not ...)
        async with self._conn() as conn:
            row = await (await conn.execute(self.render(sql.UPDATE_MEMORY_SQL), params)).fetchone()
        self._wake.set()
        return row is not None

    async def delete(self, namespace: Any, ids: Any) -> int:
        """Hard-delete memories by id within ``namespace``."""
        namespace = validate_namespace(namespace)
        async with self._conn() as conn:
            cur = await conn.execute(self.render(sql.DELETE_MEMORY_SQL),
                                     {"namespace": list(namespace), "ids": check_ids(ids)})
            rows = await cur.fetchall()
        self._sizes.pop(namespace, None)
        return len(rows)

    async def forget(self, namespace: Any) -> dict[str, Any]:
        """Hard-delete a namespace's memories, datasets and adapter records."""
        namespace = validate_namespace(namespace)
        p = {"namespace": list(namespace)}
        async with self._conn() as conn, conn.transaction():
            n = len(await (await conn.execute(self.render(sql.FORGET_NAMESPACE_SQL), p)).fetchall())
            adapters = await (await conn.execute(self.render(sql.FORGET_ADAPTERS_SQL), p)).fetchall()
            d = (await conn.execute(self.render(sql.FORGET_DATASETS_SQL), p)).rowcount
        self._sizes.pop(namespace, None)
        return {"memories": n, "datasets": d, "adapters": [dict(a) for a in adapters]}

    async def expire(self) -> int:
        """Delete memories whose expiry has passed; returns the count."""
        async with self._conn() as conn:
            return len(await (await conn.execute(self.render(sql.EXPIRE_SQL))).fetchall())

    # -- embedding -------------------------------------------------------------------------

    async def _run_worker(self) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=5.0)
            self._wake.clear()
            try:
                while await self.embed_pending():
                    pass
            except asyncio.CancelledError:
                raise
            except Exception:  # rows stay NULL and are retried
                log.exception("background embedding failed; will retry")
                await asyncio.sleep(2.0)

    async def embed_pending(self, limit: int | None = None) -> int:
        """Embed one batch of turns without a vector; returns how many."""
        limit = limit or self.config.embed_batch_size
        async with self._embed_lock, self._conn() as conn, conn.transaction():
            cur = await conn.execute(self.render(sql.CLAIM_UNEMBEDDED_SQL), {"limit": limit})
            rows = await cur.fetchall()
            if not rows:
                return 0
            vecs = await self.embeddings.aembed_documents(
                [embedding_text(r["speaker"], r["content"], r["prev_speaker"], r["prev_content"])
                 for r in rows])
            async with conn.cursor() as c:
                await c.executemany(self.render(sql.SET_EMBEDDING_SQL),
                                    [{"id": r["id"], "embedding": vector_literal(v)}
                                     for r, v in zip(rows, vecs)])
        return len(rows)

    async def flush(self) -> int:
        """Embed every pending turn now; returns how many."""
        total = 0
        while n := await self.embed_pending():
            total += n
        return total

    # -- reads -----------------------------------------------------------------------------

    async def search(self, namespace: Any, query: str, *, k: int = 10, mode: str = "hybrid",
                     window: int = 0, after: Any = None, before: Any = None,
                     thread_id: str | None = None, metadata: dict | None = None,
                     after_seq: int | None = None,
                     roles: Sequence[str] | None = None) -> list[SearchResult]:
        """Hybrid search within a namespace; see :meth:`MemoryStore.search`."""
        namespace, query, k, mode, window, params = self._search_params(
            namespace, query, k, mode, window, after, before, thread_id, metadata, after_seq,
            roles)
        vector_rows: list[dict] = []
        keyword_rows: list[dict] = []
        async with self._conn() as conn:
            size = 0
            if self._needs_size(mode):
                size = self._cached_size(namespace)
                if size is None:
                    cur = await conn.execute(self.render(sql.COUNT_SQL), {"namespace": list(namespace)})
                    size = (await cur.fetchone())["count"]
                    self._remember_size(namespace, size)
            if mode in ("hybrid", "vector"):
                params["vector"] = vector_literal(await self.embeddings.aembed_query(query))
                vector_rows = await (await conn.execute(self._vector_sql(namespace, size), params)).fetchall()
            if mode in ("hybrid", "keyword"):
                keyword_sql = self._keyword_sql(params, size)
                keyword_rows = await (await conn.execute(keyword_sql, params)).fetchall()
            results = self._fuse(mode, params["limit"] if window else k, vector_rows,
                                 keyword_rows)
            if window and results:
                cur = await conn.execute(self.render(sql.CONTEXT_SQL),
                                         {"ids": [r.id for r in results], "window": window})
                results = self._attach_context(results, await cur.fetchall(), k)
        return results

    async def get(self, namespace: Any, memory_id: str) -> Memory | None:
        """The memory with this id in ``namespace``, or None."""
        namespace = validate_namespace(namespace)
        (mid,) = check_ids([memory_id])
        async with self._conn() as conn:
            cur = await conn.execute(self.render(sql.GET_MEMORY_SQL),
                                     {"namespace": list(namespace), "id": mid})
            row = await cur.fetchone()
        return row_to_memory(row) if row else None

    async def list(self, namespace: Any, *, after_seq: int = 0, limit: int = 100_000) -> list[Memory]:
        """Live memories of ``namespace`` written after ``after_seq``, oldest first."""
        namespace = validate_namespace(namespace)
        for name, value in (("after_seq", after_seq), ("limit", limit)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidInputError(f"{name}={value!r} must be a non-negative int.")
        async with self._conn() as conn:
            cur = await conn.execute(self.render(sql.LIST_SQL), {
                "namespace": list(namespace), "after_seq": after_seq, "limit": limit})
            return [row_to_memory(r) for r in await cur.fetchall()]

    async def count(self, namespace: Any) -> int:
        """Number of live memories in ``namespace``."""
        namespace = validate_namespace(namespace)
        async with self._conn() as conn:
            cur = await conn.execute(self.render(sql.COUNT_SQL), {"namespace": list(namespace)})
            return (await cur.fetchone())["count"]

    async def max_seq(self, namespace: Any) -> int:
        """The newest live memory's sequence number (0 when empty)."""
        namespace = validate_namespace(namespace)
        async with self._conn() as conn:
            cur = await conn.execute(self.render(sql.MAX_SEQ_SQL), {"namespace": list(namespace)})
            return (await cur.fetchone())["seq"]

    async def forgotten_since(self, namespace: Any, *, watermark: int, since: Any) -> int:
        """See :meth:`MemoryStore.forgotten_since`."""
        namespace = validate_namespace(namespace)
        async with self._conn() as conn:
            cur = await conn.execute(self.render(sql.FORGOTTEN_SINCE_SQL), {
                "namespace": list(namespace), "watermark": watermark,
                "since": check_time(since, "since")})
            return (await cur.fetchone())["n"]

    async def list_namespaces(self, *, prefix: Sequence[str] | None = None, limit: int = 100,
                              offset: int = 0) -> builtins.list[tuple[tuple[str, ...], int]]:
        """Namespaces that hold memories, with their sizes."""
        p = list(validate_namespace(prefix)) if prefix else None
        async with self._conn() as conn:
            cur = await conn.execute(self.render(sql.LIST_NAMESPACES_SQL),
                                     {"prefix": p, "limit": limit, "offset": offset})
            return [(tuple(r["namespace"]), r["n"]) for r in await cur.fetchall()]

    async def router_state(self, namespace: tuple[str, ...], *, timeout_s: float | None = None
                           ) -> DictRow | None:
        """Awaitable twin of :meth:`MemoryStore.router_state
        <langchain_ragtune.store.records.AdapterQueries.router_state>`."""
        async with self._conn(timeout=timeout_s) as conn:
            cur = await conn.execute(self.render(sql.ROUTER_STATE_SQL),
                                     {"namespace": list(namespace)})
            return await cur.fetchone()

    @contextlib.asynccontextmanager
    async def namespace_lock(self, namespace: Any) -> AsyncIterator[None]:
        """Hold the namespace's refresh lock or raise NamespaceBusyError."""
        namespace = validate_namespace(namespace)
        p = {"namespace": list(namespace)}
        async with self._conn() as conn:
            cur = await conn.execute(self.render(sql.TRY_NAMESPACE_LOCK_SQL), p)
            if not (await cur.fetchone())["locked"]:
                raise NamespaceBusyError(
                    f"namespace {namespace!r} is being refreshed by another process; try again "
                    "when it finishes.")
            try:
                yield
            finally:
                await conn.execute(self.render(sql.UNLOCK_NAMESPACE_SQL), p)
