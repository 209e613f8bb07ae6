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
    from langchain_ragtune.bench.swap import run_swap_bench

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
    from langchain_ragtune.bench.swap import run_swap_bench

    with pytest.raises(InvalidInputError, match="publish_delay_s=-1.0 must be 0 or more"):
        run_swap_bench(publish_delay_s=-1.0)


def test_canary_margin_bench_compares_leads_in_process_and_served(
        vllm_server, fact_adapters, monkeypatch) -> None:
    """`ragtune bench canary_margin`, small, on the session's server: every answer token is
    compared, the trained facts' answers lead clearly on both sides, and its table row."""
    from langchain_ragtune.bench.summary import summary_table
    from langchain_ragtune.bench.canary_margin import run_canary_margin_bench

    out = run_canary_margin_bench(questions=12, max_tokens=12, endpoint=vllm_server.url,
                                  adapters=",".join(str(p) for p in fact_adapters.values()),
                                  quiet=True)
    assert set(out["adapters"]) == {p.name for p in fact_adapters.values()}
    o = out["overall"]
    # 12 questions per adapter, each answer compared token for token (a re-tokenized answer
    # that splits differently on the server is skipped and counted)
    assert o["answers"] + out["settings"]["skipped_answers"] == 24
    assert o["answers"] >= 20 and o["tokens"] >= 5 * o["answers"], out
    assert 0 <= o["abs_diff"]["median"] <= o["abs_diff"]["p99"] <= o["abs_diff"]["max"]
    # the first 10 questions are the facts the adapters were trained on: answered by a lead
    # far above any numeric noise in process and on the server alike
    assert o["by_threshold"]["1.0"]["answers"] >= 10, o
    assert o["by_threshold"]["1.0"]["answered_otherwise"] == 0, o
    assert out["server_dtype"] == "unknown (attached server)" and out["machine"]["cores"] >= 1
    assert "answers >= 1 nat lead / of them answered otherwise" in summary_table(
        {"benches": {"canary_margin": out}})
    json.dumps(out)


def test_lead_stats_counts_flips_and_thresholds() -> None:
    from langchain_ragtune.bench.canary_margin import lead_stats

    out = lead_stats([([3.0, 0.2, 1.2], [3.1, -0.3, 1.0]),  # flips at a 0.2 lead
                      ([1.5, 2.5], [1.2, 2.4]),
                      ([-0.1], [0.1])])  # not in-process greedy: no flip counted
    assert (out["answers"], out["tokens"], out["flips"]) == (3, 6, 1)
    assert out["max_lead_at_flip"] == 0.2 and out["answers_otherwise"] == 1
    assert out["abs_diff"]["max"] == 0.5
    assert out["by_threshold"]["0.0"] == {"answers": 2, "answered_otherwise": 1}
    assert out["by_threshold"]["1.0"] == {"answers": 1, "answered_otherwise": 0}
    assert lead_stats([])["abs_diff"] == {"median": None, "p99": None, "max": None}


def test_canary_margin_bench_names_a_missing_adapter(tmp_path) -> None:
    from langchain_ragtune.errors import InvalidInputError
    from langchain_ragtune.bench.canary_margin import run_canary_margin_bench

    with pytest.raises(InvalidInputError, match=r"no adapter folder at .*nowhere.*--set adapters"):
        run_canary_margin_bench(adapters=str(tmp_path / "nowhere"), quiet=True)
