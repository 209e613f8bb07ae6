"""`ragtune bench swap` end to end, small, on the session's vLLM server: the benchmark's
own checks (answers by version, every swap's phases) work, so its numbers can be trusted."""

from __future__ import annotations

import json
import statistics

import pytest
from fixtures_vllm import TEST_CACHE

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


def test_swap_bench_publishes_under_load_and_reports_every_swap(
        vllm_server, fact_adapters, pg_uri, schema, monkeypatch) -> None:
    from langchain_ragtune.serving.bench import run_swap_bench

    monkeypatch.setenv("RAGTUNE_PG_URI", pg_uri)
    out = run_swap_bench(requests=16, concurrency=2, swaps=2, rate_rounds=1, rate_tokens=8,
                         endpoint=vllm_server.url, schema=schema, publish_delay_s=0.2,
                         cache_dir=TEST_CACHE / "serving-adapters", quiet=True)
    assert out["requests"] == 16
    assert out["failed"] == 0 and out["wrong_answers"] == 0, out["examples"]
    assert [s["to"].split(":")[1] for s in out["swaps"]] == ["v2", "v1"]
    assert all(s["canary_methods"] == ["scored", "scored"] for s in out["swaps"]), out["swaps"]
    assert out["swap_s"] == round(statistics.median(s["swap_s"] for s in out["swaps"]), 3)
    assert out["swap"]["old_unloaded"] and out["swap"]["max_swap_s"] >= out["swap_s"]
    assert sum(out["answers_by_version"].values()) == 16 - 16 // 4  # every 4th is base
    assert out["base_tokens_per_s"] > 0 and out["adapter_tokens_per_s"] > 0
    assert out["idle_first_publish"]["swap_s"] > 0
    assert out["settings"]["publish_delay_s"] == 0.2
    assert out["machine"]["cores"] >= 1 and "vector_isa" in out["machine"]
    json.dumps(out)  # what --json writes


def test_swap_bench_refuses_a_negative_delay() -> None:
    from langchain_ragtune.errors import InvalidInputError
    from langchain_ragtune.serving.bench import run_swap_bench

    with pytest.raises(InvalidInputError, match="publish_delay_s=-1.0 must be 0 or more"):
        run_swap_bench(publish_delay_s=-1.0)
