"""Bad input through the ``ragtune`` command: a clear one-line error and exit code, never a
traceback, and nothing already stored is lost."""

from __future__ import annotations

import json

import pytest

from langchain_ragtune.cli import main


@pytest.fixture()
def cli_env(monkeypatch, store, store_config):
    monkeypatch.setenv("RAGTUNE_PG_URI", store_config.pg_uri)
    monkeypatch.setenv("RAGTUNE_SCHEMA", store_config.schema)
    monkeypatch.setenv("RAGTUNE_HOME", str(store_config.home))
    # The CLI's own store uses the real embedding model by default; the fake one suffices.
    monkeypatch.setattr("langchain_ragtune.embeddings.default_embeddings",
                        lambda *a, **k: __import__("langchain_ragtune.testing", fromlist=["x"]).HashEmbeddings())
    store.add(("cli-keep",), [{"text": "a memory that must survive every bad command",
                              "message_id": "keep-1"}])
    return store


def _bad_locomo(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text("{not json")
    return str(p)


def _wrong_shape(tmp_path):
    p = tmp_path / "shape.json"
    p.write_text(json.dumps([{"no_conversation": True}]))
    return str(p)


CASES = [
    ("empty text", lambda t: ["add", "", "--namespace", "u"], "empty or whitespace"),
    ("whitespace text", lambda t: ["add", "   ", "--namespace", "u"], "empty or whitespace"),
    ("empty namespace", lambda t: ["add", "hi", "--namespace", "/"], "empty label"),
    ("bad date", lambda t: ["add", "hi", "--namespace", "u", "--at", "yesterday"], "ISO-8601"),
    ("k zero", lambda t: ["search", "q", "--namespace", "u", "--k", "0"], "1 <= k"),
    ("k huge", lambda t: ["search", "q", "--namespace", "u", "--k", "100000000"], "1 <= k"),
    ("empty query", lambda t: ["search", "  ", "--namespace", "u"], "query"),
    ("window huge", lambda t: ["search", "q", "--namespace", "u", "--window", "99"], "window"),
    ("missing LoCoMo file", lambda t: ["ingest", "locomo", "--data", str(t / "nope.json")],
     "does not exist"),
    ("corrupt LoCoMo file", lambda t: ["ingest", "locomo", "--data", _bad_locomo(t)], "not valid JSON"),
    ("wrong LoCoMo shape", lambda t: ["ingest", "locomo", "--data", _wrong_shape(t)], "LoCoMo"),
    ("unknown conversation", lambda t: ["ingest", "locomo", "--sample", "-c", "conv-999"],
     "unknown conversation"),
]


@pytest.mark.parametrize("what,argv,fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_cli_input(cli_env, tmp_path, capsys, what, argv, fragment):
    code = main(argv(tmp_path))
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("ragtune: error:") and fragment in err, err
    assert "Traceback" not in err
    assert cli_env.count(("cli-keep",)) == 1


@pytest.mark.parametrize("env,value,fragment", [
    ("RAGTUNE_POOL_SIZE", "lots", "RAGTUNE_POOL_SIZE"),
    ("RAGTUNE_SCHEMA", "x; DROP", "not a valid identifier"),
    ("RAGTUNE_PG_URI", "http://db", "not a PostgreSQL URI"),
    ("RAGTUNE_EXACT_SEARCH_BELOW", "0", "positive"),
])
def test_malformed_environment_through_the_cli(cli_env, monkeypatch, capsys, env, value, fragment):
    monkeypatch.setenv(env, value)
    assert main(["search", "q", "--namespace", "u"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ragtune: error:") and fragment in err and "Traceback" not in err


def test_argparse_errors_are_usage_errors(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["search", "q"])  # --namespace missing
    assert exc.value.code == 2 and "--namespace" in capsys.readouterr().err
