"""create_chat_model against a mocked OpenAI endpoint: the model follows the registry."""

from __future__ import annotations

import json
from dataclasses import dataclass

import httpx
import pytest

pytest.importorskip("langchain_openai")

from langchain_ragtune.config import ServeConfig
from langchain_ragtune.errors import EndpointUnreachableError
from langchain_ragtune.serving.chat import ModelResolver, create_chat_model, endpoint_for
from langchain_ragtune.serving.launcher import free_port


@dataclass
class Rec:
    id: int
    name: str
    path: str


class FakeRegistry:
    def __init__(self) -> None:
        self.pointer: dict[tuple[str, ...], Rec] = {}
        self.reads = 0

    def current(self, namespace):
        self.reads += 1
        return self.pointer.get(tuple(namespace))


class FakeServer:
    """An OpenAI chat endpoint serving 'base' and the names in ``loaded``."""

    def __init__(self, loaded=()) -> None:
        self.loaded = set(loaded)
        self.models_asked: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.models_asked.append(body["model"])
        if body["model"] != "base" and body["model"] not in self.loaded:
            return httpx.Response(404, json={"error": {"message": "model not found",
                                                       "type": "NotFoundError", "code": 404}})
        if body.get("stream"):
            lines = [json.dumps({"id": "1", "object": "chat.completion.chunk", "created": 0,
                                 "model": body["model"], "choices": [{"index": 0, "delta": {
                                     "content": w}, "finish_reason": None}]})
                     for w in ("answer ", "from ", body["model"])]
            text = "".join(f"data: {line}\n\n" for line in lines) + "data: [DONE]\n\n"
            return httpx.Response(200, text=text, headers={"content-type": "text/event-stream"})
        return httpx.Response(200, json={
            "id": "1", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop", "message": {
                "role": "assistant", "content": f"answer from {body['model']}"}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}})


def _model(server, registry=None, namespace=None, **kw):
    return create_chat_model(namespace, registry=registry, config=ServeConfig(port=9999),
                             refresh_s=0, load_missing=False,
                             http_client=httpx.Client(transport=httpx.MockTransport(server)),
                             http_async_client=httpx.AsyncClient(
                                 transport=httpx.MockTransport(server)), **kw)


def test_base_model_without_namespace() -> None:
    server = FakeServer()
    llm = _model(server)
    assert llm.openai_api_base == "http://127.0.0.1:9999/v1"
    assert llm.invoke("hi").content == "answer from base"
    assert llm.temperature == 0.0


def test_model_follows_the_current_adapter_pointer() -> None:
    server, registry = FakeServer(loaded={"ns-v1", "ns-v2"}), FakeRegistry()
    llm = _model(server, registry, ("ns",))
    assert llm.invoke("hi").content == "answer from base"  # no adapter yet
    registry.pointer[("ns",)] = Rec(1, "ns-v1", "/a/v1")
    assert llm.invoke("hi").content == "answer from ns-v1"
    registry.pointer[("ns",)] = Rec(2, "ns-v2", "/a/v2")
    assert "".join(c.content for c in llm.stream("hi")) == "answer from ns-v2"


async def test_async_and_astream_follow_it_too() -> None:
    server, registry = FakeServer(loaded={"ns-v1"}), FakeRegistry()
    registry.pointer[("ns",)] = Rec(1, "ns-v1", "/a/v1")
    llm = _model(server, registry, ("ns",))
    assert (await llm.ainvoke("hi")).content == "answer from ns-v1"
    assert "".join([c.content async for c in llm.astream("hi")]) == "answer from ns-v1"


def test_a_404_for_a_just_unloaded_name_is_retried_with_the_fresh_one() -> None:
    server, registry = FakeServer(loaded={"ns-v2"}), FakeRegistry()
    registry.pointer[("ns",)] = Rec(1, "ns-v1", "/a/v1")  # stale in the resolver's cache
    llm = create_chat_model(("ns",), registry=registry, config=ServeConfig(port=9999),
                            refresh_s=3600, load_missing=False,
                            http_client=httpx.Client(transport=httpx.MockTransport(server)))
    registry.pointer[("ns",)] = Rec(2, "ns-v2", "/a/v2")  # switched after creation
    assert llm.invoke("hi").content == "answer from ns-v2"
    assert server.models_asked == ["ns-v1", "ns-v2"]


def test_missing_adapter_is_loaded_on_demand() -> None:
    server, registry = FakeServer(), FakeRegistry()
    registry.pointer[("ns",)] = Rec(1, "ns-v1", "/a/v1")
    llm = _model(server, registry, ("ns",))
    loads = []
    llm._on_missing = lambda target: (loads.append(target.name), server.loaded.add(target.name))
    assert llm.invoke("hi").content == "answer from ns-v1"
    assert loads == ["ns-v1"]


def test_unreachable_endpoint_names_it() -> None:
    port = free_port()
    llm = create_chat_model(config=ServeConfig(port=port), max_retries=0, timeout=3)
    with pytest.raises(EndpointUnreachableError, match=f"127.0.0.1:{port}.*ragtune serve"):
        llm.invoke("hi")


def test_replicas_are_sticky_per_namespace() -> None:
    config = ServeConfig(vllm_urls=("http://a:1", "http://b:1", "http://c:1"))
    picks = {endpoint_for(config, (f"user-{i}",)) for i in range(30)}
    assert picks == {"http://a:1", "http://b:1", "http://c:1"}
    assert endpoint_for(config, ("user-7",)) == endpoint_for(config, ("user-7",))


def test_placement_moves_only_a_new_replicas_share() -> None:
    """Rendezvous hashing: the list's order does not matter; a fourth replica takes about a
    quarter of 4,000 namespaces and moves no other; removing it puts them back."""
    three = ("http://a:1", "http://b:1", "http://c:1")
    spaces = [(f"user-{i}",) for i in range(4000)]
    before = {ns: endpoint_for(ServeConfig(vllm_urls=three), ns) for ns in spaces}
    shuffled = ServeConfig(vllm_urls=tuple(reversed(three)))
    assert all(endpoint_for(shuffled, ns) == url for ns, url in before.items())
    four = ServeConfig(vllm_urls=(*three, "http://d:1"))
    after = {ns: endpoint_for(four, ns) for ns in spaces}
    moved = [ns for ns in spaces if after[ns] != before[ns]]
    assert all(after[ns] == "http://d:1" for ns in moved)
    assert 0.20 < len(moved) / len(spaces) < 0.30, len(moved)
    counts = {u: sum(1 for v in before.values() if v == u) for u in three}
    assert all(1200 < c < 1470 for c in counts.values()), counts


def test_resolver_caches_for_its_ttl() -> None:
    registry = FakeRegistry()
    registry.pointer[("ns",)] = Rec(1, "ns-v1", "/a/v1")
    resolver = ModelResolver(("ns",), registry, "base", ttl_s=3600)
    assert resolver.target().name == "ns-v1" and resolver.target().path == "/a/v1"
    assert registry.reads == 1
    resolver.invalidate()
    resolver.target()
    assert registry.reads == 2
