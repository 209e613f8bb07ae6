"""``ragtune bench retrieval``: search latency and recall of the store against raw pgvector.

Vectors are *text-like*: each is a sparse mix of a few of 48 shared "topic" directions
plus noise (low rank + noise), normalised, so neighbourhoods have the structure of sentence
embeddings. I.i.d. random vectors would make every HNSW graph look bad (recall ~0.06) and
say nothing about real use. Queries are perturbed copies of stored memories' topic mixes.

Memories are spread over namespaces of very different sizes (one large tenant, a few
medium ones, many small ones), because filtered search behaves differently at each size.
Recall@10 is measured against exact search computed in NumPy over the same vectors.

Both sides run in the same process, on the same server, in the same run:

* ``ours``: :meth:`MemoryStore.search` in vector mode (validation, namespace-size plan
  choice, the SQL, row parsing) with embeddings that look the query's vector up;
* ``raw``: a hand-written ``ORDER BY embedding <=> q LIMIT 10`` with a namespace filter, on
  a psycopg connection with the same HNSW settings.

Example:
    $ ragtune bench retrieval --memories 100000 --queries 1000 --json bench-retrieval.json
"""

from __future__ import annotations

import dataclasses
import sys
import time
import uuid
from typing import Any

import numpy as np
from langchain_core.embeddings import Embeddings

from langchain_ragtune.bench._common import now_iso, pct
from langchain_ragtune.hardware import machine_info

__all__ = ["run_retrieval_bench", "text_like_vectors"]

_DIM = 384


def text_like_vectors(n: int, rng: np.random.Generator, topics: np.ndarray,
                      noise: float = 0.6) -> tuple[np.ndarray, np.ndarray]:
    """``n`` unit vectors, each a sparse mix of 2-4 topics plus noise; returns (vectors, mixes)."""
    n_topics = topics.shape[0]
    mixes = np.zeros((n, n_topics), dtype=np.float32)
    for i in range(n):
        picks = rng.choice(n_topics, size=rng.integers(2, 5), replace=False)
        mixes[i, picks] = rng.dirichlet(np.ones(len(picks)))
    vecs = mixes @ topics + noise * rng.standard_normal((n, topics.shape[1])).astype(np.float32) / np.sqrt(topics.shape[1])
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    return vecs.astype(np.float32), mixes


