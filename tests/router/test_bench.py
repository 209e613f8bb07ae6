"""The router benchmark's pure part runs and reports what docs/benchmarks.md quotes."""

from __future__ import annotations


def test_router_bench_pure_part():
    from langchain_ragtune.bench.registry import run_bench

    out = run_bench("router", {"queries": 300, "e2e": False, "quiet": True})
    assert out["decision_queries"] == 300 and out["k"] == 6
    assert set(out["decision_overhead_ms"]) >= {"p50", "p95", "p99", "mean", "n"}
    assert out["decision_overhead_ms"]["n"] == 300
    assert sum(out["decision_routes"].values()) == 300
    assert {"retrieval", "hybrid", "parametric"} <= set(out["decision_routes"])
    assert "e2e" not in out and isinstance(out["target_met"], bool)


def test_percentiles():
    from langchain_ragtune.bench.router import percentiles

    p = percentiles([float(i) for i in range(1, 101)])
    assert (p["p50"], p["p95"], p["n"]) == (51.0, 95.0, 100)
    assert percentiles([])["p50"] is None
