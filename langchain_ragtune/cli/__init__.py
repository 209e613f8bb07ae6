"""The ``ragtune`` command line: one module per command group, shared helpers in ``_common``.

Example:
    $ ragtune search "where did Caroline move from?" --namespace conv-26 --json
"""

from langchain_ragtune.cli._common import add_json_flag, print_json
from langchain_ragtune.cli.app import build_parser, main

__all__ = ["add_json_flag", "build_parser", "main", "print_json"]
