"""The pure core shared by :class:`MemoryStore` and :class:`AsyncMemoryStore`.

Everything here is I/O-free: rendering SQL for the configured schema, building statement
parameters, fusing ranked lists, and turning rows into :class:`Memory` objects. The sync
and async stores only move these values to and from PostgreSQL.

Example:
    >>> fused = rrf_fuse([["a", "b"], ["b", "c"]], rrf_k=60)
    >>> [key for key, _ in fused]
    ['b', 'a', 'c']
"""

from __future__ import annotations

import logging

import time
from datetime import datetime
from typing import Any, Hashable, Iterable, Literal, Mapping, Sequence

from psycopg.types.json import Jsonb

from langchain_ragtune.config import StoreConfig
from langchain_ragtune.errors import InvalidInputError
from langchain_ragtune.store import sql
from langchain_ragtune.store.types import (
    Memory,
    SearchResult,
    Turn,
    _utc,
    clean_text,
    validate_k,
    validate_metadata,
    validate_namespace,
)

__all__ = ["BaseMemoryStore", "embedding_text", "embedding_texts", "keyword_df_cap", "rrf_fuse",
           "vector_literal"]

log = logging.getLogger(__name__)

SearchMode = Literal["hybrid", "vector", "keyword"]
_MODES = ("hybrid", "vector", "keyword")
_MAX_WINDOW = 20


def vector_literal(vec: Sequence[float]) -> str:
    """pgvector's text form of a vector (``'[0.1,0.2]'``), cast with ``::halfvec`` in SQL."""
    return "[" + ",".join(f"{float(x):.7g}" for x in vec) + "]"


def embedding_text(speaker: str | None, content: str, prev_speaker: str | None = None,
                   prev_content: str | None = None) -> str:
    """What gets embedded for a memory.

    The speaker's name matters to questions about people, and the previous turn of the
    thread gives a reply its question. The turn itself comes first so that a long previous
    turn is what the embedding model truncates.
    """
    text = f"{speaker}: {content}" if speaker else content
    if prev_content:
        prev = f"{prev_speaker}: {prev_content}" if prev_speaker else prev_content
        text = f"{text}\n(in reply to {prev[:500]})"
    return text


def embedding_texts(turns: Sequence[Any]) -> list[str]:
    """Embedding texts for a batch of new turns, each with its predecessor in the batch."""
    out = []
    prev_by_thread: dict[Any, Any] = {}
    for t in turns:
        prev = prev_by_thread.get(t.thread_id) if t.thread_id is not None else None
        out.append(embedding_text(t.speaker, t.text, prev.speaker if prev else None,
                                  prev.text if prev else None))
        prev_by_thread[t.thread_id] = t
    return out


def rrf_fuse(rankings: Sequence[Sequence[Hashable]], *, rrf_k: int = 60,
             weights: Sequence[float] | None = None) -> list[tuple[Hashable, float]]:
    """Reciprocal rank fusion of several ranked lists of keys, best first.

    Each list contributes ``weight / (rrf_k + rank)`` (rank from 1) to every key in it. Ties
    keep the order in which keys were first seen, so the result is deterministic.
    """
    scores: dict[Hashable, float] = {}
    weights = weights or [1.0] * len(rankings)
    for ranking, weight in zip(rankings, weights):
        for rank, key in enumerate(ranking, start=1):
            scores[key] = scores.get(key, 0.0) + weight / (rrf_k + rank)
    order = {key: i for i, key in enumerate(scores)}
    return sorted(scores.items(), key=lambda kv: (-kv[1], order[kv[0]]))


def keyword_df_cap(n_docs: int, max_df: float, floor: int) -> int:
    """Most memories a query word may be found in before BM25 search leaves it out.

    A word is common when it is in more than ``max_df`` of the namespace's ``n_docs``
    memories and in more than ``floor`` of them (so small namespaces keep their words);
    ``max_df >= 1`` keeps every word.

    Example:
        >>> keyword_df_cap(600, 0.05, 10), keyword_df_cap(40, 0.05, 10)
        (30, 10)
    """
    if max_df >= 1:
        return 2**62  # a bigint LIMIT that no count reaches
    return max(int(max_df * max(n_docs, 0)), int(floor))


def row_to_memory(row: Mapping[str, Any]) -> Memory:
    """Build a :class:`Memory` from a row selected with the store's memory columns."""
    return Memory(
        id=row["id"],
        seq=row["seq"],
        namespace=tuple(row["namespace"]),
        text=row["content"],
        speaker=row["speaker"],
        role=row["role"],
        message_id=row["message_id"],
        thread_id=row["thread_id"],
        occurred_at=row["occurred_at"],
        created_at=row["created_at"],
        metadata=row["metadata"] or {},
        expires_at=row["expires_at"],
        embedded=row["embedded"],
    )


