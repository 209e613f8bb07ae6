"""`ragtune eval locomo`, `ragtune eval report` and `ragtune bench` through the CLI."""

from __future__ import annotations

import json

import pytest

from langchain_ragtune.cli import main
from langchain_ragtune.errors import InvalidInputError
from langchain_ragtune.bench import registry as bench_mod
from langchain_ragtune.bench.ingest import run_ingest_bench
from langchain_ragtune.bench.registry import run_all, run_bench
from langchain_ragtune.bench.summary import summary_table


@pytest.fixture
def hash_store_env(monkeypatch, store_config):
    """Make `MemoryStore.from_env` (what the CLI calls) give a fast store on the test server."""
    from langchain_ragtune.config import StoreConfig
    from langchain_ragtune.store import MemoryStore
    from langchain_ragtune.testing import HashEmbeddings

    made = []

    def from_env(*, embeddings=None, **overrides):
        cfg = StoreConfig(pg_uri=store_config.pg_uri, home=store_config.home,
                          schema=overrides.get("schema", store_config.schema))
        s = MemoryStore(cfg, embeddings=HashEmbeddings(), background_embedding=False)
        made.append(cfg.schema)
        return s

    monkeypatch.setattr(MemoryStore, "from_env", staticmethod(from_env))
    return made


