"""Scheduled refreshes: APScheduler 3.x around :func:`~langchain_ragtune.jobs.refresh.refresh`.

One job, a *sweep*, runs on an interval or a cron schedule. Each sweep asks PostgreSQL which
namespaces have at least ``min_new`` live memories newer than their current adapter's
watermark (one query) and refreshes those, one after another. So the trigger says how often
to look, and ``min_new`` says how much new history is worth a training run.

The job lives in APScheduler's SQLAlchemy job store, in a table of the ragtune schema on the
same PostgreSQL, with ``coalesce=True`` (missed runs collapse into one) and
``max_instances=1`` (a sweep never overlaps itself). Two app replicas may each run a
scheduler: the per-namespace advisory lock makes the second refresh of a namespace report
``busy`` instead of training twice.

Example:
    >>> from langchain_ragtune.jobs.scheduler import RefreshScheduler      # doctest: +SKIP
    >>> with RefreshScheduler(store, interval_s=3600, min_new=20) as sched:   # doctest: +SKIP
    ...     results = sched.run_once()          # a sweep now, in this thread
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from langchain_ragtune.errors import ConfigError
from langchain_ragtune.store.types import namespace_str, validate_namespace

__all__ = ["QueuedRefresh", "RefreshScheduler", "pending_namespaces", "sqlalchemy_url"]

log = logging.getLogger(__name__)

#: Live schedulers by job id: the persisted job stores only this id (always picklable);
#: the scheduler object holding the store and options is looked up here when it fires.
_LIVE: dict[str, "RefreshScheduler"] = {}
_LIVE_LOCK = threading.Lock()


def sqlalchemy_url(pg_uri: str) -> str:
    """The SQLAlchemy form (psycopg 3 driver) of a ``postgresql://`` URI.

    Example:
        >>> sqlalchemy_url("postgresql://u:p@db:5432/app")
        'postgresql+psycopg://u:p@db:5432/app'
    """
    for prefix in ("postgresql://", "postgres://"):
        if pg_uri.startswith(prefix):
            return "postgresql+psycopg://" + pg_uri[len(prefix):]
    if pg_uri.startswith("postgresql+"):
        return pg_uri
    raise ConfigError(f"{pg_uri!r} is not a PostgreSQL URI (postgresql://...).")


def pending_namespaces(store: Any, *, min_new: int = 1, limit: int = 1000,
                       min_interval_s: float = 0.0) -> list[tuple[tuple[str, ...], int]]:
    """Namespaces with at least ``min_new`` live memories newer than their adapter's watermark.

    Returns:
        ``[(namespace, new_count), ...]``, most new memories first.
    """
    if isinstance(min_new, bool) or not isinstance(min_new, int) or min_new < 1:
        raise ConfigError(f"min_new={min_new!r} must be an int >= 1.")
    if min_interval_s < 0:
        raise ConfigError(f"min_interval_s={min_interval_s!r} must be >= 0.")
    return store.pending_namespaces(min_new=min_new, limit=limit, min_interval_s=min_interval_s)


@dataclass
class QueuedRefresh:
    """What a queueing sweep did for one namespace: ``queued`` (job id) or
    ``already_waiting`` (a refresh of it is queued already and will see the new memories)."""

    namespace: tuple[str, ...]
    new_memories: int
    job_id: int | None
    status: str = "queued"
    adapter_name: None = None
    reason: str | None = None
    ok: bool = True

    def as_dict(self) -> dict[str, Any]:
        return {"namespace": list(self.namespace), "status": self.status,
                "job_id": self.job_id, "new_memories": self.new_memories}


def _enqueue(app: Any, ns: tuple[str, ...], new: int) -> QueuedRefresh:
    from langchain_ragtune.jobs.queue import enqueue_refresh

    job = enqueue_refresh(app, ns, new_memories=new)
    return QueuedRefresh(ns, new, job, "queued" if job is not None else "already_waiting")


def _sweep_job(job_id: str) -> None:
    """What APScheduler runs: the live scheduler's sweep (skipped if it is gone)."""
    with _LIVE_LOCK:
        sched = _LIVE.get(job_id)
    if sched is None:
        log.warning("scheduled refresh %s fired but no live RefreshScheduler owns it; skipped",
                    job_id)
        return
    sched.run_once()


