"""``ragtune distill | train | refresh | scheduler`` end to end (fake gradient steps)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from langchain_ragtune import cli
from langchain_ragtune.eval.locomo import load_sample, to_turns


@pytest.fixture
def cli_env(store, pg_uri, base_model, tmp_path, monkeypatch, make_trainer, make_evaluator):
    """CLI runs against the test schema, the real base model, fake training and generation."""
    from langchain_ragtune.config import StoreConfig
    from langchain_ragtune.store import MemoryStore
    from langchain_ragtune.cli import distill, jobs, tuning
    from langchain_ragtune.testing import HashEmbeddings
    from langchain_ragtune.tuning import evaluate, train

    env = {"RAGTUNE_PG_URI": pg_uri, "RAGTUNE_SCHEMA": store.schema,
           "RAGTUNE_HOME": str(tmp_path / "home"), "RAGTUNE_BASE_MODEL": str(base_model),
           "RAGTUNE_TEACHER": "none"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)

    def open_store():
        s = MemoryStore(StoreConfig.from_env(), embeddings=HashEmbeddings(),
                        background_embedding=False)
        s.setup()
        return s

    for command_group in (distill, jobs, tuning):
        monkeypatch.setattr(command_group, "open_store", open_store)
    monkeypatch.setattr(train, "train_adapter", make_trainer())
    monkeypatch.setattr(evaluate, "AdapterEvaluator", lambda *a, **k: make_evaluator())
    return env


def run(capsys, *argv):
    code = cli.main(list(argv))
    out = capsys.readouterr().out
    return code, out


def test_distill_command_reports_and_exports(store, cli_env, capsys, tmp_path):
    store.add(("cli-distill",), to_turns(load_sample()[0]))
    path = tmp_path / "d.jsonl"
    code, out = run(capsys, "distill", "--namespace", "cli-distill", "--json", "--jsonl", str(path))
    assert code == 0
    report = json.loads(out)
    assert report["dataset_id"] and report["version"] == 1
    assert set(report["examples"]) == {"local", "global", "digest"}
    assert "rejected" in report and report["sample"]
    assert len(path.read_text().splitlines()) == report["train"] + report["heldout"]
    code, out = run(capsys, "distill", "--dataset", str(report["dataset_id"]))
    assert code == 0 and f"dataset {report['dataset_id']}" in out


def test_refresh_command_json_shape_and_statuses(store, cli_env, capsys):
    code, out = run(capsys, "refresh", "--namespace", "cli-nobody", "--json")
    assert code == 0 and json.loads(out)["status"] == "nothing_to_learn"
    store.add(("cli-refresh",), to_turns(load_sample()[0]))
    code, out = run(capsys, "refresh", "--namespace", "cli-refresh", "--json")
    res = json.loads(out)
    assert code == 0 and res["status"] == "published", res
    assert {"namespace", "status", "version", "adapter_name", "examples", "metrics"} <= set(res)
    assert res["namespace"] == ["cli-refresh"] and res["version"] == 1
    assert {"closed_book_before", "closed_book_after"} <= set(res["metrics"])
    assert all(isinstance(v, int) for v in res["examples"].values())
    code, out = run(capsys, "refresh", "--namespace", "cli-refresh")
    assert code == 0 and "up_to_date" in out
    # the text form says how many canaries the new version is checked with when published
    store.add(("cli-text",), to_turns(load_sample()[0]))
    code, out = run(capsys, "refresh", "--namespace", "cli-text", "--quiet")
    assert code == 0 and "cli-text: published" in out, out
    assert re.search(r"canaries [\d.]+ -> [\d.]+ \(\d+ published\)", out), out
    code, out = run(capsys, "scheduler", "due", "--json")
    assert code == 0 and ["cli-refresh"] not in [r["namespace"] for r in json.loads(out)]


def test_train_command_registers_a_ready_version(store, cli_env, capsys):
    store.add(("cli-train",), to_turns(load_sample()[0]))
    assert run(capsys, "distill", "--namespace", "cli-train", "--json")[0] == 0
    code, out = run(capsys, "train", "--namespace", "cli-train", "--json", "--max-steps", "2")
    res = json.loads(out)
    assert code == 0 and res["status"] == "ready"
    assert res["path"].startswith(cli_env["RAGTUNE_HOME"])
    code, out = run(capsys, "train", "--namespace", "cli-train", "--max-steps", "2")
    assert code == 0 and re.search(r"canaries [\d.]+ -> [\d.]+ \(\d+ published\)", out), out


@pytest.mark.slow
def test_scheduler_start_stops_cleanly_on_sigterm(store, pg_uri, tmp_path):
    env = {**os.environ, "RAGTUNE_PG_URI": pg_uri, "RAGTUNE_SCHEMA": store.schema,
           "RAGTUNE_HOME": str(tmp_path), "RAGTUNE_TEACHER": "none"}
    proc = subprocess.Popen([sys.executable, "-m", "langchain_ragtune.cli", "scheduler", "start",
                             "--interval", "3600", "--min-new", "1000000"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        line = ""
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if "started" in line or proc.poll() is not None:
                break
        assert "started" in line, proc.stderr.read()
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert "stopped" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
