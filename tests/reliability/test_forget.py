"""Forgetting a namespace removes everything: memories, datasets, registry rows, adapter
folders on disk and adapters loaded in a real vLLM server (``ragtune forget``)."""

from __future__ import annotations

import shutil

import pytest

from langchain_ragtune.cli import main
from langchain_ragtune.config import ServeConfig
from langchain_ragtune.jobs.forget import forget_adapters


def _env(monkeypatch, store_config, url=None):
    monkeypatch.setenv("RAGTUNE_PG_URI", store_config.pg_uri)
    monkeypatch.setenv("RAGTUNE_SCHEMA", store_config.schema)
    monkeypatch.setenv("RAGTUNE_HOME", str(store_config.home))
    if url:
        monkeypatch.setenv("RAGTUNE_VLLM_URLS", url)


def test_forget_adapters_deletes_folders_and_reports_unreachable_endpoints(tmp_path):
    folder = tmp_path / "adapters" / "u" / "v1"
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text("{}")
    stranger = tmp_path / "not-an-adapter"
    stranger.mkdir()
    out = forget_adapters(("u",), [{"name": "u-v1", "path": str(folder)},
                                   {"name": "x", "path": str(stranger)}],
                          serve_config=ServeConfig(vllm_urls=("http://127.0.0.1:1",)))
    assert not folder.exists() and stranger.exists()  # only adapter folders are deleted
    assert out["deleted"] == [str(folder)]
    assert any("unreachable" in p for p in out["problems"])


@pytest.mark.vllm
def test_ragtune_forget_unloads_from_vllm_and_deletes_everything(
        monkeypatch, store, store_config, vllm_server, fact_adapters, unique_name, capsys):
    import json

    from langchain_ragtune.serving.client import VLLMAdminClient
    from langchain_ragtune.tuning.registry import AdapterRegistry

    ns = ("forget-me",)
    url = vllm_server if isinstance(vllm_server, str) else vllm_server.url
    store.add(ns, ["I keep my passport in the blue drawer."])
    first = next(iter(fact_adapters.values()))
    path = store_config.home / "adapters" / "forget-me" / "v1"
    shutil.copytree(first, path)
    name = unique_name("forget-me")
    reg = AdapterRegistry(store)
    rec = reg.register(ns, 1, name, str(path), "base-model", store.max_seq(ns))
    reg.switch_current(ns, rec.id)
    with VLLMAdminClient(url) as vllm:
        vllm.load_adapter(name, path)
        assert name in vllm.adapters()

        _env(monkeypatch, store_config, url)
        assert main(["forget", "--namespace", "forget-me", "--yes", "--json"]) == 0
        out = json.loads(capsys.readouterr().out)

        assert name not in vllm.adapters()
    assert out["memories"] == 1 and [a["name"] for a in out["adapters"]] == [name]
    assert out["adapters_removed"]["unloaded"] == [f"{name}@{url}"]
    assert not path.exists()
    assert store.count(ns) == 0 and reg.current(ns) is None and reg.list(ns) == []
