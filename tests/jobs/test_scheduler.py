"""The APScheduler wrapper: due namespaces, the SQLAlchemy job store on PostgreSQL, start/stop."""

from __future__ import annotations

import threading
import time

import pytest

from langchain_ragtune.errors import ConfigError
from langchain_ragtune.jobs.refresh import RefreshResult
from langchain_ragtune.jobs.scheduler import (
    RefreshScheduler,
    pending_namespaces,
    run_forever,
    sqlalchemy_url,
)
from langchain_ragtune.tuning.registry import AdapterRegistry


class Recorder:
    def __init__(self):
        self.calls = []
        self.called = threading.Event()

    def __call__(self, ns, *, store, **kw):
        self.calls.append((ns, kw))
        self.called.set()
        return RefreshResult(namespace=ns, status="up_to_date")


@pytest.fixture(scope="module")
def namespaces(store):
    big, small = ("sched-big",), ("sched-small",)
    store.add(big, [f"memory number {i} about sailing" for i in range(6)])
    store.add(small, ["just one memory about kites"])
    return big, small


def test_sqlalchemy_url():
    assert sqlalchemy_url("postgresql://postgres:@/postgres?host=/tmp/x") == \
        "postgresql+psycopg://postgres:@/postgres?host=/tmp/x"
    with pytest.raises(ConfigError):
        sqlalchemy_url("mysql://x")


def test_pending_counts_memories_newer_than_the_watermark(store, namespaces):
    big, small = namespaces
    due = dict(pending_namespaces(store, min_new=1))
    assert due[big] == 6 and due[small] == 1
    assert small not in dict(pending_namespaces(store, min_new=2))
    # An adapter whose watermark covers the first four memories leaves two new ones.
    reg = AdapterRegistry(store)
    fourth = store.list(big)[3].seq
    rec = reg.register(big, 1, "sched-big-v1-aaaaaa", "/tmp/x", "/m", watermark_seq=fourth)
    reg.switch_current(big, rec.id)
    assert dict(pending_namespaces(store, min_new=1))[big] == 2
    assert big not in dict(pending_namespaces(store, min_new=3))
    # a minimum interval since the last switch holds it back; namespaces without one are due
    held = dict(pending_namespaces(store, min_new=1, min_interval_s=3600))
    assert big not in held and held[small] == 1
    with pytest.raises(ConfigError, match="min_interval_s"):
        pending_namespaces(store, min_interval_s=-1)


def test_run_once_refreshes_only_due_namespaces(store, namespaces):
    big, small = namespaces
    rec = Recorder()
    sched = RefreshScheduler(store, min_new=2, refresh_fn=rec, persistent=False,
                             refresh_options={"force": False})
    results = sched.run_once()
    assert [ns for ns, _ in rec.calls] == [big] and rec.calls[0][1] == {"force": False}
    assert results[0].status == "up_to_date"
    only = RefreshScheduler(store, min_new=1, namespaces=[small], refresh_fn=Recorder(),
                            persistent=False)
    assert [ns for ns, _ in only.due()] == [small]


def test_bad_settings_are_rejected(store):
    with pytest.raises(ConfigError, match="min_new"):
        RefreshScheduler(store, min_new=0)
    with pytest.raises(ConfigError, match="interval"):
        RefreshScheduler(store, interval_s=0)
    with pytest.raises(ConfigError, match="crontab"):
        RefreshScheduler(store, cron="every tuesday", persistent=False).start()


def test_persistent_interval_job_fires_and_stops(store, namespaces):
    rec = Recorder()
    sched = RefreshScheduler(store, interval_s=0.5, min_new=1, refresh_fn=rec,
                             job_id="test-sweep")
    sched.start()
    try:
        job = sched._scheduler.get_job("test-sweep")
        assert job.coalesce is True and job.max_instances == 1
        assert sched.next_run_time() is not None
        with store.pool.connection() as conn:  # the job lives in PostgreSQL, in our schema
            row = conn.execute(f"SELECT id FROM {store.schema}.apscheduler_jobs").fetchone()
        assert row["id"] == "test-sweep"
        assert rec.called.wait(10), "the interval job never fired"
    finally:
        sched.stop()
    assert not sched.running and sched.next_run_time() is None


def test_cron_trigger_and_run_forever_stop_event(store):
    sched = RefreshScheduler(store, cron="*/5 * * * *", refresh_fn=Recorder(), persistent=False)
    stop = threading.Event()
    t = threading.Thread(target=run_forever, args=(sched,), kwargs={"stop_event": stop,
                                                                    "poll_s": 0.05})
    t.start()
    deadline = time.monotonic() + 10
    while not sched.running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sched.running and sched.next_run_time().minute % 5 == 0
    stop.set()
    t.join(10)
    assert not t.is_alive() and not sched.running
