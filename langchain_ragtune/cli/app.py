"""The ``ragtune`` command.

Each command group has its module in this folder with a ``register(subparsers)`` function;
this file only assembles them. Importing the CLI stays light: handlers import torch, vLLM
or the store when they run.

Example:
    $ ragtune search "where did Caroline move from?" --namespace conv-26 --json
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Sequence

from langchain_ragtune.cli import (bench, db, demo, distill, evaluate, jobs, router, serving,
                                   store, tuning)
from langchain_ragtune.errors import RagtuneError

__all__ = ["build_parser", "main"]

# Order is the order of `ragtune --help`.
_COMMAND_GROUPS = (store, db, serving, distill, tuning, jobs, router, evaluate, bench, demo)


def build_parser() -> argparse.ArgumentParser:
    """The ``ragtune`` argument parser with every command group registered."""
    parser = argparse.ArgumentParser(
        prog="ragtune",
        description="Long-term memory for LangGraph: retrieval (pgvector) and parametric (LoRA).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in _COMMAND_GROUPS:
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ragtune`` console script; returns the exit code."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        result = args.handler(args)
    except RagtuneError as exc:
        print(f"ragtune: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ragtune: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `ragtune search ... | head`
        sys.stderr.close()
        return 0
    return int(result or 0)
