"""The refresh graph: bring one namespace's adapter up to date (distill -> train -> validate
-> publish), for LangGraph crons.

The namespace comes from the run's configuration, like the memory graph's::

    client.crons.create("refresh", schedule="0 3 * * *",
                        config={"configurable": {"user_id": "42"}})

What the output holds: :mod:`langchain_ragtune.jobs.graph`. Scheduling without LangGraph:
see ``examples/schedule_refresh.py`` (APScheduler).
"""

from langchain_ragtune.jobs.graph import refresh_graph_builder

builder = refresh_graph_builder()
graph = builder.compile(name="refresh")
