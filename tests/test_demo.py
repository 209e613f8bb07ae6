"""``ragtune demo --quick`` end to end: the only test of the whole loop (remember -> distill
-> train -> publish to vLLM -> route -> answer -> remember), so it stays, kept small: the
shipped sample conversation, a tiny training run, the session's shared vLLM server."""

from __future__ import annotations

import json
import os
import uuid

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.vllm, pytest.mark.train]

#: The issue's budget for `ragtune demo --quick` on this 2-core machine (seconds).
QUICK_BUDGET_S = float(os.environ.get("RAGTUNE_DEMO_BUDGET_S", 8 * 60))


def test_demo_quick_end_to_end(pg_uri, vllm_server, tmp_path, monkeypatch):
    from langchain_ragtune.demo import run_demo

    schema = f"t_demo_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("RAGTUNE_PG_URI", pg_uri)
    monkeypatch.setenv("RAGTUNE_SCHEMA", schema)
    monkeypatch.setenv("RAGTUNE_VLLM_URLS", vllm_server.url)
    try:
        result = run_demo(quick=True, sample=True, quiet=True, out_dir=tmp_path)
    finally:
        import psycopg

        with psycopg.connect(pg_uri, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    stages = {s["stage"]: s for s in result["stages"]}
    assert result["ok"], [s for s in result["stages"] if s["status"] != "ok"]
    assert list(stages) == ["store", "model", "ingest", "tune", "serve", "publish", "recent",
                            "ask", "summary"]
    assert result["refresh"]["status"] == "ready" and sum(result["refresh"]["examples"].values())
    assert result["publish"]["name"] == result["refresh"]["adapter_name"]

    qs = result["questions"]
    assert qs and not [q for q in qs if q.get("error")]
    by_kind = {q["kind"]: q for q in qs}
    assert by_kind["small talk"]["route"] == "none"
    # the memory added after training is newer than the adapter: retrieval answers it
    recent = by_kind["recent"]
    assert recent["route"] == "retrieval", recent["reasons"]
    assert "newer than the adapter's watermark" in recent["reasons"][0]
    assert "Saffron" in recent["answer"], recent["answer"]
    # the published adapter answers some questions (holistic ones go to the weights)
    assert any(q["route"] in ("parametric", "hybrid") for q in qs)
    assert any(q["model"] == result["publish"]["name"] for q in qs)
    assert all(q["answer"].strip() for q in qs)

    summary = result["summary"]
    assert summary["overall"]["questions"] == len(qs)
    assert set(summary["routes"]) <= {"none", "parametric", "retrieval", "hybrid"}
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["questions"] == qs
    print(f"demo --quick: {result['seconds']} s, stages {result['stage_seconds']}")
    assert result["seconds"] < QUICK_BUDGET_S
