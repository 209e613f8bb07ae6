"""`ragtune bench tenants`, small: many namespaces on one server with adapters loaded on
demand, every answer from its own namespace's adapter. The bench starts its own server (the
resolver must read the bench's storage), about a minute on two cores; it reuses the
session's trained fact adapters, so nothing is trained here."""

from __future__ import annotations

import json

import pytest
from fixtures_vllm import require_vllm

pytestmark = [pytest.mark.slow, pytest.mark.vllm]


def test_tenants_bench_serves_every_namespace_its_own_adapter(fact_adapters) -> None:
    require_vllm()
    from langchain_ragtune.bench.tenants import run_tenants_bench

    out = run_tenants_bench(namespaces=30, facts=2, requests=60,
                            fact_adapters=[fact_adapters["v1"], fact_adapters["v2"]],
                            quiet=True)
    assert out["requests"] == 60 and out["namespaces"] == 30
    assert out["failed"] == 0 and out["wrong_answers"] == 0, out["examples"]
    assert out["fact_answers_checked"] >= 2  # both fact namespaces were asked
    # 30 namespaces and a host cache of 16: some adapters are loaded, evicted and reloaded
    by_state = out["first_token_ms_by_state"]
    assert by_state["first"]["n"] == out["namespaces_asked"] and by_state["reload"]["n"] > 0
    for key in ("cold_first_token_ms", "warm_first_token_ms"):
        assert out[key]["n"] > 0 and out[key]["p50"] > 0 and out[key]["p95"] > 0, out[key]
    assert out["adapter_mb"]["cheap"] > 0 and out["adapter_mb"]["fact"] > 0
    assert out["loads_per_s"] > 0
    assert set(out["targets"]) == {"failed == 0", "wrong_answers == 0",
                                   "cold p95 <= 2 x warm p95 + 300 ms"}
    assert out["machine"]["cores"] >= 1
    json.dumps(out)  # what --json writes


def test_tenants_bench_refuses_impossible_sizes_before_starting_anything() -> None:
    from langchain_ragtune.bench.tenants import run_tenants_bench
    from langchain_ragtune.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match=r"facts=5 must not exceed namespaces=3.*"
                                                r"requests=2 must cover"):
        run_tenants_bench(namespaces=3, facts=5, requests=2)
