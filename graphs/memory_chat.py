"""The memory chat graph for ``langgraph dev`` / LangGraph Platform: route -> retrieve ->
generate -> remember.

Invoke it with the user's identity in the run's configuration (never in the input)::

    {"configurable": {"user_id": "42", "thread_id": "t-1"}}

The memory store opens on the first run, in a worker thread, never on the server's event
loop (``RAGTUNE_*`` variables: the embedded PostgreSQL by default, or ``RAGTUNE_PG_URI``), so
importing this module connects to nothing. Answers come from vLLM (``RAGTUNE_VLLM_URLS``, or
``ragtune serve`` on the configured port).
"""

from langchain_ragtune.jobs.graph import process_store
from langchain_ragtune.router.nodes import memory_graph_builder

builder = memory_graph_builder(process_store)
graph = builder.compile(name="memory_chat")
