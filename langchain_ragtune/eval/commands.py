"""``ragtune eval`` and ``ragtune bench``: measure the memory, write JSON, reports and plots.

Light at import: the store, models and plotting load inside the handlers.

Example:
    $ ragtune eval locomo --mode retrieval --k 10 --window 1 --json results/locomo.json
    $ ragtune eval locomo --sample --k 5 --json -          # the shipped sample, JSON on stdout
    $ ragtune bench all --json results/bench.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from langchain_ragtune.errors import InvalidInputError

__all__ = ["register"]

#: Modes ``ragtune eval locomo`` knows; only those in ``_BUILT`` run today (issue 6 adds the rest).
EVAL_MODES = ("none", "full-context", "retrieval", "parametric", "hybrid", "routed")
_BUILT = ("retrieval",)


def register(subparsers: Any) -> None:
    """Add ``eval`` and ``bench`` to the ``ragtune`` command."""
    ev = subparsers.add_parser("eval", help="evaluate memory modes on LoCoMo-format data")
    ev_sub = ev.add_subparsers(dest="eval_command", metavar="DATASET")
    loc = ev_sub.add_parser(
        "locomo", help="LoCoMo: evidence recall@k (retrieval), answer F1 (other modes)",
        description="Ingest each LoCoMo conversation into its own namespace and answer its "
                    "questions in each mode; report recall@k per category (overall = "
                    "categories 1, 2, 4), latency p50/p95, and per-question records.")
    loc.add_argument("--mode", default="retrieval",
                     help=f"comma-separated modes among {', '.join(EVAL_MODES)} "
                          "(default: retrieval)")
    loc.add_argument("--k", type=int, default=10, help="results per search (default 10)")
    loc.add_argument("--window", type=int, default=0,
                     help="turns of context on each side of a hit (default 0)")
    loc.add_argument("--search-mode", default="hybrid", choices=("hybrid", "vector", "keyword"))
    src = loc.add_mutually_exclusive_group()
    src.add_argument("--data", metavar="PATH",
                     help="a LoCoMo-format JSON file (default ../shared/data/locomo/"
                          "locomo10.json or $RAGTUNE_LOCOMO_PATH)")
    src.add_argument("--sample", action="store_true",
                     help="use the small synthetic conversation shipped with the package")
    loc.add_argument("--conversations", metavar="IDS", help="comma-separated sample ids")
    loc.add_argument("--categories", metavar="CATS", help="comma-separated categories 1-5")
    loc.add_argument("--max-questions", type=int, metavar="N",
                     help="only the first N questions of each conversation")
    loc.add_argument("--json", metavar="FILE", dest="json_out",
                     help="write the results JSON here ('-' for stdout)")
    loc.add_argument("--records", metavar="FILE",
                     help="per-question JSON lines (default: next to --json, *.questions.jsonl)")
    loc.add_argument("--resume", action="store_true",
                     help="continue a stopped run from its --records file")
    loc.add_argument("--report", metavar="DIR", help="write a Markdown report and PNG plots")
    loc.add_argument("--reuse-ingest", action="store_true",
                     help="skip ingesting conversations whose namespace already holds all their "
                          "turns (fast sweeps over --k/--window; stale if the store's "
                          "embedding changed since)")
    loc.add_argument("--schema", default="ragtune_eval",
                     help="PostgreSQL schema for evaluation data, kept apart from real "
                          "memories (default ragtune_eval)")
    loc.add_argument("--namespace-prefix", default="locomo-eval",
                     help="first namespace label; each conversation gets (prefix, sample_id)")
    loc.add_argument("--no-questions", action="store_true",
                     help="leave per-question records out of the JSON (they stay in --records)")
    loc.add_argument("--no-progress", action="store_true", help="no progress bars")
    loc.set_defaults(handler=_eval_locomo)
    ev.set_defaults(handler=lambda args: (ev.print_help(), 2)[1])

    rep = ev_sub.add_parser("report", help="Markdown report and plots from a results JSON")
    rep.add_argument("results", nargs="+", help="results JSON file(s) of `ragtune eval`")
    rep.add_argument("--report", metavar="DIR", required=True, help="output folder")
    rep.set_defaults(handler=_eval_report)

    _register_bench(subparsers)


# -- ragtune eval locomo ---------------------------------------------------------------------

def _csv(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def _parse_modes(value: str) -> list[str]:
    modes = _csv(value) or ["retrieval"]
    unknown = [m for m in modes if m not in EVAL_MODES]
    if unknown:
        raise InvalidInputError(f"unknown mode(s) {unknown}; choose among {', '.join(EVAL_MODES)}.")
    missing = [m for m in modes if m not in _BUILT]
    if missing:
        raise InvalidInputError(
            f"mode(s) {missing} are not available yet (issue 6 adds them); "
            f"available now: {', '.join(_BUILT)}.")
    return modes


def _parse_categories(value: str | None) -> list[int] | None:
    if not value:
        return None
    try:
        cats = sorted({int(c) for c in _csv(value)})
    except ValueError:
        raise InvalidInputError(
            f"--categories {value!r} must be numbers 1-5, e.g. 1,2,4.") from None
    if not cats or any(c not in range(1, 6) for c in cats):
        raise InvalidInputError(f"--categories {value!r} must be numbers 1-5, e.g. 1,2,4.")
    return cats


def _write_json(obj: Any, target: str) -> None:
    if target == "-":
        json.dump(obj, sys.stdout, indent=2, default=str, ensure_ascii=False)
        sys.stdout.write("\n")
        return
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str, ensure_ascii=False) + "\n",
                   encoding="utf-8")
    tmp.replace(path)


def _fmt(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def summary_lines(result: dict[str, Any]) -> list[str]:
    """A short human-readable summary of a results JSON (what the command prints)."""
    meta = result.get("metadata", {})
    lines = [f"LoCoMo: {meta.get('n_questions', '?')} questions, "
             f"{len(meta.get('conversations', []))} conversation(s), k={meta.get('k')}, "
             f"window={meta.get('window')}, embeddings={meta.get('embedding_model')}"]
    for name, entry in result.get("modes", {}).items():
        for key, label in (("recall_at_k", f"recall@{meta.get('k')}"), ("f1", "F1")):
            if key in entry:
                vals = entry[key]
                cats = " ".join(f"{c}={_fmt(vals.get(c))}" for c in ("1", "2", "3", "4", "5")
                                if c in vals)
                lines.append(f"  {name:<10} {label:<10} overall(1,2,4)={_fmt(vals['overall'])} "
                             f"all={_fmt(vals['all'])}  {cats}")
        lat = entry.get("latency_ms", {})
        lines.append(f"  {name:<10} latency    p50={_fmt(lat.get('p50'), 1)} ms "
                     f"p95={_fmt(lat.get('p95'), 1)} ms")
        ex = entry.get("excluded")
        if ex:
            lines.append(f"  {name:<10} excluded   {ex['no_evidence']} without evidence, "
                         f"{ex['unmatched_evidence_only']} with only unmatched evidence "
                         f"({ex['unmatched_evidence_ids']} unmatched ids ignored)")
    return lines


def _eval_locomo(args: argparse.Namespace) -> int:
    from langchain_ragtune.eval.locomo import (
        SAMPLE_PATH,
        find_locomo_path,
        load_locomo,
        select_conversations,
    )
    from langchain_ragtune.eval.retrieval_eval import file_sha256, run_retrieval_eval

    _parse_modes(args.mode)
    categories = _parse_categories(args.categories)
    if args.k <= 0 or args.window < 0:
        raise InvalidInputError(f"--k {args.k} must be >= 1 and --window {args.window} >= 0.")
    path = SAMPLE_PATH if args.sample else find_locomo_path(args.data)
    conversations = select_conversations(load_locomo(path), _csv(args.conversations))
    records = args.records
    if records is None and args.json_out and args.json_out != "-":
        out = Path(args.json_out)
        records = str(out.with_name(out.stem + ".questions.jsonl"))
    if args.resume and not records:
        raise InvalidInputError(
            "--resume needs a records file: pass --records FILE or --json FILE.")

    from langchain_ragtune.store import MemoryStore

    with MemoryStore.from_env(schema=args.schema) as store:
        store.setup()
        result = run_retrieval_eval(
            store, conversations, k=args.k, window=args.window, search_mode=args.search_mode,
            categories=categories, namespace_prefix=(args.namespace_prefix,),
            reuse=args.reuse_ingest,
            records_path=records, resume=args.resume, progress=not args.no_progress,
            max_questions=args.max_questions,
            data={"path": str(path), "sha256": file_sha256(path),
                  "sample": bool(args.sample)},
            include_questions=not args.no_questions)
    result["metadata"]["options"] = {key: value for key, value in vars(args).items()
                                     if key != "handler" and not callable(value)}
    if args.json_out:
        _write_json(result, args.json_out)
    if args.report:
        from langchain_ragtune.eval.report import write_report

        write_report([result], args.report)
    if args.json_out != "-":
        print("\n".join(summary_lines(result)))
        if args.json_out:
            print(f"results: {args.json_out}" + (f"  records: {records}" if records else ""))
        if args.report:
            print(f"report: {Path(args.report) / 'report.md'}")
    return 0


def _eval_report(args: argparse.Namespace) -> int:
    from langchain_ragtune.eval.report import load_results, write_report

    path = write_report([load_results(p) for p in args.results], args.report)
    print(f"report: {path}")
    return 0


# -- ragtune bench ---------------------------------------------------------------------------

def _register_bench(subparsers: Any) -> None:
    from langchain_ragtune.eval.bench import BENCHES  # light: the benches load when run

    bench = subparsers.add_parser(
        "bench", help=f"benchmarks: {', '.join(BENCHES)}, or all",
        description="Run one benchmark, or all available ones with a Markdown summary table. "
                    "Benchmarks are heavy: on a shared machine run them under "
                    "`flock /tmp/ragtune-heavy.lock`. Options a benchmark does not take are "
                    "ignored by it.")
    bench.add_argument("which", choices=(*BENCHES, "all"))
    bench.add_argument("--json", metavar="FILE", dest="json_out",
                       help="write the result JSON here ('-' for stdout)")
    bench.add_argument("--md", metavar="FILE",
                       help="write the Markdown summary table here (default for `all`: next "
                            "to --json, *.md)")
    bench.add_argument("--memories", type=int, help="retrieval: memories stored (100000)")
    bench.add_argument("--queries", type=int, help="retrieval/router: queries (1000)")
    bench.add_argument("--k", type=int, help="results per search (10)")
    bench.add_argument("--turns", type=int, help="ingest: turns written (2000)")
    bench.add_argument("--data", metavar="PATH", help="ingest: a LoCoMo-format file")
    bench.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="any other keyword argument of the benchmark function (repeatable)")
    bench.add_argument("--quick", action="store_true",
                       help="`all`: small sizes, a smoke run of every benchmark")
    bench.add_argument("--quiet", action="store_true", help="no progress bars")
    bench.set_defaults(handler=_bench)


def _value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


def bench_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments ``ragtune bench`` passes to the benchmark functions."""
    opts: dict[str, Any] = {"memories": args.memories, "queries": args.queries, "k": args.k,
                            "turns": args.turns, "data": args.data,
                            "quiet": True if args.quiet else None}
    for item in args.set:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise InvalidInputError(f"--set {item!r} must look like KEY=VALUE, e.g. ef_search=64.")
        opts[key.strip()] = _value(raw.strip())
    return {k: v for k, v in opts.items() if v is not None}


def _bench(args: argparse.Namespace) -> int:
    from langchain_ragtune.eval.bench import run_all, run_bench, summary_table

    opts = bench_options(args)
    if args.which == "all":
        def done(name: str, result: dict[str, Any]) -> None:
            state = "skipped" if "skipped" in result else "error" if "error" in result else "done"
            print(f"bench {name}: {state}", file=sys.stderr)

        result = run_all(opts, quick=args.quick, on_done=done)
    else:
        result = {"date": None, "benches": {args.which: run_bench(args.which, opts)}}
    table = summary_table(result)
    single = result["benches"].get(args.which) if args.which != "all" else None
    if args.json_out:
        _write_json(single if single is not None else result, args.json_out)
    md = args.md
    if md is None and args.which == "all" and args.json_out and args.json_out != "-":
        md = str(Path(args.json_out).with_suffix(".md"))
    if md:
        Path(md).parent.mkdir(parents=True, exist_ok=True)
        Path(md).write_text(f"# ragtune bench {args.which}\n\n{table}\n", encoding="utf-8")
    if args.json_out != "-":
        print(table)
    errors = [n for n, r in result["benches"].items() if "error" in r]
    return 1 if errors else 0
