"""The refresh as a LangGraph graph, for LangGraph crons (``graphs/refresh.py`` ships it).

The namespace comes from the run's configuration, like the memory graph's, and the output
state's ``result`` is :meth:`RefreshResult.as_dict()
<langchain_ragtune.jobs.refresh.RefreshResult.as_dict>` (``status``, ``version``,
``adapter_name``, ``examples``, ``metrics``...).

Example:
    >>> graph = refresh_graph_builder().compile(name="refresh")      # doctest: +SKIP
    >>> graph.invoke({}, {"configurable": {"user_id": "42"}})["result"]["status"]  # doctest: +SKIP
    'up_to_date'
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Callable, TypedDict

if TYPE_CHECKING:
    from langchain_core.runnables import RunnableConfig
    from langgraph.graph import StateGraph

    from langchain_ragtune.store import MemoryStore

__all__ = ["RefreshState", "process_store", "refresh_graph_builder"]


class RefreshState(TypedDict, total=False):
    """``force``: refresh even when nothing is new; ``result``: what the refresh did."""

    force: bool
    result: dict[str, Any]


_STORE: list[MemoryStore] = []
_STORE_LOCK = threading.Lock()


def process_store() -> MemoryStore:
    """The process's memory store from ``RAGTUNE_*`` settings, set up on first use (so
    importing a graph connects to nothing)."""
    with _STORE_LOCK:
        if not _STORE:
            from langchain_ragtune.store import MemoryStore

            store = MemoryStore.from_env()
            store.setup()
            _STORE.append(store)
        return _STORE[0]


def refresh_graph_builder(open_store: Callable[[], MemoryStore] | None = None) -> StateGraph:
    """A one-node graph running :func:`~langchain_ragtune.jobs.refresh.refresh` for the
    run's namespace.

    Args:
        open_store: gives the store to refresh from (default :func:`process_store`).
    """
    from langgraph.graph import END, START, StateGraph

    from langchain_ragtune.router.memory import namespace_from_config

    def refresh_node(state: RefreshState, config: RunnableConfig) -> RefreshState:
        from langchain_ragtune.jobs.refresh import refresh

        store = (open_store or process_store)()
        result = refresh(namespace_from_config(config), store=store,
                         force=bool(state.get("force")))
        return {"result": result.as_dict()}

    builder = StateGraph(RefreshState)
    builder.add_node("refresh", refresh_node)
    builder.add_edge(START, "refresh")
    builder.add_edge("refresh", END)
    return builder
