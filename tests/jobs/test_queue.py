"""Refresh workers on the PostgreSQL job queue: real worker processes, one killed mid-job.

``ragtune bench workers`` at a small size: each real refresh distills the shipped sample,
trains two steps, evaluates and switches the pointer; the other namespaces stop at
``too_small``. The first worker is killed with SIGKILL a few seconds into a real refresh.
"""

from __future__ import annotations

import pytest

pytest.importorskip("procrastinate", reason="install the [queue] extra")

pytestmark = [pytest.mark.slow, pytest.mark.train]


def test_workers_drain_the_queue_and_a_killed_workers_job_runs_again(pg_uri, tmp_path,
                                                                     serving_base_model):
    from langchain_ragtune.bench.workers import run_workers_bench

    out = run_workers_bench(workers=2, namespaces=6, real=1, pg_uri=pg_uri,
                            base_model=serving_base_model, log_dir=tmp_path, timeout_s=600)
    # The whole logs: the worker that re-queues the dead one's job goes on to run more jobs.
    logs = "\n".join(p.read_text() for p in sorted(tmp_path.glob("w*.log")))
    assert "error" not in out, (out, logs)
    assert out["jobs"] == 6 and out["completed"] == 6, (out, logs)
    assert out["lost_jobs"] == 0 and out["failed"] == 0
    assert out["double_runs"] == 0 and out["published"] == 1  # one version, published once
    assert out["recovered_after_kill_s"] is not None
    assert "re-queued 1 refresh job(s) of dead workers" in logs, logs[-4000:]
    assert all(out["targets"].values()), out["targets"]
    print(f"killed job recovered {out['recovered_after_kill_s']} s after the kill")


def test_enqueueing_collapses_duplicates_and_installs_once(store_config):
    from langchain_ragtune.jobs.queue import (
        enqueue_refresh,
        ensure_queue_schema,
        queue_app,
        queue_stats,
    )
    from langchain_ragtune.store import MemoryStore
    from langchain_ragtune.testing import HashEmbeddings

    store = MemoryStore(store_config, embeddings=HashEmbeddings(), background_embedding=False)
    store.setup()
    app = queue_app(store_config)
    assert ensure_queue_schema(app, store) is True
    assert ensure_queue_schema(app, store) is False  # once
    with app.open():
        first = enqueue_refresh(app, ("dup",), new_memories=3)
        assert first is not None
        assert enqueue_refresh(app, ("dup",), new_memories=9) is None  # one waits already
        assert enqueue_refresh(app, ("other",)) is not None
        assert queue_stats(app)["todo"] == 2
    store.drop_job_queue(app.ragtune_schema)
    store.close()


def test_a_growing_backlog_is_reported(store_config, caplog):
    """Queueing sweeps record the waiting jobs and warn when workers do not keep up."""
    from langchain_ragtune.jobs.queue import ensure_queue_schema, queue_app
    from langchain_ragtune.jobs.scheduler import RefreshScheduler
    from langchain_ragtune.store import MemoryStore
    from langchain_ragtune.testing import HashEmbeddings

    store = MemoryStore(store_config, embeddings=HashEmbeddings(), background_embedding=False)
    store.setup()
    app = queue_app(store_config)
    ensure_queue_schema(app, store)
    with app.open():
        sched = RefreshScheduler(store, persistent=False, queue=app)
        for i in range(4):  # no worker runs: every sweep adds a namespace's job
            store.add((f"grow-{i}",), [{"text": f"note {i}", "speaker": "Ola"}])
            with caplog.at_level("WARNING", logger="langchain_ragtune.jobs.scheduler"):
                done = sched.run_once()
            assert {r.status for r in done} <= {"queued", "already_waiting"}
        assert sched.backlog[-4:] == sorted(sched.backlog[-4:]) and sched.backlog[-1] >= 4
    assert "workers do not keep up" in caplog.text
    store.drop_job_queue(app.ragtune_schema)
    store.close()
