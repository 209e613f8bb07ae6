"""Every graph named in langgraph.json imports (without connecting anywhere) and compiles."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIG = json.loads((ROOT / "langgraph.json").read_text())


def load(name: str, ref: str):
    path, attr = ref.split(":")
    spec = importlib.util.spec_from_file_location(f"_graph_{name}", ROOT / path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module, getattr(module, attr)


def test_langgraph_json_shape():
    assert CONFIG["dependencies"] == ["."]
    assert set(CONFIG["graphs"]) == {"memory_chat", "refresh"}
    assert isinstance(CONFIG["env"], (dict, str))


@pytest.mark.parametrize("name", sorted(CONFIG["graphs"]))
def test_graph_imports_and_compiles(name):
    from langgraph.graph import StateGraph

    module, graph = load(name, CONFIG["graphs"][name])
    assert hasattr(graph, "invoke") and hasattr(graph, "ainvoke")
    assert isinstance(module.builder, StateGraph)
    again = module.builder.compile()  # tests can compile the exposed builder themselves
    assert set(again.get_graph().nodes) == set(graph.get_graph().nodes)


def test_memory_chat_graph_shape():
    _, graph = load("memory_chat", CONFIG["graphs"]["memory_chat"])
    g = graph.get_graph()
    assert {"route", "retrieve", "generate", "remember"} <= set(g.nodes)
    edges = {(e.source, e.target) for e in g.edges}
    assert {("route", "retrieve"), ("route", "generate"), ("retrieve", "generate"),
            ("generate", "remember")} <= edges


def test_memory_chat_graph_runs_with_a_test_store(store):
    """The module's builder wired to the test store and a scripted model answers."""
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    from langchain_ragtune.router.nodes import memory_graph_builder

    store.add(("user-graphs",), ["I play the banjo."])
    store.flush()
    graph = memory_graph_builder(
        store, chat_model_factory=lambda adapter: FakeListChatModel(responses=["banjo!"]),
        background_remember=False).compile()
    out = graph.invoke({"messages": [("user", "Which instrument do I play, the banjo?")]},
                       {"configurable": {"user_id": "graphs", "thread_id": "g"}})
    assert out["messages"][-1].content == "banjo!" and "banjo" in out["memory_context"]


def test_refresh_graph_reads_the_namespace_from_config(monkeypatch):
    module, graph = load("refresh", CONFIG["graphs"]["refresh"])
    seen = {}

    def fake_refresh(namespace, **kwargs):
        seen["namespace"] = namespace

        class R:
            def as_dict(self):
                return {"namespace": list(namespace), "status": "up_to_date"}

        return R()

    import importlib

    jobs = importlib.import_module("langchain_ragtune.jobs.refresh")
    graph_module = importlib.import_module("langchain_ragtune.jobs.graph")

    monkeypatch.setattr(jobs, "refresh", fake_refresh)
    monkeypatch.setattr(graph_module, "process_store", lambda: None)
    out = graph.invoke({}, {"configurable": {"user_id": "42"}})
    assert seen["namespace"] == ("user-42",) and out["result"]["status"] == "up_to_date"


def test_examples_compile():
    import py_compile

    scripts = sorted((ROOT / "examples").glob("*.py"))
    assert len(scripts) >= 3
    for script in scripts:
        py_compile.compile(str(script), doraise=True)
