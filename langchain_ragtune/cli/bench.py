"""``ragtune bench``: run one benchmark, or all with a Markdown summary table.

Example:
    $ ragtune bench retrieval --memories 10000 --json /tmp/retrieval.json
    $ ragtune bench all --quick --json /tmp/bench.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from langchain_ragtune.bench.registry import BENCHES, run_all, run_bench
from langchain_ragtune.bench.summary import summary_table
from langchain_ragtune.cli._common import write_json
from langchain_ragtune.errors import InvalidInputError

__all__ = ["bench_options", "register"]


def register(subparsers: Any) -> None:
    """Add ``ragtune bench``."""
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

    opts = bench_options(args)
    if args.which == "all":
        def done(name: str, result: dict[str, Any]) -> None:
            state = "error" if "error" in result else "done"
            print(f"bench {name}: {state}", file=sys.stderr)

        result = run_all(opts, quick=args.quick, on_done=done)
    else:
        result = {"date": None, "benches": {args.which: run_bench(args.which, opts)}}
    table = summary_table(result)
    single = result["benches"].get(args.which) if args.which != "all" else None
    if args.json_out:
        write_json(single if single is not None else result, args.json_out)
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