def test_eval_locomo_cli_on_sample(hash_store_env, store_config, tmp_path, capsys):
    out = tmp_path / "res.json"
    schema = store_config.schema + "_cli"
    argv = ["eval", "locomo", "--sample", "--k", "5", "--window", "1", "--json", str(out),
            "--report", str(tmp_path / "rep"), "--no-progress", "--schema", schema]
    try:
        assert main(argv) == 0
        printed = capsys.readouterr().out
        assert "recall@5" in printed and "overall(1,2,4)=" in printed
        result = json.loads(out.read_text())
        r = result["modes"]["retrieval"]
        assert set(r["recall_at_k"]) >= {"overall", "all", "1", "2", "3", "4", "5"}
        assert set(r["latency_ms"]) >= {"p50", "p95"}
        meta = result["metadata"]
        assert meta["k"] == 5 and meta["window"] == 1 and meta["data"]["sample"] is True
        assert meta["n_questions"] == 23 and len(result["questions"]) == 23
        assert hash_store_env == [schema]  # evaluation data goes to its own schema
        records = tmp_path / "res.questions.jsonl"
        assert len(records.read_text().splitlines()) == 1 + 1 + 23  # header, prepare, questions
        assert (tmp_path / "rep" / "report.md").exists()
        # Resuming a finished run does no new searches and reports the same numbers.
        assert main(argv + ["--resume"]) == 0
        again = json.loads(out.read_text())
        assert again["modes"]["retrieval"]["recall_at_k"] == r["recall_at_k"]
    finally:
        import psycopg

        with psycopg.connect(store_config.pg_uri, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.mark.parametrize("argv, message", [
    (["--mode", "parametric", "--seeds", "x"], "must be integers"),
    (["--mode", "none", "--holistic", "2"], "needs --judge"),
    (["--mode", "none", "--answer-tokens", "0"], "must be positive"),
    (["--mode", "telepathy"], "unknown mode"),
    (["--categories", "1,9"], "numbers 1-5"),
    (["--categories", "x"], "numbers 1-5"),
    (["--k", "0"], "--k 0"),
    (["--conversations", "conv-404"], "unknown conversation"),
    (["--resume"], "--resume needs a records file"),
])
def test_eval_locomo_cli_errors(argv, message, capsys):
    assert main(["eval", "locomo", "--sample", *argv]) == 1
    assert message in capsys.readouterr().err


def test_eval_locomo_missing_data_says_where(tmp_path, capsys):
    assert main(["eval", "locomo", "--data", str(tmp_path / "none.json")]) == 1
    err = capsys.readouterr().err
    assert "none.json" in err and "snap-research/LoCoMo" in err


def test_bench_registry_names_real_functions():
    with pytest.raises(InvalidInputError, match="unknown benchmark 'speed'; choose among"):
        run_bench("speed")
    for name, func in bench_mod.BENCHES.items():
        assert callable(func) and func.__module__ == f"langchain_ragtune.bench.{name}", name


def test_run_bench_passes_only_accepted_options(monkeypatch):
    seen = {}

    def fake(*, queries=1, quiet=False):
        seen.update(queries=queries, quiet=quiet)
        return {"p95_ms": 1.5}

    monkeypatch.setitem(bench_mod.BENCHES, "fake", fake)
    assert run_bench("fake", {"queries": 7, "memories": 10, "quiet": True}) == {"p95_ms": 1.5}
    assert seen == {"queries": 7, "quiet": True}


def test_run_all_records_errors_and_goes_on(monkeypatch):
    def boom(**_):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(bench_mod, "BENCHES", {
        "router": boom,
        "swap": lambda **_: {"failed": 0},
    })
    out = run_all()
    assert out["benches"]["router"]["error"] == "RuntimeError: disk on fire"
    assert out["benches"]["swap"]["failed"] == 0
    table = summary_table(out)
    assert "| swap | failed | 0 |" in table and "| router | error | RuntimeError" in table


def test_eval_locomo_per_category(hash_store_env, store_config, tmp_path, capsys):
    from collections import Counter

    from langchain_ragtune.eval.locomo import load_sample

    out = tmp_path / "res.json"
    schema = store_config.schema + "_percat"
    argv = ["eval", "locomo", "--sample", "--k", "3", "--json", str(out), "--no-progress",
            "--schema", schema, "--per-category", "2"]
    try:
        assert main(argv) == 0
        got = Counter(q["category"] for q in json.loads(out.read_text())["questions"])
        every = Counter(q.category for q in load_sample()[0].qa)
        assert set(got) == set(every)  # every category, however the file orders them
        assert got == {c: min(2, n) for c, n in every.items()}
        assert main(argv[:-1] + ["0"]) == 1
        assert "--per-category 0 must be >= 1" in capsys.readouterr().err
    finally:
        import psycopg

        with psycopg.connect(store_config.pg_uri, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def test_summary_table_targets():
    table = summary_table({"benches": {
        "retrieval": {"ours": {"recall_at_10": 0.97, "p95_ms": 12.0},
                      "raw": {"recall_at_10": 0.96, "p95_ms": 11.0},
                      "p95_ratio_ours_over_raw": 1.09, "ingest_rows_per_s": 20000.0},
        "ingest": {"ack_ms": {"p95": 14.2}, "ingest_rows_per_s": 300.0},
        "router": {"accuracy": 0.9, "latency_ms": {"p95": 2.0}, "note": "x"},
    }})
    assert "| retrieval | recall@10 (ours / raw) | 0.97 / 0.96 | >= 0.95 | yes |" in table
    assert "| ingest | write ack p95 ms (per turn) | 14.2 | <= 10 | **no** |" in table
    assert "| router | accuracy | 0.9 |" in table and "| router | latency_ms.p95 | 2 |" in table


def test_summary_table_uses_a_bench_own_targets():
    table = summary_table({"benches": {"swap": {
        "requests": 120, "failed": 0, "wrong_answers": 0, "swap_s": 4.8,
        "base_tokens_per_s": 17.7, "targets": {"failed": 0, "wrong_answers": 0, "swap_s": 0.5}}}})
    assert "| swap | failed | 0 | <= 0 | yes |" in table
    assert "| swap | swap_s | 4.8 | <= 0.5 | **no** |" in table
    assert "| swap | requests | 120 |  | – |" in table and "targets." not in table


def test_bench_cli_errors_and_set_parsing(monkeypatch, tmp_path, capsys):
    def broken(**_):
        raise InvalidInputError("requests=0 must be >= 1.")

    monkeypatch.setitem(bench_mod.BENCHES, "swap", broken)
    assert main(["bench", "swap"]) == 1
    assert "requests=0 must be >= 1" in capsys.readouterr().err
    assert main(["bench", "swap", "--set", "oops"]) == 1
    assert "KEY=VALUE" in capsys.readouterr().err


def test_bench_all_cli_writes_json_and_markdown(monkeypatch, tmp_path, capsys):
    def quick(*, turns=5, quiet=False):
        return {"ack_ms": {"p95": 3.0}, "ingest_rows_per_s": 100.0, "turns": turns}

    def broken(**_):
        raise RuntimeError("no vLLM here")

    monkeypatch.setattr(bench_mod, "BENCHES", {"ingest": quick, "swap": broken})
    out = tmp_path / "bench.json"
    assert main(["bench", "all", "--json", str(out), "--turns", "9"]) == 1  # one bench failed: the others still ran
    data = json.loads(out.read_text())
    assert data["benches"]["ingest"]["turns"] == 9 and "error" in data["benches"]["swap"]
    md = (tmp_path / "bench.md").read_text()
    assert "| ingest | write ack p95 ms (per turn) | 3 | <= 10 | yes |" in md
    assert "| ingest |" in capsys.readouterr().out


def test_ingest_bench_on_real_store(pg_uri):
    from langchain_ragtune.testing import HashEmbeddings

    result = run_ingest_bench(turns=60, ack_turns=10, batch=16, pg_uri=pg_uri,
                              embeddings=HashEmbeddings(), quiet=True)
    assert result["turns"] == 60
    assert result["ack_ms"]["n"] == 10 and result["ack_ms_background_embedding"]["n"] == 10
    assert result["ack_ms"]["p95"] > 0 and result["ingest_rows_per_s"] > 0
    assert result["config"]["embedding_model"] == "HashEmbeddings"
    import psycopg

    with psycopg.connect(pg_uri, autocommit=True) as conn:  # the throwaway schema is gone
        assert conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s",
                            (result["config"]["schema"],)).fetchone() is None
    with pytest.raises(InvalidInputError, match="ack_turns"):
        run_ingest_bench(turns=10, ack_turns=10)


def test_summary_table_lora_ops_rows_per_case():
    table = summary_table({"benches": {"lora_ops": {"cases": {
        "decode-1": {"shrink_us": {"vllm": 46.8, "ragtune": 22.9},
                     "expand_us": {"vllm": 97.6, "ragtune": 44.4},
                     "layer_us": {"vllm": 492.4, "ragtune": 147.2}},
        "prefill-57": {"shrink_us": {"vllm": 244, "ragtune": 27.2},
                       "expand_us": {"vllm": 550, "ragtune": 33.0}}},
        "settings": {"rank": 16}}}})
    assert "| lora_ops | decode-1: shrink / expand us (vLLM -> ragtune) | " \
           "46.8 -> 22.9 / 97.6 -> 44.4 |" in table
    assert "| lora_ops | decode-1: LoRA per decoder layer us (vLLM -> ragtune) | " \
           "492 -> 147 |" in table
    # A result from before the layer measurement has no such row.
    assert "prefill-57: LoRA per decoder layer" not in table
    assert "settings" not in table
