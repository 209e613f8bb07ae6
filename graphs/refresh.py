"""The refresh graph: bring one namespace's adapter up to date (distill -> train -> validate
-> publish), for LangGraph crons.

The namespace comes from the run's configuration, like the memory graph's::

    client.crons.create("refresh", schedule="0 3 * * *",
                        config={"configurable": {"user_id": "42"}})

The output state's ``result`` is :meth:`RefreshResult.as_dict()
<langchain_ragtune.jobs.refresh.RefreshResult.as_dict>` (``status``, ``version``,
``adapter_name``, ``examples``, ``metrics``...). Scheduling without LangGraph: see
``examples/schedule_refresh.py`` (APScheduler).
"""


from typing import Any, TypedDict

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph

from langchain_ragtune.router.memory import namespace_from_config


class RefreshState(TypedDict, total=False):
    """``force``: refresh even when nothing is new; ``result``: what the refresh did."""

    force: bool
    result: dict[str, Any]


_STORE: list = []


def open_store() -> Any:
    """The process's memory store, set up on first use."""
    if not _STORE:
        from langchain_ragtune.store import MemoryStore

        store = MemoryStore.from_env()
        store.setup()
        _STORE.append(store)
    return _STORE[0]


def refresh_node(state: RefreshState, config: RunnableConfig) -> RefreshState:
    """Run :func:`~langchain_ragtune.jobs.refresh.refresh` for the run's namespace."""
    from langchain_ragtune.jobs.refresh import refresh

    result = refresh(namespace_from_config(config), store=open_store(),
                     force=bool(state.get("force")))
    return {"result": result.as_dict()}


builder = StateGraph(RefreshState)
builder.add_node("refresh", refresh_node)
builder.add_edge(START, "refresh")
builder.add_edge("refresh", END)
graph = builder.compile(name="refresh")
