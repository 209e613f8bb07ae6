"""``ragtune models ...`` and ``ragtune serve``: the base model and the vLLM server.

Light at import: handlers import transformers, vLLM and the store only when they run.

Example:
    $ ragtune models prepare --quiet
    $ ragtune serve
"""

from __future__ import annotations

import argparse
import time
from typing import Any

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the ``models`` and ``serve`` subcommands to the ``ragtune`` parser."""
    from langchain_ragtune.cli import add_json_flag

    models = subparsers.add_parser("models", help="prepare and inspect the base model")
    models_sub = models.add_subparsers(dest="models_command", metavar="ACTION")
    prepare = models_sub.add_parser(
        "prepare", help="convert the shipped SmolLM2-135M-Instruct into a model folder (once)")
    prepare.add_argument("--quiet", action="store_true", help="print nothing on success")
    add_json_flag(prepare)
    prepare.set_defaults(handler=_models_prepare)
    models.set_defaults(handler=lambda args: (models.print_help(), 2)[1])


def _models_prepare(args: argparse.Namespace) -> int:
    from langchain_ragtune.cli import print_json
    from langchain_ragtune.config import ModelConfig
    from langchain_ragtune.models import prepare_base_model

    started = time.monotonic()
    path = prepare_base_model(ModelConfig.from_env(), quiet=args.quiet or args.json)
    if args.json:
        print_json({"path": str(path), "seconds": round(time.monotonic() - started, 2)})
    elif not args.quiet:
        print(path)
    return 0
