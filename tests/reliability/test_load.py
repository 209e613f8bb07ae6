"""Concurrent chat sessions through the memory graph: no errors, nothing lost, memory flat.

A short version of ``ragtune bench load`` (50 sessions x 60 s, recorded in
docs/benchmarks.md) that fits in CI: real embedded PostgreSQL, real MiniLM embeddings,
the ready memory graph; an instant echo model stands in for decoding.
"""

from __future__ import annotations

import pytest

from langchain_ragtune.bench.load import run_load_bench


@pytest.mark.slow
def test_concurrent_sessions_lose_nothing(pg_uri, minilm):
    r = run_load_bench(sessions=12, seconds=12, embeddings=minilm, pg_uri=pg_uri, quiet=True)
    assert r["errors"] == 0, r["error_samples"]
    assert r["turns"] >= 12  # every session got answers
    assert r["memories_stored"] == r["memories_expected"]  # each human + AI turn remembered
    # Resident memory after warm-up stays within a bound that a per-turn leak would break
    # (hundreds of turns of 1-2 KB objects each, plus the model's working buffers).
    assert r["rss_growth_after_warmup_mb"] < 250, r["rss_mb"]
