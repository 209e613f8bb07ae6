"""The refresh-workers benchmark: worker processes on the job queue, one killed mid-job.

In a throwaway schema: ``namespaces`` namespaces, of which ``real`` hold the shipped sample
conversation (a real refresh: distill, a short training run, the gate's evaluation, the
pointer switch) and the rest one turn each (they end ``too_small`` in a moment). One worker
process starts, takes the first real refresh and is killed with SIGKILL a few seconds into
it; ``workers`` more start and drain the queue, putting the dead worker's job back by its
missing heartbeats.

JSON keys: ``jobs``, ``completed``, ``double_runs`` (namespaces with more than one adapter
version: a refresh that ran twice), ``lost_jobs`` (not succeeded at the end),
``recovered_after_kill_s`` (from the kill to the killed job's success), ``seconds``.
Targets: 0 double runs, 0 lost, the killed job run again.

Example:
    $ ragtune bench workers --set workers=3 --set namespaces=30 --json workers.json
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable

from langchain_ragtune.bench._common import finish, now_iso
from langchain_ragtune.hardware import machine_info

__all__ = ["run_workers_bench"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(pred: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.5)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def run_workers_bench(*, workers: int = 3, namespaces: int = 30, real: int | None = None,
                      kill_after_s: float = 3.0, timeout_s: float = 1800.0,
                      quiet: bool = False, json_out: str | None = None,
                      log_dir: str | Path | None = None, pg_uri: str | None = None,
                      base_model: str | Path | None = None) -> dict[str, Any]:
    """Run the benchmark (see the module); returns its JSON.

    Args:
        workers: worker processes started after the kill.
        namespaces: namespaces enqueued in all.
        real: how many of them get a real refresh (default: one in ten, at least one).
        kill_after_s: seconds into the first real refresh when its worker is killed.
        timeout_s: give up after this long.
        quiet: no progress lines.
        json_out: also write the result here.
        log_dir: where the workers' logs go (default: a temporary folder, removed).
        pg_uri: the PostgreSQL to use (default: the store's, ``RAGTUNE_PG_URI`` or embedded).
        base_model: the base model folder (default: the prepared default model).
    """
    from langchain_ragtune.config import ModelConfig, StoreConfig
    from langchain_ragtune.datasets.locomo import load_sample
    from langchain_ragtune.eval.locomo import to_turns
    from langchain_ragtune.jobs.queue import (
        enqueue_refresh,
        ensure_queue_schema,
        queue_app,
        queue_stats,
    )
    from langchain_ragtune.models import resolve_base_model
    from langchain_ragtune.store import MemoryStore
    from langchain_ragtune.store.embedded import resolve_pg_uri
    from langchain_ragtune.testing import HashEmbeddings
    from langchain_ragtune.tuning.registry import AdapterRegistry

    def say(msg: str) -> None:
        if not quiet:
            print(f"bench workers: {msg}", file=sys.stderr, flush=True)

    real = max(1, namespaces // 10) if real is None else real
    if not 1 <= real <= namespaces or workers < 1:
        raise ValueError(f"need 1 <= real ({real}) <= namespaces ({namespaces}) and "
                         f"workers >= 1 ({workers}).")
    started = time.monotonic()
    home = Path(tempfile.mkdtemp(prefix="ragtune-bench-workers-"))
    logs = Path(log_dir) if log_dir else home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    schema = f"bench_workers_{uuid.uuid4().hex[:8]}"
    cfg = StoreConfig.from_env(schema=schema, **({"pg_uri": pg_uri} if pg_uri else {}))
    store = MemoryStore(cfg, embeddings=HashEmbeddings(), background_embedding=False)
    base = Path(base_model) if base_model else resolve_base_model(ModelConfig.from_env())
    # Short real refreshes: two training steps, a small evaluation, no gate, no server.
    env = {**os.environ, "RAGTUNE_PG_URI": resolve_pg_uri(cfg), "RAGTUNE_SCHEMA": schema,
           "RAGTUNE_HOME": str(home), "RAGTUNE_BASE_MODEL": str(base),
           "RAGTUNE_PORT": str(_free_port()), "RAGTUNE_MAX_STEPS": "2",
           "RAGTUNE_GENERAL_REPLAY": "0", "RAGTUNE_GATE": "false",
           "RAGTUNE_EVAL_MAX_QUESTIONS": "4", "RAGTUNE_TORCH_THREADS": "1",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    procs: list[subprocess.Popen] = []

    def start(name: str) -> subprocess.Popen:
        log = open(logs / f"{name}.log", "w")
        p = subprocess.Popen([sys.executable, "-m", "langchain_ragtune.cli", "-v", "worker",
                              "--name", name, "--heartbeat", "1", "--stalled-after", "4"],
                             env=env, stdout=log, stderr=subprocess.STDOUT)
        procs.append(p)
        return p

    out: dict[str, Any] = {"bench": "workers", "date": now_iso(), "machine": machine_info(),
                           "workers": workers, "namespaces": namespaces, "real_refreshes": real}
    app = queue_app(cfg)
    opened = False
    try:
        store.setup()
        spaces = [(f"w-{i:04d}",) for i in range(namespaces)]
        sample = to_turns(load_sample()[0])
        for i, ns in enumerate(spaces):
            store.add(ns, sample if i < real else
                      [{"text": f"I keep a notebook numbered {i}.", "speaker": "Ola"}])
        ensure_queue_schema(app, store)
        app.open()
        opened = True
        first = start("w0")
        jobs = {ns: enqueue_refresh(app, ns, new_memories=len(sample) if i < real else 1)
                for i, ns in enumerate(spaces[:1])}
        killed_job = jobs[spaces[0]]
        _wait(lambda: app.job_manager.list_jobs(id=killed_job)[0].status == "doing", 300,
              "the first worker to take a real refresh")
        time.sleep(kill_after_s)
        first.send_signal(signal.SIGKILL)
        first.wait(30)
        t_kill = time.monotonic()
        say(f"killed worker w0 {kill_after_s:g} s into job {killed_job}")
        for i, ns in enumerate(spaces[1:], start=1):
            jobs[ns] = enqueue_refresh(app, ns, new_memories=len(sample) if i < real else 1)
        for k in range(1, workers + 1):
            start(f"w{k}")
        recovered = _wait(
            lambda: app.job_manager.list_jobs(id=killed_job)[0].status == "succeeded"
            and time.monotonic(), timeout_s, "the killed job to succeed")
        out["recovered_after_kill_s"] = round(recovered - t_kill, 1)
        try:
            _wait(lambda: queue_stats(app).get("succeeded", 0) + queue_stats(app).get(
                "failed", 0) >= len(jobs), timeout_s, "the queue to drain")
        except TimeoutError as exc:
            out["error"] = str(exc)
        stats = queue_stats(app)
        registry = AdapterRegistry(store)
        versions = {ns: len(registry.list(ns)) for ns in spaces[:real]}
        out.update(jobs=len(jobs), completed=int(stats.get("succeeded", 0)),
                   failed=int(stats.get("failed", 0)),
                   double_runs=sum(1 for v in versions.values() if v > 1),
                   lost_jobs=len(jobs) - int(stats.get("succeeded", 0)),
                   published=sum(1 for ns in spaces[:real] if registry.current(ns)),
                   killed_job_attempts=app.job_manager.list_jobs(id=killed_job)[0].attempts,
                   queue=stats)
        say(f"{out['completed']}/{out['jobs']} jobs done, {out['double_runs']} double runs, "
            f"recovered {out['recovered_after_kill_s']} s after the kill")
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
        if opened:
            app.close()
        try:
            store.drop_schema()
            store.drop_job_queue(app.ragtune_schema)  # the queue's schema goes too
        finally:
            store.close()
            if not log_dir:
                shutil.rmtree(home, ignore_errors=True)
    out["targets"] = {"double_runs == 0": out.get("double_runs") == 0,
                      "lost_jobs == 0": out.get("lost_jobs") == 0,
                      "killed job run again": out.get("recovered_after_kill_s") is not None}
    return finish(out, started, json_out)
