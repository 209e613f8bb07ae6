"""Refreshes on a pool of workers: a PostgreSQL job queue (procrastinate) in the store's database.

One machine cannot train every user's adapter; the scheduler (APScheduler) stays the trigger
and only enqueues, and ``ragtune worker`` processes on any number of hosts take the jobs:

* jobs are fetched with ``SELECT ... FOR UPDATE SKIP LOCKED`` (procrastinate), so two
  workers never take the same job;
* a ``lock`` per namespace: a namespace's jobs run one at a time, whichever worker holds them
  (and :func:`~langchain_ragtune.jobs.refresh.refresh` also takes its advisory lock);
* a ``queueing_lock`` per namespace: while one refresh of a namespace waits, enqueueing
  another is a no-op (duplicate triggers collapse; the waiting one will see every memory);
* a job that fails is retried (``RETRY``); a job whose worker died (killed, host lost) is
  found by the missing heartbeats of its worker and put back in the queue by any live
  worker (``recover_stalled``), so no acknowledged refresh is lost;
* priority: a namespace with more new memories goes first (``priority`` = new memories).

The queue's tables live in their own PostgreSQL schema (``<schema>_queue``), applied on
first use.

Example:
    $ ragtune worker --concurrency 1          # on each training host
    $ ragtune scheduler start --queue         # enqueue due namespaces instead of running them
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from langchain_ragtune.store.types import namespace_str, validate_namespace

__all__ = ["QUEUE", "TASK_NAME", "enqueue_refresh", "ensure_queue_schema",
           "queue_app", "queue_stats", "recover_stalled", "run_worker"]

log = logging.getLogger(__name__)

#: The queue refresh jobs go to, and the registered task's name.
QUEUE = "ragtune-refresh"
TASK_NAME = "ragtune.refresh_namespace"


def _blueprint() -> Any:
    import procrastinate
    from procrastinate import RetryStrategy

    bp = procrastinate.Blueprint()

    # Retries cover passing failures (a database restart, a full disk freed later); a
    # refresh that fails for good records "failed" itself and does not raise.
    @bp.task(name=TASK_NAME, queue=QUEUE, pass_context=True,
             retry=RetryStrategy(max_attempts=3, wait=10))
    def refresh_namespace(context: Any, namespace: list[str], force: bool = False) -> dict:
        from langchain_ragtune.jobs.graph import process_store
        from langchain_ragtune.jobs.refresh import refresh

        started = time.monotonic()
        result = refresh(tuple(namespace), store=process_store(), force=force)
        out = result.as_dict()
        log.info("worker %s: refresh %s -> %s in %.0f s%s", context.worker_name,
                 namespace_str(tuple(namespace)), result.status, time.monotonic() - started,
                 f" ({result.reason})" if result.reason else "")
        if result.status == "busy":  # another process holds it: run again later, not lost
            raise RuntimeError(f"namespace {namespace!r} is busy; retrying")
        return {"status": out["status"], "adapter": out.get("adapter_name")}

    return bp


def queue_app(store_config: Any = None) -> Any:
    """A procrastinate ``App`` on the store's PostgreSQL, its tables in ``<schema>_queue``.

    Use it as a context manager (``with queue_app() as app:``) for enqueueing.
    """
    try:
        import procrastinate
    except ImportError:
        from langchain_ragtune.errors import DependencyMissingError

        raise DependencyMissingError("procrastinate", "queue",
                                     "Refresh workers (ragtune worker)") from None
    from langchain_ragtune.config import StoreConfig
    from langchain_ragtune.store.embedded import resolve_pg_uri

    cfg = store_config or StoreConfig.from_env()
    schema = f"{cfg.schema}_queue"
    connector = procrastinate.PsycopgConnector(
        conninfo=resolve_pg_uri(cfg), kwargs={"options": f"-c search_path={schema}"})
    app = procrastinate.App(connector=connector)
    app.add_tasks_from(_blueprint(), namespace="")
    app.ragtune_schema = schema  # type: ignore[attr-defined]
    app.ragtune_pg_uri = resolve_pg_uri(cfg)  # type: ignore[attr-defined]
    return app


def ensure_queue_schema(app: Any, store: Any) -> bool:
    """Install the queue's tables in their schema once; returns whether it was done now."""
    return store.install_job_queue(app.ragtune_schema, app.schema_manager.get_schema())


def enqueue_refresh(app: Any, namespace: Any, *, new_memories: int = 0,
                    force: bool = False) -> int | None:
    """Put a refresh of ``namespace`` in the queue; ``None`` when one already waits.

    Args:
        app: an opened :func:`queue_app`.
        namespace: the namespace.
        new_memories: how many memories are new (higher runs first).
        force: refresh even when nothing is new.
    """
    from procrastinate.exceptions import AlreadyEnqueued

    ns = validate_namespace(namespace)
    key = namespace_str(ns)
    task = app.tasks[TASK_NAME].configure(lock=key, queueing_lock=key,
                                          priority=min(int(new_memories), 2**31 - 1))
    try:
        return task.defer(namespace=list(ns), force=force)
    except AlreadyEnqueued:
        return None


def queue_stats(app: Any) -> dict[str, int]:
    """Jobs by status in the refresh queue (``todo``, ``doing``, ``succeeded``, ``failed``...)."""
    for row in app.job_manager.list_queues(queue=QUEUE):
        return {k: int(v) for k, v in row.items() if k not in ("name", "jobs_count")}
    return {}


async def recover_stalled(app: Any, *, stalled_after_s: float) -> list[int]:
    """Put back in the queue the jobs of workers silent for ``stalled_after_s`` seconds."""
    jobs = await app.job_manager.get_stalled_jobs(queue=QUEUE,
                                                  seconds_since_heartbeat=stalled_after_s)
    ids = []
    for job in jobs:
        await app.job_manager.retry_job(job)
        ids.append(job.id)
    if ids:
        log.warning("re-queued %d refresh job(s) of dead workers: %s", len(ids), ids)
    return ids


def run_worker(*, concurrency: int = 1, name: str | None = None,
               heartbeat_s: float = 5.0, stalled_after_s: float = 20.0,
               wait: bool = True) -> None:
    """Take refresh jobs until SIGINT/SIGTERM (or, with ``wait=False``, until none is left).

    The store and the queue come from ``RAGTUNE_*`` settings (``StoreConfig.from_env()``).

    Every ``heartbeat_s`` the worker tells the database it lives; jobs of workers silent for
    ``stalled_after_s`` go back to the queue.
    """
    from langchain_ragtune.jobs.graph import process_store

    app = queue_app()
    ensure_queue_schema(app, process_store())
    name = name or f"ragtune-worker-{os.getpid()}"

    async def main() -> None:
        async with app.open_async():
            recover = asyncio.create_task(_recover_loop(app, stalled_after_s))
            try:
                await app.run_worker_async(
                    queues=[QUEUE], concurrency=concurrency, name=name, wait=wait,
                    update_heartbeat_interval=heartbeat_s,
                    stalled_worker_timeout=stalled_after_s, listen_notify=True,
                    fetch_job_polling_interval=2.0)
            finally:
                recover.cancel()

    asyncio.run(main())


async def _recover_loop(app: Any, stalled_after_s: float) -> None:
    while True:
        try:
            await recover_stalled(app, stalled_after_s=stalled_after_s)
        except Exception:  # the next round tries again
            log.exception("could not check for stalled refresh jobs")
        await asyncio.sleep(max(1.0, stalled_after_s / 2))

