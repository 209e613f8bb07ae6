"""``ragtune bench ingest``: the write path and ingest throughput with real turns and embeddings.

The turns are real conversation turns (LoCoMo when present, else the shipped sample) written
through :meth:`MemoryStore.add` and embedded with the real embedding model: the
acknowledgement a chat app waits for per turn (target p95 <= 10 ms) and the rate at which
history becomes searchable.

Example:
    >>> from langchain_ragtune.bench.ingest import run_ingest_bench   # doctest: +SKIP
    >>> run_ingest_bench(turns=400, ack_turns=100)["ack_ms"]["p95"]    # doctest: +SKIP
    3.1
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from langchain_ragtune.bench._common import now_iso
from langchain_ragtune.errors import InvalidInputError

__all__ = ["run_ingest_bench"]


def _bench_turns(n: int, data: str | None) -> tuple[list[Any], str]:
    from langchain_ragtune.errors import DatasetError
    from langchain_ragtune.eval.locomo import load_locomo, load_sample, to_turns

    try:
        convs, source = load_locomo(data), "locomo"
    except (DatasetError, InvalidInputError):
        if data is not None:
            raise
        convs, source = load_sample(), "sample"
    base = [t for conv in convs for t in to_turns(conv)]
    turns = []
    # Repeat the conversations when more turns are asked for, with fresh message ids so
    # every write is a real insert (writes are idempotent on message id).
    for i in range(n):
        t = base[i % len(base)]
        rnd = i // len(base)
        turns.append(type(t)(text=t.text, speaker=t.speaker, role=t.role,
                             message_id=f"{t.thread_id}/{t.message_id}/r{rnd}",
                             thread_id=f"{t.thread_id}/r{rnd}", occurred_at=t.occurred_at,
                             metadata=t.metadata))
    return turns, source


def run_ingest_bench(*, turns: int = 2000, ack_turns: int = 300, batch: int = 128,
                     data: str | None = None, pg_uri: str | None = None,
                     embeddings: Any = None, keep: bool = False,
                     quiet: bool = False) -> dict[str, Any]:
    """Measure the write path and ingest throughput with real turns and real embeddings.

    Three phases on a throwaway schema:

    1. ``ack_turns`` single-turn ``add`` calls, embedder idle: the acknowledgement latency
       a chat app sees per message (``ack_ms``);
    2. the same again while the background embedder is busy with a backlog
       (``ack_ms_background_embedding``; both share this machine's cores);
    3. the rest in batches of ``batch``, then ``flush()``: written rows/s, embedded rows/s,
       and end-to-end ``ingest_rows_per_s`` (written and embedded).

    Args:
        turns: total turns written (LoCoMo repeated as needed).
        ack_turns: single-turn writes timed in each of phases 1 and 2.
        batch: turns per ``add`` call in phase 3.
        data: a LoCoMo-format file (default: LoCoMo if found, else the shipped sample).
        pg_uri: server (the configured/embedded one by default).
        embeddings: embeddings to use (the store's default, all-MiniLM-L6-v2, by default).
        keep: keep the bench schema afterwards.
        quiet: no progress bars.
    """
    if turns < 2 * ack_turns + 1 or ack_turns < 1 or batch < 1:
        raise InvalidInputError(f"turns={turns} must exceed 2 x ack_turns={ack_turns} (>= 1); "
                                f"batch={batch} must be >= 1.")
    from tqdm import tqdm

    from langchain_ragtune.config import StoreConfig
    from langchain_ragtune.eval.metrics import latency_summary
    from langchain_ragtune.eval.retrieval_eval import describe_embeddings
    from langchain_ragtune.hardware import machine_info
    from langchain_ragtune.store import MemoryStore

    all_turns, source = _bench_turns(turns, data)
    schema = f"bench_ingest_{uuid.uuid4().hex[:8]}"
    overrides: dict[str, Any] = {"schema": schema}
    if pg_uri:
        overrides["pg_uri"] = pg_uri
    config = StoreConfig.from_env(**overrides)
    store = MemoryStore(config, embeddings=embeddings, background_embedding=False)
    ns = ("bench-ingest",)
    try:
        store.setup()
        store.embeddings.embed_documents(["warm up the model"])  # load it before timing
        store.add(("bench-warmup",), all_turns[:1])               # and open the connections
        bar = tqdm(total=turns, desc="ingest bench", unit="turn", disable=quiet)

        ack: list[float] = []
        for t in all_turns[:ack_turns]:
            t0 = time.perf_counter()
            store.add(ns, [t])
            ack.append((time.perf_counter() - t0) * 1000)
            bar.update(1)

        # Phase 2: a second store object on the same schema runs the background embedder
        # over the backlog of phase 1 while this one keeps writing.
        busy = MemoryStore(config, embeddings=store.embeddings, background_embedding=True)
        ack_bg: list[float] = []
        try:
            busy.setup()  # starts its embedder thread on the backlog
            for t in all_turns[ack_turns:2 * ack_turns]:
                t0 = time.perf_counter()
                store.add(ns, [t])
                ack_bg.append((time.perf_counter() - t0) * 1000)
                bar.update(1)
        finally:
            busy.close()

        rest = all_turns[2 * ack_turns:]
        t0 = time.perf_counter()
        for i in range(0, len(rest), batch):
            store.add(ns, rest[i:i + batch])
            bar.update(len(rest[i:i + batch]))
        add_s = time.perf_counter() - t0
        bar.close()
        pending = store.pending()
        t0 = time.perf_counter()
        embedded = store.flush()
        embed_s = time.perf_counter() - t0
        written = store.count(ns)
        add_rate = len(rest) / add_s if add_s else None
        embed_rate = embedded / embed_s if embed_s and embedded else None
        result = {
            "ack_ms": latency_summary(ack),
            "ack_ms_background_embedding": latency_summary(ack_bg),
            "batch_add_rows_per_s": round(add_rate, 1) if add_rate else None,
            "embed_rows_per_s": round(embed_rate, 1) if embed_rate else None,
            # Written and embedded, one after the other: 1 / (1/write rate + 1/embed rate).
            "ingest_rows_per_s": round(1 / (1 / add_rate + 1 / embed_rate), 1)
            if add_rate and embed_rate else None,
            "embedded": embedded,
            "pending_before_flush": pending,
            "turns": written,
            "config": {"turns": turns, "ack_turns": ack_turns, "batch": batch, "source": source,
                       "schema": schema, "schema_kept": keep,
                       "embedding_model": describe_embeddings(store.embeddings),
                       "embed_batch_size": config.embed_batch_size},
            "machine": machine_info(),
            "date": now_iso(),
        }
    finally:
        if not keep:
            store.drop_schema()
        store.close()
    return result
