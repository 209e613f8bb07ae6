"""Keep every namespace's adapter up to date: refresh on a schedule, in the background.

A sweep runs every hour and retrains the namespaces with at least 20 new memories since
their adapter's watermark (distill -> train -> validate -> publish). The router picks up
each new version within seconds; until then, newer memories are answered from retrieval.

    python examples/schedule_refresh.py              # Ctrl-C stops it cleanly
    python examples/schedule_refresh.py --once       # one sweep now, then exit

With LangGraph Platform, the same job is the `refresh` graph of langgraph.json on a cron:
    client.crons.create("refresh", schedule="0 3 * * *",
                        config={"configurable": {"user_id": "42"}})
"""

import sys

from langchain_ragtune import MemoryStore
from langchain_ragtune.jobs.scheduler import RefreshScheduler, run_forever

with MemoryStore.from_env() as store:
    store.setup()
    scheduler = RefreshScheduler(store, interval_s=3600, min_new=20)
    if "--once" in sys.argv:
        for result in scheduler.run_once():
            print(result.as_dict()["namespace"], result.status, result.adapter_name or "")
    else:
        print("refreshing every hour; Ctrl-C to stop")
        run_forever(scheduler)
