"""``ragtune eval locomo`` in every mode, for real: a few questions of one conversation.

The shipped sample conversation is ingested with the real MiniLM embeddings, its adapter is
distilled and trained for real (a tiny run) and published into the session's vLLM server,
and every mode answers through that server, graded by the served model as the judge.
What the numbers are is not asserted (a 135M model on a few questions): that every mode
answered with the memory it is about, and that the JSON has the shape other tools read.
"""

from __future__ import annotations

import json
import uuid

import pytest

from langchain_ragtune.cli import main


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.train
def test_eval_every_mode_on_a_real_server(pg_uri, vllm_server, serving_base_model, tmp_path,
                                          monkeypatch, capsys):
    schema = f"t_eval_ans_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("RAGTUNE_PG_URI", pg_uri)
    monkeypatch.setenv("RAGTUNE_VLLM_URLS", vllm_server.url)
    monkeypatch.setenv("RAGTUNE_BASE_MODEL", str(serving_base_model))
    monkeypatch.setenv("RAGTUNE_HOME", str(tmp_path / "home"))
    # the training run checks itself closed-book: a few short answers are enough here
    monkeypatch.setenv("RAGTUNE_EVAL_MAX_NEW_TOKENS", "16")
    monkeypatch.setenv("RAGTUNE_CANARIES", "1")
    out = tmp_path / "eval.json"
    try:
        rc = main(["eval", "locomo", "--sample", "--mode", "all", "--max-questions", "2",
                   "--categories", "1,2,4", "--k", "4", "--schema", schema,
                   "--teacher", "none", "--max-examples", "48", "--max-steps", "4",
                   "--heldout-questions", "2", "--context-tokens", "1024",
                   "--answer-tokens", "24", "--judge", "served", "--judge-tokens", "32",
                   "--holistic", "1", "--holistic-modes", "parametric,retrieval",
                   "--no-progress",
                   "--json", str(out), "--report", str(tmp_path / "report")])
    finally:
        import psycopg

        with psycopg.connect(pg_uri, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    assert rc == 0
    printed = capsys.readouterr().out
    assert "parametric" in printed and "F1" in printed
    result = json.loads(out.read_text())
    modes = result["modes"]
    assert list(modes) == ["none", "full-context", "retrieval", "parametric", "hybrid", "routed"]
    for name, entry in modes.items():
        assert entry["n_questions"] == 2, name
        assert set(entry["f1"]) >= {"overall", "all"}
        assert entry["latency_ms"]["p50"] > 0
    adapters = modes["parametric"]["prepare"]["adapters"]
    assert len(adapters) == 1 and adapters[0]["status"] == "published"
    adapter = adapters[0]["adapter"]
    qs = result["questions"]
    assert all(q["prediction"] and q["prediction"].strip() for q in qs)
    by_mode = {m: [q for q in qs if q["mode"] == m] for m in modes}
    assert all(q["extra"]["model"] == adapter for q in by_mode["parametric"] + by_mode["hybrid"])
    assert all(q["extra"]["model"] == "base" for q in by_mode["none"] + by_mode["retrieval"])
    assert all(q["memory_tokens"] > 0 for q in by_mode["retrieval"] + by_mode["hybrid"])
    assert all(q["recall"] is not None for q in by_mode["retrieval"])
    assert modes["full-context"]["prepare"]["not_fitting"] == 1  # ~5k tokens, 1k window
    assert result["router"]["mode"] == "routed" and result["router"]["mix"]
    assert result["metadata"]["judge"]["counts"]["judged"] == 12
    hol = result["holistic"]
    assert list(hol["pairs"]) == ["retrieval vs parametric"] and len(hol["answers"]) == 2
    assert (tmp_path / "report" / "report.md").exists()
