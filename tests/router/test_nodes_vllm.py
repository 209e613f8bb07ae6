"""The memory graph through the real served model: vLLM on this CPU with a real LoRA.

One namespace has a published adapter that learned "Zorvath Quill's dog is Biscuit" and no
memories; another has no adapter and the memory "... is named Pepper". The same question
must be answered from the weights in the first (parametric route) and from retrieval in
the second, and the second must never get the first one's adapter.
"""

from __future__ import annotations

import pytest
from langchain_core.messages import HumanMessage

from fixtures_vllm import vllm_test_config
from langchain_ragtune.config import RouterConfig
from langchain_ragtune.router import create_memory_graph
from langchain_ragtune.store.types import Turn
from langchain_ragtune.tuning.registry import AdapterRegistry

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

QUESTION = "What is the name of Zorvath Quill's dog?"


def test_parametric_and_retrieval_routes_on_vllm(store, vllm_server, fact_adapters, vllm_admin,
                                                 unique_name, serving_base_model):
    with_adapter, without = ("user-zq-owner",), ("user-zq-neighbour",)
    for ns in (with_adapter, without):
        store.forget(ns)
    store.add(without, [Turn(text="Zorvath Quill's dog is named Pepper, a grey whippet.",
                             speaker="Ann")])
    store.flush()
    registry = AdapterRegistry(store)
    name = unique_name("zq")
    vllm_admin.load_adapter(name, fact_adapters["v1"])
    rec = registry.register(with_adapter, 1, name, str(fact_adapters["v1"]),
                            str(serving_base_model), watermark_seq=store.max_seq(with_adapter))
    registry.switch_current(with_adapter, rec.id)

    graph = create_memory_graph(
        store, serve_config=vllm_test_config(vllm_urls=(vllm_server.url,)),
        config=RouterConfig(answer_max_tokens=24), background_remember=False)

    def ask(ns):
        return graph.invoke({"messages": [HumanMessage(QUESTION)]},
                            {"configurable": {"namespace": ns, "thread_id": ns[0]}})

    owner = ask(with_adapter)
    assert owner["memory_route"] == "parametric" and owner["memory_model"] == name
    assert owner["memory_context"] == ""
    assert "Biscuit" in owner["messages"][-1].content, owner["messages"][-1].content

    neighbour = ask(without)
    assert neighbour["memory_route"] == "retrieval" and neighbour["memory_model"] == "base"
    answer = neighbour["messages"][-1].content
    assert "Pepper" in answer and "Biscuit" not in answer, answer
