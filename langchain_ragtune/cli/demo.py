"""``ragtune demo``: the whole loop on this machine, from an empty store to routed answers.

Example:
    $ ragtune demo --quick
"""

from __future__ import annotations

import argparse
from typing import Any

from langchain_ragtune.cli._common import add_json_flag, print_json, stop_cleanly_on_sigterm

__all__ = ["register"]


def cmd_demo(args: argparse.Namespace) -> int:
    from langchain_ragtune.demo import print_question, print_summary, run_demo

    live = None if args.json else print_question
    with stop_cleanly_on_sigterm():
        result = run_demo(quick=args.quick, conversation=args.conversation, data=args.data,
                          sample=args.sample, quiet=args.json, out_dir=args.out,
                          on_question=live)
    if args.json:
        print_json(result)
    else:
        print_summary(result)
    return 0 if result["ok"] else 1


def register(sub: Any) -> None:
    """Add ``ragtune demo``."""
    p = sub.add_parser(
        "demo", help="the whole loop on this machine: remember, tune, serve, route, answer",
        description="Starts the embedded PostgreSQL and vLLM on the CPU, remembers a LoCoMo "
                    "conversation, distills and trains its LoRA adapter, publishes it, adds "
                    "a memory after training, then asks a mixed set of questions through the "
                    "memory graph, showing each route and why. Under 20 minutes on 2 cores "
                    "(--quick: under 8).")
    p.add_argument("--quick", action="store_true",
                   help="fewer questions and a tiny training run")
    p.add_argument("--conversation", help="LoCoMo sample_id (default: the first)")
    p.add_argument("--data", help="a LoCoMo-format file (default $RAGTUNE_LOCOMO_PATH, else "
                   "../shared/data/locomo/locomo10.json, else the shipped sample)")
    p.add_argument("--sample", action="store_true",
                   help="use the small conversation shipped with the package")
    p.add_argument("--out", metavar="DIR", help="where results and logs go")
    add_json_flag(p)
    p.set_defaults(handler=cmd_demo)
