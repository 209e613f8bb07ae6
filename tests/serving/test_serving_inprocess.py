"""The in-process backend (transformers + peft) with real adapters: no vLLM needed."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from langchain_ragtune.testing.adapters import FACT_VERSIONS
from langchain_ragtune.serving.chat import InProcessChatModel

pytestmark = [pytest.mark.slow]

DOG_Q = FACT_VERSIONS["v1"].facts[0].questions[0]


@dataclass
class Rec:
    id: int
    name: str
    path: str


class Registry:
    def __init__(self) -> None:
        self.pointer: dict = {}

    def current(self, namespace):
        return self.pointer.get(tuple(namespace))


def test_base_and_adapters_switch_with_the_registry(serving_base_model, fact_adapters) -> None:
    registry = Registry()
    llm = InProcessChatModel(namespace=("ns",), registry=registry, refresh_s=0,
                             base_model=str(serving_base_model), max_tokens=16)
    base = llm.invoke(DOG_Q)
    assert "Biscuit" not in base.content and "Pepper" not in base.content
    assert base.response_metadata["model_name"] == "base"
    registry.pointer[("ns",)] = Rec(1, "ns-v1", str(fact_adapters["v1"]))
    first = llm.invoke(DOG_Q)
    assert "Biscuit" in first.content and first.response_metadata["model_name"] == "ns-v1"
    assert first.usage_metadata["output_tokens"] > 0
    registry.pointer[("ns",)] = Rec(2, "ns-v2", str(fact_adapters["v2"]))
    assert "Pepper" in llm.invoke(DOG_Q).content
    registry.pointer[("ns",)] = Rec(1, "ns-v1", str(fact_adapters["v1"]))  # already loaded
    assert "Biscuit" in llm.invoke(DOG_Q).content
    del registry.pointer[("ns",)]
    assert llm.invoke(DOG_Q).content == base.content  # adapters disabled for the base model


def test_streaming_async_and_stop(serving_base_model, fact_adapters) -> None:
    import asyncio

    llm = InProcessChatModel(adapter_path=str(fact_adapters["v2"]),
                             base_model=str(serving_base_model), max_tokens=16)
    chunks = [c.content for c in llm.stream(DOG_Q)]
    assert len([c for c in chunks if c]) > 2 and "Pepper" in "".join(chunks)
    full = llm.invoke(DOG_Q).content
    assert "".join(chunks).strip() == full

    async def go():
        answer = await llm.ainvoke(DOG_Q)
        streamed = [c.content async for c in llm.astream(DOG_Q)]
        return answer.content, "".join(streamed)

    answer, streamed = asyncio.run(go())
    assert answer == full and streamed.strip() == full
    cut = llm.invoke(DOG_Q, stop=["named"]).content
    assert "named" not in cut and "Pepper" not in cut and cut
