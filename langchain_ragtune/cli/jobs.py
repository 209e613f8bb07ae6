"""``ragtune refresh | scheduler``: keep namespaces' adapters up to date.

Light at import: the handlers load the store, models and APScheduler when they run.

Example:
    $ ragtune refresh --namespace conv-26 --json
    $ ragtune scheduler start --interval 3600 --min-new 20
"""

from __future__ import annotations

import argparse
import sys
import threading
from typing import Any

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


def _scheduler(args: argparse.Namespace, store: Any, **kw: Any) -> Any:
    from langchain_ragtune.jobs.scheduler import RefreshScheduler

    return RefreshScheduler(store, interval_s=args.interval, cron=args.cron,
                            min_new=args.min_new,
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
