"""``ragtune bench load``: many concurrent chat sessions against the memory graph.

Each session is a thread that keeps chatting through the ready memory graph (route ->
retrieve -> generate -> remember) with the real store on the embedded PostgreSQL and the
real embedding model, for a fixed time. Answer generation is replaced by
:class:`~langchain_ragtune.testing.EchoChatModel` (instant, deterministic): the load under
test is the memory layer's (search, routing, remembering, background embedding), which a
CPU-served language model would otherwise hide behind seconds of decoding.

Bounded by construction: a deadline, a cap on turns per session, loopback only (the
embedded server's Unix socket). It reports errors, turn latency p50/p95, throughput, and
the process's resident memory sampled through the run (flat means no leak), then checks
that every acknowledged turn was stored.

Example:
    $ ragtune bench load --sessions 50 --seconds 60 --json load.json
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

from langchain_ragtune.bench._common import now_iso

__all__ = ["run_load_bench"]


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _growth(rss: list[tuple[float, float]], seconds: float) -> float:
    during = [m for t, m in rss if t <= seconds] or [m for _, m in rss]
    return round(during[-1] - during[max(1, len(during) // 4)] if len(during) > 1 else 0.0, 1)


def run_load_bench(*, sessions: int = 50, seconds: float = 60.0, max_turns: int = 10_000,
                   embeddings: Any = None, pg_uri: str | None = None, keep: bool = False,
                   quiet: bool = False) -> dict[str, Any]:
    """Run ``sessions`` concurrent chat sessions for ``seconds``; returns the JSON result.

    Args:
        sessions: concurrent sessions (threads), each its own user namespace.
        seconds: how long the sessions keep chatting.
        max_turns: cap on turns per session (a second bound besides the deadline).
        embeddings: embeddings (all-MiniLM-L6-v2 by default).
        pg_uri: server (the configured or embedded one by default).
        keep: keep the bench schema afterwards.
        quiet: no progress output.
    """
    import numpy as np
    from langchain_core.messages import HumanMessage

    from langchain_ragtune.config import RouterConfig, StoreConfig
    from langchain_ragtune.router.nodes import create_memory_graph
    from langchain_ragtune.store import MemoryStore
    from langchain_ragtune.testing import EchoChatModel

    schema = f"load_{uuid.uuid4().hex[:8]}"
    overrides: dict[str, Any] = {"schema": schema, "pool_size": min(max(sessions // 2, 4), 20)}
    if pg_uri:
        overrides["pg_uri"] = pg_uri
    store = MemoryStore(StoreConfig.from_env(**overrides), embeddings=embeddings)
    store.setup()
    model = EchoChatModel(prefix="ok")
    graph = create_memory_graph(store, chat_model_factory=lambda adapter: model,
                                config=RouterConfig.from_env())
    remember = getattr(graph, "remember_node", None)

    latencies: list[float] = []
    errors: list[str] = []
    turns_sent = [0] * sessions
    lock = threading.Lock()
    deadline = time.monotonic() + seconds
    topics = ["my sister's wedding in June", "the marathon training plan", "our trip to Kyoto",
              "the new job at the bakery", "adopting a beagle", "learning the cello"]

    def session(i: int) -> None:
        cfg = {"configurable": {"user_id": f"load-{i}", "thread_id": f"load-{i}"}}
        n = 0
        while time.monotonic() < deadline and n < max_turns:
            text = f"Turn {n}: let me tell you about {topics[(i + n) % len(topics)]} (session {i})."
            t0 = time.perf_counter()
            try:
                out = graph.invoke({"messages": [HumanMessage(content=text, id=f"s{i}-h{n}")]}, cfg)
                if not out["messages"][-1].content.startswith("ok:"):
                    raise AssertionError(f"unexpected answer {out['messages'][-1].content[:60]!r}")
            except Exception as exc:  # every failure is counted and reported
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}"[:300])
            else:
                with lock:
                    latencies.append((time.perf_counter() - t0) * 1000)
            n += 1
        turns_sent[i] = n

    rss: list[tuple[float, float]] = []
    threads = [threading.Thread(target=session, args=(i,), daemon=True) for i in range(sessions)]
    start = time.monotonic()
    rss.append((0.0, _rss_mb()))
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        time.sleep(min(5.0, max(0.5, seconds / 12)))
        rss.append((round(time.monotonic() - start, 1), round(_rss_mb(), 1)))
        if not quiet:
            print(f"  t={rss[-1][0]:>5}s turns={len(latencies)} errors={len(errors)} "
                  f"rss={rss[-1][1]} MB", flush=True)
    elapsed = time.monotonic() - start
    for t in threads:
        t.join()
    if remember is not None:
        remember.flush()
    store.flush()

    # Every turn the graph acknowledged (answered) was remembered: human + AI per turn.
    stored = sum(store.count((f"user-load-{i}",)) for i in range(sessions))
    answered = len(latencies)
    try:
        result = {
            "sessions": sessions,
            "seconds": round(elapsed, 1),
            "turns": answered,
            "errors": len(errors),
            "error_samples": errors[:5],
            "turns_per_s": round(answered / elapsed, 2),
            "latency_ms": {"p50": round(float(np.percentile(latencies, 50)), 2) if latencies else None,
                           "p95": round(float(np.percentile(latencies, 95)), 2) if latencies else None,
                           "max": round(max(latencies), 2) if latencies else None},
            "memories_stored": stored,
            "memories_expected": 2 * answered,
            "rss_mb": rss,
            # Growth while the sessions ran, from the end of warm-up (the first quarter) to
            # the last sample before the deadline: a per-turn leak grows with turns. The
            # samples after the deadline include the embedder's final catch-up batches.
            "rss_growth_after_warmup_mb": _growth(rss, seconds),
            "generation": "EchoChatModel (memory layer under load; no LLM decoding)",
            "date": now_iso(),
        }
    finally:
        if remember is not None and hasattr(remember, "stop"):
            remember.stop()
        try:
            if not keep:
                store.drop_schema()
        finally:
            store.close()
    return result