def _namespace_sizes(total: int) -> list[int]:
    """One tenant with half the memories, three medium ones, and many small ones."""
    big = total // 2
    medium = [total // 10] * 3
    rest = total - big - sum(medium)
    small = []
    size = 50
    while rest > 0:
        s = min(size, rest)
        small.append(s)
        rest -= s
        size = 50 if size >= 2000 else size * 2
    return [big, *medium, *small]


class _LookupEmbeddings(Embeddings):
    """Returns precomputed vectors for texts of the form ``"<prefix>:<index>"``."""

    def __init__(self, table: dict[str, np.ndarray]) -> None:
        self.table = table
        self.dimension = _DIM

    def _one(self, text: str) -> list[float]:
        # The store embeds "<turn>\n(in reply to <previous turn>)": the turn is line one.
        prefix, _, idx = text.split("\n", 1)[0].rpartition(" ")[2].partition(":")
        return self.table[prefix][int(idx)].tolist()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self._one(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._one(text)


def run_retrieval_bench(*, memories: int = 100_000, queries: int = 1000, k: int = 10,
                        seed: int = 0, ef_search: int | None = None, pg_uri: str | None = None,
                        keep: bool = False, quiet: bool = False) -> dict[str, Any]:
    """Run the retrieval benchmark; returns the JSON-able result.

    Args:
        memories: memories to store, over namespaces of different sizes.
        queries: search queries (split between the large tenant and the others).
        k: results per query.
        seed: random seed of the synthetic data.
        ef_search: HNSW ``ef_search`` (the store's default when None).
        pg_uri: server to use (the configured/embedded one when None).
        keep: keep the bench schema afterwards (dropped by default).
        quiet: no progress bars.
    """
    import psycopg
    from tqdm import tqdm

    from langchain_ragtune.config import StoreConfig
    from langchain_ragtune.store import MemoryStore, Turn, sql
    from langchain_ragtune.store.base import vector_literal
    from langchain_ragtune.store.sync import connection_kwargs, session_settings

    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((48, _DIM)).astype(np.float32)
    topics /= np.linalg.norm(topics, axis=1, keepdims=True)
    mem_vecs, mem_mix = text_like_vectors(memories, rng, topics)
    sizes = _namespace_sizes(memories)
    owner = np.repeat(np.arange(len(sizes)), sizes)

    # Queries: half on the large tenant, half spread over the others by size.
    q_ns = np.where(rng.random(queries) < 0.5, 0,
                    rng.choice(np.arange(1, len(sizes)), size=queries,
                               p=np.array(sizes[1:]) / sum(sizes[1:])))
    anchors = np.array([rng.choice(np.flatnonzero(owner == ns)) for ns in q_ns])
    q_mix = mem_mix[anchors] + 0.15 * rng.random((queries, topics.shape[0])).astype(np.float32)
    q_vecs = q_mix @ topics + 0.6 * rng.standard_normal((queries, _DIM)).astype(np.float32) / np.sqrt(_DIM)
    q_vecs = (q_vecs / np.linalg.norm(q_vecs, axis=1, keepdims=True)).astype(np.float32)

    schema = f"bench_{uuid.uuid4().hex[:8]}"
    overrides: dict[str, Any] = {"schema": schema}
    if pg_uri:
        overrides["pg_uri"] = pg_uri
    if ef_search:
        overrides["ef_search"] = ef_search
    config = StoreConfig.from_env(**overrides)
    emb = _LookupEmbeddings({"m": mem_vecs, "q": q_vecs})
    store = MemoryStore(config, embeddings=emb, background_embedding=False)
    result: dict[str, Any] = {}
    try:
        store.setup()
        # Bulk load as a user would for a migration: drop the HNSW index, load through our
        # API with vectors, rebuild the index once (much faster than 100k incremental inserts).
        store.drop_ann_index()
        t0 = time.perf_counter()
        batch = 1000
        bar = tqdm(total=memories, desc="ingest", unit="mem", disable=quiet, file=sys.stderr)
        for start in range(0, memories, batch):
            idx = range(start, min(start + batch, memories))
            by_ns: dict[int, list[Turn]] = {}
            for i in idx:
                by_ns.setdefault(int(owner[i]), []).append(
                    Turn(text=f"memory m:{i}", message_id=f"m{i}", thread_id=f"t{i // 50}"))
            for ns, turns in by_ns.items():
                store.add((f"tenant-{ns}",), turns, embed=True)
            bar.update(len(idx))
        bar.close()
        ingest_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        # Without AVX-512 the embedded build has no HNSW: exact search, statistics only.
        store.build_ann_index(maintenance_work_mem="1GB", index=store.ann_index)
        index_s = time.perf_counter() - t0

        # Incremental writes with the index in place (the steady-state write path).
        extra = min(2000, memories)
        t0 = time.perf_counter()
        ack: list[float] = []
        for i in range(extra):
            t1 = time.perf_counter()
            store.add(("tenant-extra",), [Turn(text=f"memory m:{i}", message_id=f"x{i}")], embed=True)
            ack.append((time.perf_counter() - t1) * 1000)
        incr_rows_s = extra / (time.perf_counter() - t0)

        # Exact ground truth per query, within its namespace.
        truth = []
        for qi in range(queries):
            members = np.flatnonzero(owner == q_ns[qi])
            sims = mem_vecs[members] @ q_vecs[qi]
            top = members[np.argsort(-sims)[:k]]
            truth.append({f"m{i}" for i in top})

        def recall(found: list[set[str]]) -> float:
            return round(float(np.mean([len(f & t) / len(t) for f, t in zip(found, truth)])), 4)

        # The baseline runs pgvector's plain query on its own connection, outside the store's
        # code path: the difference is what the store adds.
        raw_sql = store.render(sql.RAW_VECTOR_SEARCH_SQL)
        ours_ms, raw_ms, ours_found, raw_found = [], [], [], []
        with psycopg.connect(store._uri, **connection_kwargs()) as raw:
            raw.execute(session_settings(config))
            # Warm both paths (plan caches, buffers) before timing.
            for qi in range(min(20, queries)):
                store.search((f"tenant-{q_ns[qi]}",), f"q:{qi}", k=k, mode="vector")
                raw.execute(raw_sql, ([f"tenant-{q_ns[qi]}"], vector_literal(q_vecs[qi]), k)).fetchall()
            def ours(qi: int, ns: str) -> None:
                t1 = time.perf_counter()
                hits = store.search((ns,), f"q:{qi}", k=k, mode="vector")
                ours_ms.append((time.perf_counter() - t1) * 1000)
                ours_found.append({h.memory.message_id for h in hits})

            def raw_query(qi: int, ns: str) -> None:
                t1 = time.perf_counter()
                rows = raw.execute(raw_sql, ([ns], vector_literal(q_vecs[qi]), k)).fetchall()
                raw_ms.append((time.perf_counter() - t1) * 1000)
                raw_found.append({r["message_id"] for r in rows})

            # Interleave the two so that background noise hits both alike, and alternate
            # which goes first: the second one finds the pages the first one read in cache.
            for qi in tqdm(range(queries), desc="search", disable=quiet, file=sys.stderr):
                ns = f"tenant-{q_ns[qi]}"
                first, second = (ours, raw_query) if qi % 2 == 0 else (raw_query, ours)
                first(qi, ns)
                second(qi, ns)
        # Hybrid and keyword search under both keyword scorings, interleaved query by query.
        # Every memory holds "memory": BM25 leaves it out of "memory q:N" (found in more
        # than keyword_max_df of the namespace) where ts_rank_cd ranks every row holding
        # it; the query "memory" alone is BM25's worst case (every word common, so every
        # row holding it is scored, with exact counts).
        plain = MemoryStore(dataclasses.replace(config, keyword_scoring="ts_rank_cd"),
                            embeddings=emb, background_embedding=False)
        plain.ann_index = store.ann_index
        scorings = {config.keyword_scoring: store, "ts_rank_cd": plain}
        timings: dict[tuple[str, str], list[float]] = {}
        try:
            for qi in range(min(200, queries)):
                ns = (f"tenant-{q_ns[qi]}",)
                order = list(scorings.items())
                for name, s in (order if qi % 2 == 0 else order[::-1]):
                    for what, text, mode in (("hybrid", f"memory q:{qi}", "hybrid"),
                                             ("keyword", f"memory q:{qi}", "keyword"),
                                             ("keyword_common", "memory", "keyword")):
                        t1 = time.perf_counter()
                        s.search(ns, text, k=k, mode=mode)
                        timings.setdefault((what, name), []).append(
                            (time.perf_counter() - t1) * 1000)
        finally:
            plain.close()
        hybrid_ms = timings[("hybrid", config.keyword_scoring)]
        by_scoring = {name: {what: {"p50_ms": pct(timings[(what, name)], 50),
                                    "p95_ms": pct(timings[(what, name)], 95)}
                             for what in ("hybrid", "keyword", "keyword_common")}
                      for name in scorings}

        result = {
            "ours": {"p50_ms": pct(ours_ms, 50), "p95_ms": pct(ours_ms, 95),
                     "recall_at_10": recall(ours_found)},
            "raw": {"p50_ms": pct(raw_ms, 50), "p95_ms": pct(raw_ms, 95),
                    "recall_at_10": recall(raw_found)},
            "ingest_rows_per_s": round(memories / ingest_s, 1),
            "index_build_s": round(index_s, 1),
            "incremental_rows_per_s": round(incr_rows_s, 1),
            "write_ack_ms": {"p50": pct(ack, 50), "p95": pct(ack, 95)},
            "hybrid": {"p50_ms": pct(hybrid_ms, 50), "p95_ms": pct(hybrid_ms, 95)},
            "keyword_scoring": by_scoring,
            "p95_ratio_ours_over_raw": round(pct(ours_ms, 95) / max(pct(raw_ms, 95), 1e-9), 3),
            "by_namespace_size": _recall_by_size(q_ns, sizes, ours_found, raw_found, truth,
                                                 config.exact_search_below, ours_ms, raw_ms),
            "config": {"memories": memories, "queries": queries, "k": k, "seed": seed,
                       "namespaces": len(sizes), "largest_namespace": sizes[0],
                       "ef_search": config.ef_search, "ann_index": store.ann_index,
                       "keyword_scoring": config.keyword_scoring,
                       "keyword_max_df": config.keyword_max_df,
                       "exact_search_below": config.exact_search_below, "dim": _DIM},
            "machine": machine_info(),
            "date": now_iso(),
        }
    finally:
        try:
            if not keep:
                store.drop_schema()
        finally:
            store.close()
    return result


def _recall_by_size(q_ns: np.ndarray, sizes: list[int], ours: list[set], raw: list[set],
                    truth: list[set], threshold: int, ours_ms: list[float],
                    raw_ms: list[float]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, pred in (("HNSW (ours)", lambda s: s >= threshold),
                        ("exact scan (ours)", lambda s: s < threshold)):
        idx = [i for i, ns in enumerate(q_ns) if pred(sizes[ns])]
        if idx:
            out[label] = {
                "queries": len(idx),
                "ours_recall": round(float(np.mean([len(ours[i] & truth[i]) / len(truth[i]) for i in idx])), 4),
                "raw_recall": round(float(np.mean([len(raw[i] & truth[i]) / len(truth[i]) for i in idx])), 4),
                "ours_p95_ms": pct([ours_ms[i] for i in idx], 95),
                "raw_p95_ms": pct([raw_ms[i] for i in idx], 95),
            }
    return out
