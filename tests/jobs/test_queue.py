"""Refresh workers on the PostgreSQL job queue: real worker processes, one killed mid-job.

Each refresh is real (distill, a two-step training run, the gate's evaluation, the pointer
switch) on the shipped sample conversation, made short by ``RAGTUNE_*`` settings; the small
namespaces stop at ``too_small`` in a second.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

pytest.importorskip("procrastinate", reason="install the [queue] extra")

pytestmark = [pytest.mark.slow, pytest.mark.train]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def env(pg_uri, schema, tmp_path, serving_base_model):
    return {**os.environ, "RAGTUNE_PG_URI": pg_uri, "RAGTUNE_SCHEMA": schema,
            "RAGTUNE_BASE_MODEL": str(serving_base_model),
            "RAGTUNE_HOME": str(tmp_path / "home"), "RAGTUNE_PORT": str(_free_port()),
            "RAGTUNE_MAX_STEPS": "2", "RAGTUNE_GENERAL_REPLAY": "0", "RAGTUNE_GATE": "false",
            "RAGTUNE_EVAL_MAX_QUESTIONS": "4", "RAGTUNE_TORCH_THREADS": "1",
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def _worker(env: dict, name: str, log_dir) -> subprocess.Popen:
    log = open(log_dir / f"{name}.log", "w")
    return subprocess.Popen([sys.executable, "-m", "langchain_ragtune.cli", "-v", "worker",
                             "--name", name, "--heartbeat", "1", "--stalled-after", "4"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)


def _wait(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_workers_share_the_queue_and_a_killed_workers_job_runs_again(store_config, env,
                                                                     tmp_path):
    from langchain_ragtune.datasets.locomo import load_sample
    from langchain_ragtune.eval.locomo import to_turns
    from langchain_ragtune.jobs.queue import (QUEUE, enqueue_refresh, ensure_queue_schema,
                                              queue_app, queue_stats)
    from langchain_ragtune.store import MemoryStore
    from langchain_ragtune.testing import HashEmbeddings
    from langchain_ragtune.tuning.registry import AdapterRegistry

    store = MemoryStore(store_config, embeddings=HashEmbeddings(), background_embedding=False)
    store.setup()
    big = ("q-big",)
    store.add(big, to_turns(load_sample()[0]))
    small = [(f"q-small-{i}",) for i in range(6)]
    for ns in small:
        store.add(ns, [{"text": f"I like tea number {ns[0]}.", "speaker": "Ola"}])
    app = queue_app(store_config)
    assert ensure_queue_schema(app, store) is True
    assert ensure_queue_schema(app, store) is False  # once
    app.open()
    try:
        first = _worker(env, "w1", tmp_path)
        big_job = enqueue_refresh(app, big, new_memories=60)
        assert big_job is not None

        def big_doing():
            jobs = app.job_manager.list_jobs(id=big_job)
            return jobs and jobs[0].status == "doing"

        _wait(big_doing, 120, "the first worker to take the big refresh")
        time.sleep(3)  # inside the refresh (loading, distilling or training)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        assert app.job_manager.list_jobs(id=big_job)[0].status == "doing"  # orphaned

        # duplicates collapse while a refresh of a namespace waits
        ids = [enqueue_refresh(app, ns, new_memories=1) for ns in small]
        assert all(ids) and enqueue_refresh(app, small[0]) is None

        others = [_worker(env, f"w{i}", tmp_path) for i in (2, 3)]
        t_killed = time.monotonic()
        try:
            _wait(lambda: app.job_manager.list_jobs(id=big_job)[0].status == "succeeded", 300,
                  "the killed worker's refresh to run again and succeed")
            recovered_s = time.monotonic() - t_killed
            _wait(lambda: queue_stats(app).get("succeeded") == 1 + len(small), 120,
                  "every job to succeed")
        finally:
            for p in others:
                p.send_signal(signal.SIGTERM)
            for p in others:
                p.wait(60)
        stats = queue_stats(app)
        assert stats.get("failed", 0) == 0 and stats.get("todo", 0) == 0, stats
        big_final = app.job_manager.list_jobs(id=big_job)[0]
        assert big_final.attempts >= 1 and big_final.queue == QUEUE
        # no double run: one version of the big namespace, none for the small ones
        registry = AdapterRegistry(store)
        assert [r.version for r in registry.list(big)] == [1]
        assert registry.current(big) is not None
        assert all(registry.current(ns) is None for ns in small)
        print(f"killed job recovered and finished in {recovered_s:.0f} s")
    finally:
        app.close()
        store.close()