class RefreshScheduler:
    """Refresh namespaces on a schedule, when enough new memories have accumulated.

    Args:
        store: a set-up memory store (its PostgreSQL also holds the job store).
        interval_s: run a sweep every this many seconds (ignored when ``cron`` is given).
        cron: a crontab expression (``"*/30 * * * *"``) instead of the interval.
        min_new: refresh a namespace only with at least this many new memories.
        namespaces: only these namespaces (default: every namespace with memories).
        refresh_options: keyword arguments for every :func:`refresh` call (configs,
            ``teacher``, ``publish``...).
        refresh_fn: the refresh function (default :func:`refresh`; tests pass a fake).
        persistent: keep the job in the SQLAlchemy job store (False: in memory).
        job_id: the job's id (one per scheduler configuration).
        tablename: the job store table, in the store's schema.
        min_interval_s: leave a namespace alone until this long after its last adapter was
            switched in (a busy user would otherwise be retrained at every sweep while quiet
            ones wait).
        queue: an opened :func:`~langchain_ragtune.jobs.queue.queue_app`: sweeps then only
            enqueue the due namespaces (most new memories first) and ``ragtune worker``
            processes run the refreshes, on any number of hosts.

    Example:
        >>> sched = RefreshScheduler(store, cron="0 3 * * *", min_new=50)   # doctest: +SKIP
        >>> sched.start(); ...; sched.stop()                                 # doctest: +SKIP
    """

    def __init__(self, store: Any, *, interval_s: float | None = 3600.0, cron: str | None = None,
                 min_new: int = 1, namespaces: Sequence[Any] | None = None,
                 refresh_options: dict[str, Any] | None = None,
                 refresh_fn: Callable[..., Any] | None = None, persistent: bool = True,
                 job_id: str = "ragtune-refresh-sweep",
                 tablename: str = "apscheduler_jobs", queue: Any = None,
                 min_interval_s: float = 0.0) -> None:
        if cron is None and (interval_s is None or interval_s <= 0):
            raise ConfigError(f"interval_s={interval_s!r}: give a positive interval or a cron "
                              "expression.")
        if isinstance(min_new, bool) or not isinstance(min_new, int) or min_new < 1:
            raise ConfigError(f"min_new={min_new!r} must be an int >= 1.")
        self.store = store
        self.interval_s = interval_s
        self.cron = cron
        self.min_new = min_new
        self.namespaces = [validate_namespace(n) for n in namespaces] if namespaces else None
        self.refresh_options = dict(refresh_options or {})
        if refresh_fn is None:
            from langchain_ragtune.jobs.refresh import refresh as refresh_fn
        self.refresh_fn = refresh_fn
        self.persistent = persistent
        self.job_id = job_id
        self.tablename = tablename
        self.queue = queue
        self.min_interval_s = float(min_interval_s)
        #: Jobs waiting in the queue after each queueing sweep (the backlog's trend).
        self.backlog: list[int] = []
        self.history: list[Any] = []
        self._scheduler: Any = None
        self._sweep_lock = threading.Lock()

    # -- the work ----------------------------------------------------------------------------

    def due(self) -> list[tuple[tuple[str, ...], int]]:
        """The namespaces a sweep would refresh now, with their new-memory counts."""
        rows = pending_namespaces(self.store, min_new=self.min_new,
                                  min_interval_s=self.min_interval_s)
        if self.namespaces is not None:
            wanted = set(self.namespaces)
            rows = [(ns, n) for ns, n in rows if ns in wanted]
        return rows

    def run_once(self) -> list[Any]:
        """One sweep, in this thread: refresh every due namespace; returns the results.

        A failing namespace is logged and does not stop the others.
        """
        if not self._sweep_lock.acquire(blocking=False):
            log.info("a sweep is already running in this process; skipped")
            return []
        try:
            results = []
            for ns, n in self.due():
                log.info("%s %s (%d new memories)", "enqueueing" if self.queue else "refreshing",
                         namespace_str(ns), n)
                try:
                    if self.queue is not None:
                        res = _enqueue(self.queue, ns, n)
                    else:
                        res = self.refresh_fn(ns, store=self.store, **self.refresh_options)
                except Exception:  # one namespace's failure must not starve the others
                    log.exception("refresh of %s crashed", namespace_str(ns))
                    continue
                results.append(res)
                self.history.append(res)
            if self.queue is not None:
                self._watch_backlog()
            return results
        finally:
            self._sweep_lock.release()

    def _watch_backlog(self, sweeps: int = 3) -> None:
        """Record the queue's waiting jobs; warn when it grew ``sweeps`` sweeps in a row.

        Nothing is dropped meanwhile: a namespace has at most one waiting refresh (its
        queueing lock), and that refresh reads every memory acknowledged before it runs.
        """
        from langchain_ragtune.jobs.queue import queue_stats

        try:
            waiting = int(queue_stats(self.queue).get("todo", 0))
        except Exception:  # the numbers are advisory; the sweep itself succeeded
            log.debug("could not read the refresh queue's size", exc_info=True)
            return
        self.backlog.append(waiting)
        recent = self.backlog[-(sweeps + 1):]
        if len(recent) == sweeps + 1 and all(b > a for a, b in zip(recent, recent[1:])):
            log.warning("the refresh queue grew at each of the last %d sweeps (%s jobs "
                        "waiting): workers do not keep up; start more `ragtune worker`s or "
                        "raise --min-new / --min-interval", sweeps,
                        " -> ".join(map(str, recent)))

    # -- lifecycle ---------------------------------------------------------------------------

    def _trigger(self) -> Any:
        if self.cron:
            from apscheduler.triggers.cron import CronTrigger

            try:
                return CronTrigger.from_crontab(self.cron)
            except ValueError as exc:
                raise ConfigError(f"cron={self.cron!r} is not a crontab expression ({exc}); "
                                  "use e.g. '*/30 * * * *'.") from None
        from apscheduler.triggers.interval import IntervalTrigger

        return IntervalTrigger(seconds=float(self.interval_s))

    def _jobstore(self) -> Any:
        if not self.persistent:
            from apscheduler.jobstores.memory import MemoryJobStore

            return MemoryJobStore()
        from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore

        from langchain_ragtune.store.embedded import resolve_pg_uri

        uri = sqlalchemy_url(resolve_pg_uri(self.store.config))
        return SQLAlchemyJobStore(url=uri, tablename=self.tablename,
                                  tableschema=self.store.schema,
                                  engine_options={"pool_pre_ping": True})

    def start(self) -> "RefreshScheduler":
        """Start the background scheduler (returns at once)."""
        if self._scheduler is not None:
            return self
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.schedulers.background import BackgroundScheduler

        sched = BackgroundScheduler(
            jobstores={"default": self._jobstore()},
            executors={"default": ThreadPoolExecutor(1)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 3600},
            timezone="UTC")
        with _LIVE_LOCK:
            _LIVE[self.job_id] = self
        sched.add_job(_sweep_job, trigger=self._trigger(), args=[self.job_id], id=self.job_id,
                      name="ragtune refresh sweep", replace_existing=True, coalesce=True,
                      max_instances=1)
        sched.start()
        self._scheduler = sched
        log.info("refresh scheduler started (%s, min_new=%d)",
                 f"cron {self.cron}" if self.cron else f"every {self.interval_s:g} s", self.min_new)
        return self

    def stop(self, *, wait: bool = True) -> None:
        """Stop scheduling; with ``wait``, let a running sweep finish first."""
        sched, self._scheduler = self._scheduler, None
        if sched is not None:
            sched.shutdown(wait=wait)
        with _LIVE_LOCK:
            if _LIVE.get(self.job_id) is self:
                del _LIVE[self.job_id]

    @property
    def running(self) -> bool:
        return self._scheduler is not None and self._scheduler.running

    def next_run_time(self) -> Any:
        """When the sweep fires next (None when stopped)."""
        if self._scheduler is None:
            return None
        job = self._scheduler.get_job(self.job_id)
        return job.next_run_time if job else None

    def __enter__(self) -> "RefreshScheduler":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def run_forever(scheduler: RefreshScheduler, *, stop_event: threading.Event,
                poll_s: float = 0.5) -> None:
    """Start ``scheduler``, block until ``stop_event`` is set, then stop it (waiting for a
    running sweep).

    The process's signals are the caller's business: ``ragtune scheduler start`` sets the
    event on SIGINT/SIGTERM (:func:`langchain_ragtune.cli._common.stop_event_on_signals`).
    """
    try:
        scheduler.start()
        while not stop_event.wait(poll_s):
            pass
    finally:
        scheduler.stop(wait=True)
