"""``ragtune refresh | scheduler``: keep namespaces' adapters up to date.

Light at import: the handlers load the store, models and APScheduler when they run.

Example:
    $ ragtune refresh --namespace conv-26 --json
    $ ragtune scheduler start --interval 3600 --min-new 20
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
from typing import Any, Iterator

from langchain_ragtune.cli._common import (add_json_flag, add_namespace_arg, add_quiet_flag,
                                           add_teacher_arg, add_training_args, open_store,
                                           parse_namespace, print_json, stop_event_on_signals)

__all__ = ["register"]

#: Exit codes of ``ragtune refresh``: 0 done (published/ready/up_to_date/nothing_to_learn/
#: too_small), 1 failed or rejected, 3 busy (another refresh holds the namespace).
EXIT_BUSY = 3


def register(subparsers: Any) -> None:
    """Add ``refresh`` and ``scheduler``."""
    p = subparsers.add_parser(
        "refresh", help="distill -> train -> validate -> publish a namespace's adapter",
        description="Bring a namespace's LoRA adapter up to date with its memories. Does "
                    "nothing when nothing is new; one refresh per namespace at a time.")
    add_namespace_arg(p)
    add_teacher_arg(p)
    add_training_args(p)
    p.add_argument("--max-examples", type=int, help="cap the training examples")
    p.add_argument("--force", action="store_true", help="run even when nothing is new")
    p.add_argument("--no-handover", action="store_true",
                   help="register the new version as ready without switching serving")
    add_quiet_flag(p)
    add_json_flag(p)
    p.set_defaults(handler=_refresh)

    s = subparsers.add_parser("scheduler", help="refresh namespaces on a schedule")
    ssub = s.add_subparsers(dest="scheduler_command", metavar="ACTION")
    start = ssub.add_parser("start", help="run the scheduler until SIGINT/SIGTERM")
    _schedule_args(start)
    start.add_argument("--memory-jobstore", action="store_true",
                       help="keep the job in memory instead of PostgreSQL")
    start.set_defaults(handler=_scheduler_start)
    once = ssub.add_parser("run-once", help="one sweep now: refresh every due namespace")
    _schedule_args(once)
    add_json_flag(once)
    once.set_defaults(handler=_scheduler_once)
    for sp in (start, once):
        sp.add_argument("--queue", action="store_true",
                        help="only enqueue due namespaces; `ragtune worker` processes refresh")
        sp.add_argument("--min-interval", type=float, default=0.0,
                        help="seconds a namespace waits after its last adapter switch")
    w = subparsers.add_parser(
        "worker", help="run refresh jobs from the queue (any number, on any hosts)",
        description="Take refresh jobs from the PostgreSQL job queue until SIGINT/SIGTERM. "
                    "One namespace never refreshes twice at once; jobs of a worker that "
                    "died go back to the queue.")
    w.add_argument("--concurrency", type=int, default=1, help="jobs at once (default 1)")
    w.add_argument("--name", help="worker name in logs and the queue's tables")
    w.add_argument("--heartbeat", type=float, default=5.0, help="seconds between heartbeats")
    w.add_argument("--stalled-after", type=float, default=20.0,
                   help="seconds without a heartbeat before a worker's jobs are re-queued")
    w.add_argument("--burst", action="store_true", help="stop when the queue is empty")
    w.set_defaults(handler=_worker)
    q = subparsers.add_parser("queue", help="the refresh job queue: enqueue, stats")
    qsub = q.add_subparsers(dest="queue_command", metavar="ACTION")
    enq = qsub.add_parser("enqueue", help="queue a refresh of a namespace")
    add_namespace_arg(enq)
    enq.add_argument("--force", action="store_true", help="run even when nothing is new")
    add_json_flag(enq)
    enq.set_defaults(handler=_queue_enqueue)
    qst = qsub.add_parser("stats", help="jobs by status")
    add_json_flag(qst)
    qst.set_defaults(handler=_queue_stats)
    q.set_defaults(handler=lambda args: (q.print_help(), 2)[1])
    due = ssub.add_parser("due", help="list namespaces with enough new memories")
    due.add_argument("--min-new", type=int, default=1)
    add_json_flag(due)
    due.set_defaults(handler=_scheduler_due)
    s.set_defaults(handler=lambda args: (s.print_help(), 2)[1])


def _schedule_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--interval", type=float, default=3600.0, help="seconds between sweeps")
    p.add_argument("--cron", help="crontab expression instead of --interval, e.g. '0 3 * * *'")
    p.add_argument("--min-new", type=int, default=1,
                   help="refresh a namespace once it has this many new memories")
    p.add_argument("--namespace", action="append", default=[],
                   help="only these namespaces (repeatable; default all)")
    add_teacher_arg(p)


def _options(args: argparse.Namespace) -> dict[str, Any]:
    from langchain_ragtune.distill.pipeline import DistillConfig

    opts: dict[str, Any] = {}
    if getattr(args, "teacher", None) is not None:
        opts["distill_config"] = DistillConfig.from_env(teacher=args.teacher)
    return opts


def _refresh(args: argparse.Namespace) -> int:
    from langchain_ragtune.config import ModelConfig
    from langchain_ragtune.distill.pipeline import DistillConfig
    from langchain_ragtune.jobs.refresh import refresh
    from langchain_ragtune.tuning.canaries import describe_canaries
    from langchain_ragtune.tuning.gate import describe_knowledge
    from langchain_ragtune.tuning.train import TrainConfig

    quiet = args.quiet or args.json
    dist = {k: v for k, v in {"teacher": args.teacher,
                              "max_examples": args.max_examples}.items() if v is not None}
    model_config = ModelConfig.from_env()
    train = {k: v for k, v in {"epochs": args.epochs, "max_steps": args.max_steps}.items()
             if v is not None}
    store = open_store()
    try:
        result = refresh(parse_namespace(args.namespace), store=store,
                         distill_config=DistillConfig.from_env(**dist),
                         train_config=TrainConfig.from_env(torch_threads=model_config.torch_threads,
                                                           progress=not quiet, **train),
                         model_config=model_config, mode=args.mode, force=args.force,
                         publish=None if args.no_handover else ..., progress=not quiet)
    finally:
        store.close()
    if args.json:
        print_json(result.as_dict())
    else:
        print(f"{'/'.join(result.namespace)}: {result.status}"
              + (f" {result.adapter_name} (v{result.version})" if result.adapter_name else "")
              + (f" - {result.reason}" if result.reason else ""))
        if result.examples:
            print("  examples: " + ", ".join(f"{k} {v}" for k, v in result.examples.items()))
        if result.metrics:
            m = result.metrics
            print(f"  closed-book {m.get('closed_book_before')} -> {m.get('closed_book_after')}, "
                  f"canaries {m.get('canary_before')} -> {m.get('canary_after')} "
                  f"({describe_canaries(m)}), "
                  f"train {m.get('train_seconds')} s")
            print(f"  {describe_knowledge(m)}")
        if result.seconds:
            print("  seconds: " + ", ".join(f"{k} {v}" for k, v in result.seconds.items()))
    if result.status == "busy":
        return EXIT_BUSY
    return 0 if result.ok else 1


def _opened_queue(store: Any) -> Any:
    from langchain_ragtune.jobs.queue import ensure_queue_schema, queue_app

    app = queue_app(store.config)
    ensure_queue_schema(app, store)
    app.open()
    return app


def _scheduler(args: argparse.Namespace, store: Any, **kw: Any) -> Any:
    from langchain_ragtune.jobs.scheduler import RefreshScheduler

    if getattr(args, "queue", False):
        kw["queue"] = _opened_queue(store)
    return RefreshScheduler(store, interval_s=args.interval, cron=args.cron,
                            min_new=args.min_new, min_interval_s=args.min_interval,
                            namespaces=[parse_namespace(n) for n in args.namespace] or None,
                            refresh_options={**_options(args), "progress": False}, **kw)


def _scheduler_start(args: argparse.Namespace) -> int:
    from langchain_ragtune.jobs.scheduler import run_forever

    store = open_store()
    try:
        sched = _scheduler(args, store, persistent=not args.memory_jobstore)
        when = f"cron {args.cron}" if args.cron else f"every {args.interval:g} s"
        print(f"ragtune scheduler: started ({when}, "
              f"min_new={args.min_new}); Ctrl-C or SIGTERM stops it", file=sys.stderr, flush=True)
        with stop_event_on_signals(threading.Event()) as stop:
            run_forever(sched, stop_event=stop)
        print(f"ragtune scheduler: stopped after {len(sched.history)} refreshes", file=sys.stderr)
    finally:
        store.close()
    return 0


def _scheduler_once(args: argparse.Namespace) -> int:

    store = open_store()
    try:
        results = _scheduler(args, store, persistent=False).run_once()
    finally:
        store.close()
    if args.json:
        print_json([r.as_dict() for r in results])
    else:
        for r in results:
            print(f"{'/'.join(r.namespace)}: {r.status} {r.adapter_name or ''} {r.reason or ''}")
    return 0 if all(r.ok for r in results) else 1


def _scheduler_due(args: argparse.Namespace) -> int:
    from langchain_ragtune.jobs.scheduler import pending_namespaces

    store = open_store()
    try:
        rows = pending_namespaces(store, min_new=args.min_new)
    finally:
        store.close()
    if args.json:
        print_json([{"namespace": list(ns), "new": n} for ns, n in rows])
    else:
        for ns, n in rows:
            print(f"{'/'.join(ns)}\t{n} new")
    return 0


def _worker(args: argparse.Namespace) -> int:
    from langchain_ragtune.jobs.queue import run_worker

    print(f"ragtune worker: taking refresh jobs (concurrency {args.concurrency}); Ctrl-C or "
          "SIGTERM stops it after the running job", file=sys.stderr, flush=True)
    run_worker(concurrency=args.concurrency, name=args.name, heartbeat_s=args.heartbeat,
               stalled_after_s=args.stalled_after, wait=not args.burst)
    return 0


@contextlib.contextmanager
def _queue_session() -> Iterator[Any]:
    """The store and its opened job queue for one command, both closed afterwards."""
    store = open_store()
    try:
        app = _opened_queue(store)
        try:
            yield app
        finally:
            app.close()
    finally:
        store.close()


def _queue_enqueue(args: argparse.Namespace) -> int:
    from langchain_ragtune.jobs.queue import enqueue_refresh

    with _queue_session() as app:
        job = enqueue_refresh(app, parse_namespace(args.namespace), force=args.force)
    out = {"namespace": list(parse_namespace(args.namespace)), "job_id": job,
           "status": "queued" if job is not None else "already_waiting"}
    if args.json:
        print_json(out)
    else:
        print(f"{'/'.join(out['namespace'])}: {out['status']}"
              + (f" (job {job})" if job is not None else ""))
    return 0


def _queue_stats(args: argparse.Namespace) -> int:
    from langchain_ragtune.jobs.queue import queue_stats

    with _queue_session() as app:
        stats = queue_stats(app)
    if args.json:
        print_json(stats)
    else:
        print(", ".join(f"{k} {v}" for k, v in stats.items()) or "no jobs yet")
    return 0