class BaseMemoryStore:
    """Configuration, SQL and pure helpers common to the sync and async stores.

    Not used directly: see :class:`~langchain_ragtune.store.MemoryStore` and
    :class:`~langchain_ragtune.store.AsyncMemoryStore`.
    """

    config: StoreConfig

    def __init__(self, config: StoreConfig | None, embeddings: Any) -> None:
        self.config = config or StoreConfig.from_env()
        if embeddings is None:
            from langchain_ragtune.embeddings import default_embeddings

            embeddings = default_embeddings(self.config.embedding_model)
        self.embeddings = embeddings
        self._rendered: dict[str, str] = {}
        # Namespace sizes decide exact scan vs HNSW; a slightly stale size only changes the
        # plan, never the correctness, so it is cached briefly.
        self._sizes: dict[tuple[str, ...], tuple[int, float]] = {}
        #: Whether vector search may use the HNSW index (decided by ``setup()``).
        self.ann_index = True

    def _ann_index_wanted(self, uri: str | None) -> bool:
        """``config.ann_index``, with ``auto`` resolved for the server at ``uri``."""
        if self.config.ann_index != "auto":
            return self.config.ann_index == "on"
        from langchain_ragtune.store.embedded import embedded_hnsw_problem

        problem = embedded_hnsw_problem(uri)
        if problem is not None:
            log.warning("no HNSW index: %s. Vector search scans each namespace exactly (fast "
                        "below ~50k memories per namespace); for larger ones use a PostgreSQL "
                        "server with pgvector (RAGTUNE_PG_URI).", problem)
        return problem is None

    @property
    def schema(self) -> str:
        """The PostgreSQL schema holding this store's tables."""
        return self.config.schema

    def render(self, template: str) -> str:
        """SQL text of a template from :mod:`langchain_ragtune.store.sql` for this schema."""
        text = self._rendered.get(template)
        if text is None:
            text = self._rendered[template] = sql.render(template, schema=self.schema)
        return text

    # -- writes ----------------------------------------------------------------------------

    @staticmethod
    def _insert_params(namespace: tuple[str, ...], turn: Turn,
                       vector: Sequence[float] | None = None) -> dict[str, Any]:
        return {
            "namespace": list(namespace),
            "message_id": turn.message_id,
            "thread_id": turn.thread_id,
            "role": turn.role,
            "speaker": turn.speaker,
            "content": turn.text,
            "metadata": Jsonb(turn.metadata),
            "occurred_at": turn.occurred_at,
            "expires_at": turn.expires_at,
            "embedding": vector_literal(vector) if vector is not None else None,
        }

    @staticmethod
    def _update_params(namespace: tuple[str, ...], memory_id: str, *, text: str | None,
                       metadata: Mapping[str, Any] | None, expires_at: Any,
                       set_expiry: bool) -> dict[str, Any]:
        return {
            "namespace": list(namespace),
            "id": _check_id(memory_id),
            "content": clean_text(text) if text is not None else None,
            "metadata": Jsonb(validate_metadata(metadata)) if metadata is not None else None,
            "expires_at": _utc(expires_at, "expires_at"),
            "set_expiry": set_expiry,
        }

    # -- search ----------------------------------------------------------------------------

    def _search_params(self, namespace: Any, query: Any, k: Any, mode: Any, window: Any,
                       after: Any, before: Any, thread_id: Any, metadata: Any,
                       after_seq: Any, roles: Any = None
                       ) -> tuple[tuple[str, ...], str, int, str, int, dict]:
        namespace = validate_namespace(namespace)
        query = clean_text(query, what="query")
        k = validate_k(k)
        if mode not in _MODES:
            raise InvalidInputError(f"mode={mode!r} is not a search mode; use one of {_MODES}.")
        if isinstance(window, bool) or not isinstance(window, int) or not 0 <= window <= _MAX_WINDOW:
            raise InvalidInputError(f"window={window!r} must be an int in 0..{_MAX_WINDOW} "
                                    "(turns of context on each side of a hit).")
        if after_seq is not None and (isinstance(after_seq, bool) or not isinstance(after_seq, int)):
            raise InvalidInputError(f"after_seq={after_seq!r} must be an int or None.")
        if thread_id is not None and not isinstance(thread_id, str):
            raise InvalidInputError(f"thread_id={thread_id!r} must be a string or None.")
        if roles is not None and (isinstance(roles, str) or not roles
                                  or not all(isinstance(r, str) and r for r in roles)):
            raise InvalidInputError(f"roles={roles!r} must be a non-empty list of role names, "
                                    "e.g. ['human'] (or None for every role).")
        params = {
            "roles": list(roles) if roles is not None else None,
            "namespace": list(namespace),
            "text": query,
            "after": _utc(after, "after"),
            "before": _utc(before, "before"),
            "thread_id": thread_id,
            **sql.metadata_filter_params(metadata),
            "after_seq": after_seq,
            # Fusion needs deeper candidate lists than the k it returns; one-sided modes don't.
            # With a window, extra candidates replace hits that fall inside an earlier window.
            "limit": k * self.config.candidates if mode == "hybrid" or window else k,
        }
        return namespace, query, k, mode, window, params

    def _needs_size(self, mode: str) -> bool:
        """Whether a search in ``mode`` needs the namespace's size (plan choice, BM25's N)."""
        return mode != "keyword" or self.config.keyword_scoring == "bm25"

    def _keyword_sql(self, params: dict[str, Any], size: int) -> str:
        """The keyword statement for the configured scoring; adds its parameters to ``params``."""
        if self.config.keyword_scoring == "ts_rank_cd":
            return self.render(sql.KEYWORD_SQL)
        params["n_docs"] = size
        params["df_cap"] = keyword_df_cap(size, self.config.keyword_max_df,
                                          self.config.keyword_df_floor)
        params["k1"] = float(self.config.bm25_k1)
        return self.render(sql.KEYWORD_BM25_SQL)

    def _vector_sql(self, namespace: tuple[str, ...], size: int | None) -> str:
        exact = not self.ann_index or (size is not None and size < self.config.exact_search_below)
        return self.render(sql.VECTOR_EXACT_SQL if exact else sql.VECTOR_HNSW_SQL)

    def _cached_size(self, namespace: tuple[str, ...]) -> int | None:
        hit = self._sizes.get(namespace)
        if hit and time.monotonic() - hit[1] < 30.0:
            return hit[0]
        return None

    def _remember_size(self, namespace: tuple[str, ...], size: int) -> None:
        self._sizes[namespace] = (size, time.monotonic())

    def _fuse(self, mode: str, k: int, vector_rows: list[dict], keyword_rows: list[dict]
              ) -> list[SearchResult]:
        """Combine candidate rows into the best ``k`` results, best first (pure)."""
        by_id: dict[str, dict] = {}
        vscore: dict[str, float] = {}
        kscore: dict[str, float] = {}
        for row in vector_rows:
            by_id.setdefault(row["id"], row)
            vscore[row["id"]] = float(row["vscore"])
        for row in keyword_rows:
            by_id.setdefault(row["id"], row)
            kscore[row["id"]] = float(row["kscore"])
        if mode == "vector":
            ranked = [(r["id"], float(r["vscore"])) for r in vector_rows]
        elif mode == "keyword":
            ranked = [(r["id"], float(r["kscore"])) for r in keyword_rows]
        else:
            ranked = rrf_fuse([[r["id"] for r in vector_rows], [r["id"] for r in keyword_rows]],
                              rrf_k=self.config.rrf_k, weights=(1.0, self.config.keyword_weight))
        return [
            SearchResult(memory=row_to_memory(by_id[i]), score=s, vector_score=vscore.get(i),
                         keyword_score=kscore.get(i))
            for i, s in ranked[:k]
        ]

    @staticmethod
    def _attach_context(results: list[SearchResult], rows: Iterable[Mapping[str, Any]],
                        k: int) -> list[SearchResult]:
        """Give each hit its window of turns and keep the best ``k`` non-overlapping ones.

        A hit that lies inside the window of a better hit adds nothing the reader has not
        seen, so it is skipped and the next candidate takes its place.
        """
        groups: dict[str, list[Memory]] = {}
        for row in rows:
            groups.setdefault(row["hit_id"], []).append(row_to_memory(row))
        out: list[SearchResult] = []
        covered: set[str] = set()
        for r in results:
            if r.id in covered:
                continue
            ctx = sorted(groups.get(r.id, [r.memory]), key=lambda m: (m.occurred_at, m.seq))
            covered.update(m.id for m in ctx)
            out.append(SearchResult(memory=r.memory, score=r.score, vector_score=r.vector_score,
                                    keyword_score=r.keyword_score, context=tuple(ctx)))
            if len(out) == k:
                break
        return out


def _check_id(memory_id: Any) -> str:
    import uuid

    try:
        return str(uuid.UUID(str(memory_id)))
    except (ValueError, TypeError):
        raise InvalidInputError(f"memory id {memory_id!r} is not a memory id (a UUID returned by "
                                "add() or search()).") from None


def check_ids(ids: Any) -> list[str]:
    """Validate a list of memory ids (UUID strings)."""
    if isinstance(ids, str):
        ids = [ids]
    if not isinstance(ids, (list, tuple, set)):
        raise InvalidInputError(f"ids={ids!r} must be a list of memory ids.")
    return [_check_id(i) for i in ids]


def check_time(value: Any, what: str) -> datetime | None:
    """Validate an optional datetime / ISO string (naive = UTC)."""
    return _utc(value, what)
