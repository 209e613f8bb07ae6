"""``ragtune demo``: the main job, on the embedded default.

This first version shows retrieval memory end to end: it ingests one LoCoMo conversation
(or the shipped sample when LoCoMo is absent) into its own namespace and answers a few of
the benchmark's questions by hybrid search, printing where the evidence turn ranked.

Example:
    $ ragtune demo --quick
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from langchain_ragtune.cli import add_json_flag, print_json

__all__ = ["register", "run_retrieval_demo"]


def run_retrieval_demo(*, conversation: str | None = None, data: str | None = None,
                       questions: int = 6, k: int = 5, quiet: bool = False) -> dict[str, Any]:
    """Ingest one conversation and search for a few of its questions; returns a summary."""
    from tqdm import tqdm

    from langchain_ragtune.errors import DatasetError
    from langchain_ragtune.eval.locomo import load_locomo, load_sample, select_conversations, to_turns
    from langchain_ragtune.store.commands import open_store

    try:
        convs = load_locomo(data)
        source = "LoCoMo"
    except DatasetError:
        convs, source = load_sample(), "shipped sample"
    conv = select_conversations(convs, [conversation] if conversation else [])[0]
    ns = ("demo", conv.sample_id)
    rows = []
    with open_store() as store:
        store.forget(ns)
        turns = to_turns(conv)
        t0 = time.perf_counter()
        for i in tqdm(range(0, len(turns), 64), desc=f"remember {conv.sample_id}", disable=quiet,
                      file=sys.stderr, unit="batch"):
            store.add(ns, turns[i:i + 64])
        store.flush()
        ingest_s = time.perf_counter() - t0
        picked = [q for q in conv.qa if q.category in (1, 2, 4) and q.evidence][:questions]
        for q in picked:
            t1 = time.perf_counter()
            hits = store.search(ns, q.question, k=k, window=1)
            ms = (time.perf_counter() - t1) * 1000
            covered = [i for i, h in enumerate(hits, 1) if set(q.evidence) & set(h.message_ids)]
            rows.append({"question": q.question, "expected": q.answer, "category": q.category,
                         "top_hit": hits[0].text if hits else None,
                         "evidence_rank": covered[0] if covered else None,
                         "latency_ms": round(ms, 1)})
    found = sum(r["evidence_rank"] is not None for r in rows)
    return {"source": source, "conversation": conv.sample_id, "namespace": list(ns),
            "turns": len(turns), "ingest_s": round(ingest_s, 2), "k": k,
            "evidence_found": f"{found}/{len(rows)}", "questions": rows}


def cmd_demo(args: argparse.Namespace) -> int:
    out = run_retrieval_demo(conversation=args.conversation, data=args.data,
                             questions=4 if args.quick else 8, quiet=args.json)
    if args.json:
        print_json(out)
        return 0
    print(f"\nRetrieval memory on {out['source']} {out['conversation']}: {out['turns']} turns "
          f"remembered in {out['ingest_s']} s (namespace {'/'.join(out['namespace'])})\n")
    for r in out["questions"]:
        rank = f"evidence at rank {r['evidence_rank']}" if r["evidence_rank"] else "evidence not in top k"
        print(f"Q: {r['question']}\n   expected: {r['expected']}\n   memory:   {r['top_hit']}\n"
              f"   {rank}, {r['latency_ms']} ms\n")
    print(f"evidence found in the top {out['k']} for {out['evidence_found']} questions")
    return 0


def register(sub: Any) -> None:
    """Add ``ragtune demo``."""
    p = sub.add_parser("demo", help="run the main job on the embedded default")
    p.add_argument("--quick", action="store_true", help="a smaller, faster run")
    p.add_argument("--conversation", help="LoCoMo sample_id (default: the first)")
    p.add_argument("--data", help="LoCoMo-format file")
    add_json_flag(p)
    p.set_defaults(handler=cmd_demo)
