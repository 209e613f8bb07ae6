"""The memory store as LangGraph's BaseStore, inside a compiled graph."""

from __future__ import annotations

from typing import TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.store.base import BaseStore

from langchain_ragtune.store.langgraph import RagtuneStore


class S(TypedDict, total=False):
    note: str
    found: list[str]


def test_put_get_search_delete_through_a_graph(store):
    lg = RagtuneStore(store)

    def write(state: S, *, store: BaseStore) -> S:
        store.put(("graph", "u1"), "fav-food", {"text": state["note"], "kind": "preference"})
        store.put(("graph", "u2"), "fav-food", {"text": "u2 likes olives", "kind": "preference"})
        return {}

    def read(state: S, *, store: BaseStore) -> S:
        store_items = store.search(("graph", "u1"), query="ramen or olives?", limit=3)
        return {"found": [i.value["text"] for i in store_items]}

    g = StateGraph(S)
    g.add_node("write", write)
    g.add_node("read", read)
    g.add_edge(START, "write")
    g.add_edge("write", "read")
    g.add_edge("read", END)
    out = g.compile(store=lg).invoke({"note": "u1 loves ramen"})
    assert out["found"] == ["u1 loves ramen"]  # never u2's item

    item = lg.get(("graph", "u1"), "fav-food")
    assert item.value == {"text": "u1 loves ramen", "kind": "preference"}
    lg.put(("graph", "u1"), "fav-food", {"text": "u1 now prefers pho", "kind": "preference"})
    assert lg.get(("graph", "u1"), "fav-food").value["text"] == "u1 now prefers pho"
    assert store.count(("graph", "u1")) == 1  # an upsert, not a second memory
    assert [i.key for i in lg.search(("graph", "u1"), filter={"kind": "preference"})] == ["fav-food"]
    assert lg.search(("graph", "u1"), filter={"kind": "other"}) == []
    assert ("graph", "u1") in lg.list_namespaces(prefix=("graph",))
    assert lg.list_namespaces(prefix=("graph",), max_depth=1) == [("graph",)]
    lg.delete(("graph", "u1"), "fav-food")
    assert lg.get(("graph", "u1"), "fav-food") is None
    assert lg.get(("graph", "u2"), "fav-food") is not None


async def test_async_twin(store):
    lg = RagtuneStore(store)
    await lg.aput(("agraph",), "k", {"content": "async note about tulips"})
    assert (await lg.aget(("agraph",), "k")).value["content"] == "async note about tulips"
    hits = await lg.asearch(("agraph",), query="tulips")
    # found by its keyword before it has a vector: no similarity yet (score None)
    assert hits and hits[0].key == "k" and hits[0].score is None
    store.flush()
    hits = await lg.asearch(("agraph",), query="tulips")
    assert hits[0].key == "k" and -1.0 <= hits[0].score <= 1.0
