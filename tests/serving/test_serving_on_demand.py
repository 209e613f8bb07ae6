"""A second real vLLM server, as a deployment with many users runs it: adapters loaded on
demand by the package's LoRA resolver from the adapter storage, and an API key required.

One server (module-scoped, about a minute to start) serves every test here.
"""

from __future__ import annotations

import json
import shutil

import httpx
import pytest
from fixtures_vllm import require_vllm, vllm_test_config

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

KEY = "test-key-4f1c"


@pytest.fixture(scope="module")
def storage(tmp_path_factory, fact_adapters, serving_base_model):
    """Adapter storage as refresh jobs lay it out: <root>/<namespace slug>/<name>/, each
    folder completed by the marker training writes last."""
    root = tmp_path_factory.mktemp("adapters")

    def put(version: str, name: str, *, marker: bool = True):
        folder = root / name.rsplit("-v1-", 1)[0] / name
        shutil.copytree(fact_adapters[version], folder)
        if marker:
            (folder / "ragtune-adapter.json").write_text(
                json.dumps({"base_model": str(serving_base_model)}))
        return folder

    put("v1", "od-user-1-v1-aaaaaa")
    put("v2", "od-user-2-v1-bbbbbb")
    broken = put("v1", "od-user-3-v1-cccccc")
    (broken / "adapter_model.safetensors").write_bytes(b"\x00" * 64)  # corrupt weights
    put("v1", "od-user-4-v1-dddddd", marker=False)  # a folder still being written
    other = put("v1", "od-user-5-v1-eeeeee")  # trained on another base model
    (other / "ragtune-adapter.json").write_text(json.dumps({"base_model": "/m/Llama-3-8B"}))
    return root


@pytest.fixture(scope="module")
def server(serving_base_model, storage, tmp_path_factory):
    require_vllm()
    from langchain_ragtune.serving.launcher import start_server

    cfg = vllm_test_config(vllm_api_key=KEY)
    srv = start_server(cfg, model_path=serving_base_model, port=0,
                       env={"RAGTUNE_ADAPTER_ROOT": str(storage)},
                       log_path=tmp_path_factory.mktemp("vllm-od") / "vllm.log")
    try:
        yield srv, cfg
    finally:
        srv.stop()


def _chat(url: str, model: str, question: str, key: str | None = KEY) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", timeout=120,
                      headers={"Authorization": f"Bearer {key}"} if key else {},
                      json={"model": model, "max_tokens": 24, "temperature": 0,
                            "messages": [{"role": "user", "content": question}]})


def test_a_cold_adapter_is_loaded_on_its_first_request(server):
    from langchain_ragtune.testing.adapters import FACT_VERSIONS

    srv, _ = server
    dog_q = FACT_VERSIONS["v1"].facts[0].questions[0]  # v1 answers Biscuit, v2 Pepper
    models = httpx.get(f"{srv.url}/v1/models", timeout=30,
                       headers={"Authorization": f"Bearer {KEY}"}).json()
    assert "od-user-1-v1-aaaaaa" not in {m["id"] for m in models["data"]}  # nothing preloaded
    answers = {}
    for name in ("od-user-1-v1-aaaaaa", "od-user-2-v1-bbbbbb", "base"):
        r = _chat(srv.url, name, dog_q)
        assert r.status_code == 200, (name, r.text)
        answers[name] = r.json()["choices"][0]["message"]["content"]
    # each namespace's adapter answers with its own fact only; the base model with neither
    assert "Biscuit" in answers["od-user-1-v1-aaaaaa"] and "Pepper" not in answers[
        "od-user-1-v1-aaaaaa"], answers
    assert "Pepper" in answers["od-user-2-v1-bbbbbb"] and "Biscuit" not in answers[
        "od-user-2-v1-bbbbbb"], answers
    assert "Biscuit" not in answers["base"] and "Pepper" not in answers["base"], answers


def test_unknown_half_written_and_corrupt_adapters_are_refused_clearly(server):
    srv, _ = server
    for name in ("od-nobody-v1-000000", "od-user-4-v1-dddddd", "od-user-5-v1-eeeeee",
                 "..%2Fod-user-1"):
        r = _chat(srv.url, name, "hi")
        assert r.status_code == 404, (name, r.text)
    r = _chat(srv.url, "od-user-3-v1-cccccc", "hi")
    assert r.status_code == 400 and "could not be loaded" in r.text, r.text
    assert _chat(srv.url, "base", "Say hi.").status_code == 200  # the server is fine


def test_the_api_key_is_required_and_sent(server, store, fact_adapters, serving_base_model,
                                          monkeypatch):
    from langchain_ragtune.config import ServeConfig
    from langchain_ragtune.serving.chat import create_chat_model
    from langchain_ragtune.serving.client import VLLMAdminClient
    from langchain_ragtune.serving.publisher import Publisher
    from langchain_ragtune.testing.adapters import FACT_VERSIONS
    from langchain_ragtune.tuning.registry import AdapterRegistry, make_adapter_name

    srv, cfg = server
    monkeypatch.delenv("RAGTUNE_VLLM_API_KEY", raising=False)
    assert httpx.get(f"{srv.url}/v1/models", timeout=30).status_code == 401
    assert _chat(srv.url, "base", "hi", key=None).status_code == 401
    assert _chat(srv.url, "base", "hi", key="wrong").status_code == 401

    cfg = ServeConfig(**{**cfg.__dict__, "vllm_urls": (srv.url,)})
    assert create_chat_model(config=cfg, max_tokens=8).invoke("Say hi.").content.strip()

    # the publisher loads, checks canaries and switches with the key
    registry = AdapterRegistry(store)
    ns = ("keyed",)
    v = registry.next_version(ns)
    rec = registry.register(ns, v, make_adapter_name(ns, v), str(fact_adapters["v1"]),
                            str(serving_base_model), watermark_seq=v,
                            metrics={"canaries": FACT_VERSIONS["v1"].canaries}, status="ready")
    pub = Publisher(registry, endpoints=[srv.url], config=cfg,
                    base_model_path=serving_base_model).publish(rec)
    assert pub.name == rec.name and any(c.ok for c in pub.canaries if c.expected)

    with pytest.raises(Exception, match="401|Unauthorized|unauthori"):
        with VLLMAdminClient(srv.url) as client:
            client.adapters()
    monkeypatch.setenv("RAGTUNE_VLLM_API_KEY", KEY)  # the variable alone is enough
    with VLLMAdminClient(srv.url) as client:
        assert rec.name in client.adapters()


def test_the_key_is_not_on_the_command_line():
    from langchain_ragtune.config import ServeConfig
    from langchain_ragtune.serving.launcher import build_command, build_env

    cfg = ServeConfig(vllm_api_key=KEY)
    assert KEY not in " ".join(build_command(cfg, "/models/m", python="python"))
    assert build_env(cfg, base={})["VLLM_API_KEY"] == KEY
    assert KEY not in repr(cfg)


def test_find_adapter_folder_checks_names_and_markers(storage):
    from langchain_ragtune.serving.resolver import find_adapter_folder

    assert find_adapter_folder(storage, "od-user-1-v1-aaaaaa") == \
        storage / "od-user-1" / "od-user-1-v1-aaaaaa"
    assert find_adapter_folder(storage, "od-user-4-v1-dddddd") is None  # no marker yet
    for bad in ("../od-user-1", "od-user-1/od-user-1-v1-aaaaaa", "", ".hidden"):
        assert find_adapter_folder(storage, bad) is None
