"""What every ``ragtune`` command shares: JSON output, namespace spelling, the store, signals.

Command modules import only from here and from the library, never from each other, so a
command's options and handlers are found in the one file named after it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Iterator

__all__ = ["add_json_flag", "add_namespace_arg", "add_quiet_flag", "add_teacher_arg",
           "add_training_args", "open_store", "parse_namespace", "print_json",
           "stop_cleanly_on_sigterm", "stop_event_on_signals", "write_json"]


def print_json(obj: Any) -> None:
    """Print ``obj`` as indented JSON on stdout (the ``--json`` output of every command)."""
    json.dump(obj, sys.stdout, indent=2, default=str, ensure_ascii=False)
    sys.stdout.write("\n")


def write_json(obj: Any, target: str) -> None:
    """Write ``obj`` as JSON to the file ``target`` (atomically) or to stdout for ``"-"``."""
    if target == "-":
        print_json(obj)
        return
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str, ensure_ascii=False) + "\n",
                   encoding="utf-8")
    tmp.replace(path)


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    """Add the common ``--json`` flag (machine-readable output on stdout)."""
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")


def add_namespace_arg(parser: argparse.ArgumentParser, *, required: bool = True,
                      help: str = "the namespace, e.g. user-42 or org/user-42") -> None:
    """Add ``--namespace``/``-n``, spelled as :func:`parse_namespace` reads it."""
    parser.add_argument("--namespace", "-n", required=required, help=help)


def add_teacher_arg(parser: argparse.ArgumentParser) -> None:
    """Add ``--teacher``: who writes the distilled questions (``DistillConfig.teacher``)."""
    parser.add_argument("--teacher", help="'none' (facts by rules, the default), 'local' (the "
                                          "base model adds pairs), or a chat model such as "
                                          "openai:gpt-4o-mini")


def add_training_args(parser: argparse.ArgumentParser) -> None:
    """Add ``--mode``, ``--epochs`` and ``--max-steps`` (``TrainConfig``), as ``ragtune train``
    and ``ragtune refresh`` both take them."""
    parser.add_argument("--mode", choices=("continue", "retrain"),
                        help="continue the current adapter or train a fresh one (default: "
                             "continue when possible)")
    parser.add_argument("--epochs", type=float, help="passes over the data (3)")
    parser.add_argument("--max-steps", type=int, help="stop training after this many steps")


def add_quiet_flag(parser: argparse.ArgumentParser) -> None:
    """Add ``--quiet``: no progress bars or progress lines on stderr."""
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def parse_namespace(text: str) -> tuple[str, ...]:
    """``"org/user-42"`` -> ``("org", "user-42")``: the CLI spelling of a namespace."""
    from langchain_ragtune.errors import InvalidInputError
    from langchain_ragtune.store.types import validate_namespace

    parts = tuple(text.split("/"))
    if any(not p.strip() for p in parts):
        raise InvalidInputError(f"--namespace {text!r} has an empty label; write labels "
                                "separated by single slashes, e.g. 'org/user-42'.")
    return validate_namespace(parts)


def open_store() -> Any:
    """A set-up MemoryStore from ``RAGTUNE_*`` settings (the embedded server by default).

    Background embedding is off: a CLI process embeds what it wrote before it exits.
    """
    from langchain_ragtune.config import StoreConfig
    from langchain_ragtune.store import MemoryStore

    store = MemoryStore(StoreConfig.from_env(), background_embedding=False)
    store.setup()
    return store


@contextlib.contextmanager
def stop_cleanly_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM (``timeout``, ``kill``, a CI runner) into ``SystemExit`` while inside.

    Python's default SIGTERM action ends the process at once, skipping ``finally`` blocks,
    so a vLLM server a command started (its own process group) would be left running. As an
    exception, SIGTERM unwinds the command's exit stack, which stops the server.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def stop_event_on_signals(stop: threading.Event) -> Iterator[threading.Event]:
    """While inside, SIGINT/SIGTERM set ``stop`` (a long-running command's loop ends cleanly).

    The first signal asks the loop to finish what it is doing (a scheduler's sweep, a
    server's reconcile); a second one exits at once, for an operator who will not wait (a
    training run interrupted that way leaves only a temporary folder, removed by the next).
    """
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    received = {"n": 0}

    def on_signal(signum: int, _frame: Any) -> None:
        received["n"] += 1
        if received["n"] > 1:
            os._exit(128 + signum)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
