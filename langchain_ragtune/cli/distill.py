"""``ragtune distill``: a namespace's new history -> its next training dataset.

Light at import: the handler loads the store (and the teacher model) only when it runs.

Example:
    $ ragtune distill --namespace conv-26 --teacher none --jsonl /tmp/conv-26.jsonl
    $ ragtune distill --dataset 7 --jsonl /tmp/d7.jsonl          # export a stored dataset
"""

from __future__ import annotations

import argparse
from typing import Any

from langchain_ragtune.cli._common import (add_json_flag, add_namespace_arg, add_quiet_flag,
                                           add_teacher_arg, open_store, parse_namespace, print_json)

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add ``ragtune distill``."""
    p = subparsers.add_parser(
        "distill", help="turn a namespace's new history into its next training dataset",
        description="Distill the live memories newer than the current adapter's watermark "
                    "(plus a replay sample of older ones) into chat examples: local, global, "
                    "broader and digest questions (RAG-Tuned-LLM recipe), stored as the "
                    "namespace's next dataset version in PostgreSQL.")
    add_namespace_arg(p, required=False)
    add_teacher_arg(p)
    p.add_argument("--after-seq", type=int, help="treat memories after this seq as new "
                                                 "(default: the current adapter's watermark)")
    p.add_argument("--all", action="store_true", help="distill the whole history (--after-seq 0)")
    p.add_argument("--max-examples", type=int, help="cap the training examples (stratified)")
    p.add_argument("--teacher-max-chunks", type=int, help="chunks sent to the teacher")
    p.add_argument("--dataset", type=int, help="export this stored dataset instead of distilling")
    p.add_argument("--jsonl", metavar="PATH", help="also write the examples as JSON lines")
    p.add_argument("--dry-run", action="store_true", help="do not store the dataset")
    add_quiet_flag(p)
    add_json_flag(p)
    p.set_defaults(handler=_distill)


def _distill(args: argparse.Namespace) -> int:
    from langchain_ragtune.distill.dataset import export_jsonl, get_dataset, load_examples
    from langchain_ragtune.distill.pipeline import DistillConfig, distill
    from langchain_ragtune.errors import DatasetError, InvalidInputError

    store = open_store()
    try:
        if args.dataset is not None:
            ds = get_dataset(store, args.dataset)
            if ds is None:
                raise DatasetError(f"no dataset with id {args.dataset}.")
            examples = load_examples(store, ds.id)
            n = export_jsonl(examples, args.jsonl) if args.jsonl else 0
            out = {"dataset_id": ds.id, "namespace": list(ds.namespace), "version": ds.version,
                   "examples": len(examples), "jsonl": args.jsonl, "written": n}
            print_json(out) if args.json else print(
                f"dataset {ds.id} ({'/'.join(ds.namespace)} v{ds.version}): {len(examples)} "
                f"examples" + (f" -> {args.jsonl}" if args.jsonl else ""))
            return 0
        if not args.namespace:
            raise InvalidInputError("--namespace is required (or --dataset ID to export one).")
        overrides: dict[str, Any] = {}
        if args.teacher is not None:
            overrides["teacher"] = args.teacher
        if args.max_examples is not None:
            overrides["max_examples"] = args.max_examples
        if args.teacher_max_chunks is not None:
            overrides["teacher_max_chunks"] = args.teacher_max_chunks
        config = DistillConfig.from_env(**overrides)
        after = 0 if args.all else args.after_seq
        result = distill(parse_namespace(args.namespace), store=store, config=config,
                         after_seq=after, save=not args.dry_run,
                         progress=not (args.quiet or args.json))
        if args.jsonl:
            export_jsonl(result.examples, args.jsonl)
        stats = dict(result.stats)
        out = {"namespace": parse_namespace(args.namespace),
               "dataset_id": result.dataset.id if result.dataset else None,
               "version": result.dataset.version if result.dataset else None,
               "watermark_seq": result.watermark_seq, **stats}
        if args.json:
            print_json(out)
        else:
            for line in summary_lines(out):
                print(line)
        return 0
    finally:
        store.close()


def summary_lines(out: dict[str, Any]) -> list[str]:
    """A human summary of a distillation report."""
    inp = out.get("input", {})
    lines = [f"dataset {out.get('dataset_id')} (version {out.get('version')}) of "
             f"{'/'.join(out['namespace'])}: {out.get('train', 0)} train + "
             f"{out.get('heldout', 0)} held-out examples in {out.get('seconds')} s",
             f"  input: {inp.get('new', inp.get('memories'))} new + "
             f"{inp.get('replay', 0)} replayed "
             f"memories, {inp.get('chunks')} chunks, {inp.get('entities')} entities, "
             f"{inp.get('topics')} topics",
             "  examples: " + ", ".join(f"{k} {v}" for k, v in out.get("examples", {}).items()),
             f"  rejected ({out.get('rejection_rate', 0):.1%}): "
             + (", ".join(f"{k} {v}" for k, v in out.get("rejected", {}).items()) or "none")]
    t = out.get("teacher") or {}
    if t.get("name"):
        lines.append(f"  teacher {t['name']}: {t.get('calls', 0)} calls, {t.get('pairs', 0)} "
                     f"pairs, {t.get('unparsable', 0)} unparsable, {t.get('timeouts', 0)} "
                     f"timeouts, {t.get('errors', 0)} errors")
    for ex in out.get("sample", [])[:4]:
        q, a = ex["messages"][1]["content"], ex["messages"][2]["content"]
        lines.append(f"  [{ex['kind']}] Q: {q}\n           A: {a[:160]}")
    if out.get("canaries"):
        lines.append(f"  canaries: {len(out['canaries'])}")
    return lines
