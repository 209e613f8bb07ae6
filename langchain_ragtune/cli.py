"""The ``ragtune`` command.

Each area of the package owns its subcommands in a ``commands`` module with a
``register(subparsers)`` function; this file only assembles them, so importing the CLI
stays light (handlers import torch, vLLM or the store lazily).

Example:
    $ ragtune search "where did Caroline move from?" --namespace conv-26 --json
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from typing import Any, Sequence

from langchain_ragtune.errors import RagtuneError

# Order is the order of `ragtune --help`.
_COMMAND_MODULES = (
    "langchain_ragtune.store.commands",
    "langchain_ragtune.serving.commands",
    "langchain_ragtune.jobs.commands",
    "langchain_ragtune.router.commands",
    "langchain_ragtune.eval.commands",
    "langchain_ragtune.demo",
)


def print_json(obj: Any) -> None:
    """Print ``obj`` as indented JSON on stdout (the ``--json`` output of every command)."""
    json.dump(obj, sys.stdout, indent=2, default=str, ensure_ascii=False)
    sys.stdout.write("\n")


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    """Add the common ``--json`` flag (machine-readable output on stdout)."""
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ragtune",
        description="Long-term memory for LangGraph: retrieval (pgvector) and parametric (LoRA).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # that area is not built yet
                continue
            raise
        module.register(sub)
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
