"""``ragtune add | ingest | search | forget | namespaces``: the store's CLI.

Example:
    $ ragtune add "I moved to Lisbon in May" --namespace user-42 --speaker Ana --at 2023-05-08
    $ ragtune ingest locomo --conversation conv-26 --namespace conv-26
    $ ragtune search "where did Ana move?" --namespace user-42 --k 3 --json
    $ ragtune forget --namespace user-42
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from langchain_ragtune.cli._common import (add_json_flag, add_namespace_arg, open_store,
                                           parse_namespace, print_json)


__all__ = ["register"]


def _progress(total: int, desc: str, quiet: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="turn", disable=quiet, file=sys.stderr)


def cmd_add(args: argparse.Namespace) -> int:
    from langchain_ragtune.store import Turn

    ns = parse_namespace(args.namespace)
    turn = Turn(text=args.text, speaker=args.speaker, occurred_at=args.at, thread_id=args.thread,
                message_id=args.id, role=args.role)
    with open_store() as store:
        t0 = time.perf_counter()
        (mid,) = store.add(ns, [turn])
        ack_ms = (time.perf_counter() - t0) * 1000
        store.flush()
        memory = store.get(ns, mid)
    out = {"id": mid, "namespace": list(ns), "seq": memory.seq, "ack_ms": round(ack_ms, 2),
           "timestamp": memory.occurred_at.isoformat()}
    if args.json:
        print_json(out)
    else:
        print(f"remembered {mid} in {'/'.join(ns)} (seq {memory.seq}, acknowledged in {ack_ms:.1f} ms)")
    return 0


def cmd_ingest_locomo(args: argparse.Namespace) -> int:
    from langchain_ragtune.eval.locomo import load_locomo, load_sample, select_conversations, to_turns

    convs = load_sample() if args.sample else load_locomo(args.data)
    convs = select_conversations(convs, args.conversation or [])
    results = []
    with open_store() as store:
        for conv in convs:
            ns = parse_namespace(args.namespace) if args.namespace and len(convs) == 1 \
                else parse_namespace(f"{args.namespace}/{conv.sample_id}" if args.namespace
                                     else conv.sample_id)
            turns = to_turns(conv)
            t0 = time.perf_counter()
            with _progress(len(turns), f"ingest {conv.sample_id}", args.json) as bar:
                for i in range(0, len(turns), 64):
                    store.add(ns, turns[i:i + 64])
                    bar.update(len(turns[i:i + 64]))
            with _progress(len(turns), f"embed {conv.sample_id}", args.json) as bar:
                while n := store.embed_pending():
                    bar.update(n)
            results.append({"conversation": conv.sample_id, "namespace": list(ns),
                            "turns": len(turns), "memories": store.count(ns),
                            "seconds": round(time.perf_counter() - t0, 2)})
    if args.json:
        print_json(results)
    else:
        for r in results:
            print(f"{r['conversation']}: {r['turns']} turns -> namespace {'/'.join(r['namespace'])} "
                  f"({r['memories']} memories, {r['seconds']} s)")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    ns = parse_namespace(args.namespace)
    with open_store() as store:
        t0 = time.perf_counter()
        hits = store.search(ns, args.query, k=args.k, mode=args.mode, window=args.window)
        ms = (time.perf_counter() - t0) * 1000
    if args.json:
        print_json([h.as_dict() for h in hits])
        return 0
    if not hits:
        print(f"no memories in {'/'.join(ns)} match {args.query!r}")
    for i, h in enumerate(hits, 1):
        m = h.memory
        print(f"{i:>2}. [{h.score:.4f}] {m.occurred_at:%Y-%m-%d %H:%M} {m.speaker or m.role}: {m.text}")
    print(f"({len(hits)} results in {ms:.1f} ms)", file=sys.stderr)
    return 0


def cmd_forget(args: argparse.Namespace) -> int:
    ns = parse_namespace(args.namespace)
    if not args.yes and sys.stdin.isatty():
        answer = input(f"Forget every memory, dataset and adapter of {'/'.join(ns)}? [y/N] ")
        if answer.strip().lower() not in {"y", "yes"}:
            print("nothing forgotten")
            return 1
    with open_store() as store:
        out = store.forget(ns)
    # Adapters on disk and loaded in vLLM go too.
    if out["adapters"]:
        from langchain_ragtune.jobs.forget import forget_adapters

        out["adapters_removed"] = forget_adapters(ns, out["adapters"])
    if args.json:
        print_json({"namespace": list(ns), **out})
    else:
        print(f"forgot {'/'.join(ns)}: {out['memories']} memories, {out['datasets']} datasets, "
              f"{len(out['adapters'])} adapters")
    return 0


def cmd_namespaces(args: argparse.Namespace) -> int:
    with open_store() as store:
        rows = store.list_namespaces(limit=args.limit)
    if args.json:
        print_json([{"namespace": list(ns), "memories": n} for ns, n in rows])
    else:
        for ns, n in rows:
            print(f"{'/'.join(ns)}\t{n}")
    return 0


def register(sub: Any) -> None:
    """Add the store's subcommands to the ``ragtune`` parser."""
    p = sub.add_parser("add", help="remember one text in a namespace")
    p.add_argument("text")
    add_namespace_arg(p)
    p.add_argument("--speaker")
    p.add_argument("--role", default="human", choices=["human", "ai", "system", "note"])
    p.add_argument("--at", help="when it was said (ISO-8601 date or time)")
    p.add_argument("--thread", help="conversation/thread id")
    p.add_argument("--id", help="message id (writes are idempotent on it)")
    add_json_flag(p)
    p.set_defaults(handler=cmd_add)

    p = sub.add_parser("ingest", help="load a conversation dataset into the store")
    isub = p.add_subparsers(dest="source", metavar="SOURCE", required=True)
    q = isub.add_parser("locomo", help="LoCoMo-format JSON (one namespace per conversation)")
    q.add_argument("--conversation", "-c", action="append",
                   help="sample_id to ingest (repeatable; default all)")
    q.add_argument("--namespace", "-n", help="namespace (default: the conversation id)")
    q.add_argument("--data", help="path of a LoCoMo-format file (default "
                   "$RAGTUNE_LOCOMO_PATH, else ../shared/data/locomo/locomo10.json)")
    q.add_argument("--sample", action="store_true", help="use the small shipped conversation")
    add_json_flag(q)
    q.set_defaults(handler=cmd_ingest_locomo)

    p = sub.add_parser("search", help="hybrid search in a namespace")
    p.add_argument("query")
    add_namespace_arg(p)
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--mode", default="hybrid", choices=["hybrid", "vector", "keyword"])
    p.add_argument("--window", type=int, default=0, help="turns of context around each hit")
    add_json_flag(p)
    p.set_defaults(handler=cmd_search)

    p = sub.add_parser("forget", help="hard-delete a namespace: memories, datasets, adapters")
    add_namespace_arg(p)
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    add_json_flag(p)
    p.set_defaults(handler=cmd_forget)

    p = sub.add_parser("namespaces", help="list namespaces and their sizes")
    p.add_argument("--limit", type=int, default=100)
    add_json_flag(p)
    p.set_defaults(handler=cmd_namespaces)
