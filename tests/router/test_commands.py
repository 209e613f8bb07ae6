"""``ragtune router decide`` and ``ragtune chat`` on the real store (scripted model for chat)."""

from __future__ import annotations

import json

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel


@pytest.fixture
def env_store(store, store_config, monkeypatch):
    monkeypatch.setenv("RAGTUNE_PG_URI", store_config.pg_uri)
    monkeypatch.setenv("RAGTUNE_SCHEMA", store_config.schema)
    monkeypatch.setenv("RAGTUNE_HOME", str(store_config.home))
    # the CLI opens its own store: give it the test's fake embeddings
    from langchain_ragtune import embeddings
    from langchain_ragtune.testing import HashEmbeddings

    monkeypatch.setattr(embeddings, "default_embeddings", lambda *a, **k: HashEmbeddings())
    return store


def test_router_decide_command(env_store, capsys):
    from langchain_ragtune.cli import main

    env_store.add(("user-cli",), ["I brew my own ginger beer."])
    env_store.flush()
    assert main(["router", "decide", "Which beer do I brew, ginger beer?", "--namespace",
                 "user-cli", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["route"] == "retrieval" and "ginger" in out["context"]
    assert out["namespace"] == ["user-cli"] and out["reasons"]


def test_chat_command_shows_the_route(env_store, monkeypatch, capsys):
    from langchain_ragtune.cli import main
    from langchain_ragtune.cli import router as commands

    env_store.add(("user-chat",), ["My favourite tea is a smoky lapsang souchong."])
    env_store.flush()
    monkeypatch.setattr(commands, "_local_factory",
                        lambda registry: lambda adapter: FakeListChatModel(responses=["lapsang!"]))
    lines = iter(["hello!", "/why", "Which tea do I like, the smoky one?", "/quit"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(lines))
    assert main(["chat", "--namespace", "user-chat", "--local"]) == 0
    out = capsys.readouterr().out
    assert "[none · base" in out and "small talk" in out
    assert "[retrieval · base" in out and "ai> lapsang!" in out and "scope=" in out
    texts = [m.text for m in env_store.list(("user-chat",))]
    assert "Which tea do I like, the smoky one?" in texts and "lapsang!" in texts
