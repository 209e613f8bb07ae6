"""``ragtune models ...`` and ``ragtune serve``: the base model and the vLLM server.

Light at import: handlers import transformers, vLLM and the store only when they run.

Example:
    $ ragtune models prepare --quiet
    $ ragtune serve
    $ ragtune serve --once --json      # start or attach, reconcile, report, exit
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from langchain_ragtune.cli._common import (add_json_flag, print_json, stop_cleanly_on_sigterm,
                                           stop_event_on_signals)

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the ``models`` and ``serve`` subcommands to the ``ragtune`` parser."""
    models = subparsers.add_parser("models", help="prepare and inspect the base model")
    models_sub = models.add_subparsers(dest="models_command", metavar="ACTION")
    prepare = models_sub.add_parser(
        "prepare", help="convert the shipped SmolLM2-135M-Instruct into a model folder (once)")
    prepare.add_argument("--quiet", action="store_true", help="print nothing on success")
    add_json_flag(prepare)
    prepare.set_defaults(handler=_models_prepare)
    models.set_defaults(handler=lambda args: (models.print_help(), 2)[1])
    register_serve(subparsers)


def _models_prepare(args: argparse.Namespace) -> int:
    from langchain_ragtune.config import ModelConfig
    from langchain_ragtune.models import prepare_base_model

    started = time.monotonic()
    path = prepare_base_model(ModelConfig.from_env(), quiet=args.quiet or args.json)
    if args.json:
        print_json({"path": str(path), "seconds": round(time.monotonic() - started, 2)})
    elif not args.quiet:
        print(path)
    return 0


def register_serve(subparsers: Any) -> None:
    """Add ``ragtune serve``."""
    serve = subparsers.add_parser(
        "serve", help="start vLLM with runtime LoRA (or attach to RAGTUNE_VLLM_URLS) and keep "
                      "every namespace's current adapter loaded",
        description="Starts the vLLM OpenAI-compatible server for the base model (bound to "
                    "127.0.0.1 unless --host), reloads the current adapter of the most recently "
                    "switched namespaces (reconcile), and re-checks every --watch seconds so a "
                    "restarted endpoint gets its adapters back. Runs until Ctrl-C or SIGTERM.")
    serve.add_argument("--host", help="address to bind (default RAGTUNE_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default RAGTUNE_PORT or 8765)")
    serve.add_argument("--log", metavar="FILE", help="vLLM's log file")
    serve.add_argument("--no-reconcile", action="store_true",
                       help="do not load adapters from the registry")
    serve.add_argument("--watch", type=float, default=15.0, metavar="S",
                       help="seconds between reconcile checks (0: only at start)")
    serve.add_argument("--once", action="store_true",
                       help="start (or attach), reconcile, print the endpoints and exit "
                            "(stopping a server it started)")
    add_json_flag(serve)
    serve.set_defaults(handler=_serve)


def _open_registry() -> tuple[Any, Any]:
    """(store, registry) from the environment, or (None, None) when PostgreSQL is unusable."""
    import logging

    try:
        from langchain_ragtune.config import StoreConfig
        from langchain_ragtune.store import MemoryStore
        from langchain_ragtune.testing.fakes import HashEmbeddings
        from langchain_ragtune.tuning.registry import AdapterRegistry

        config = StoreConfig.from_env()
        # The registry needs no embeddings; a fake keeps `serve` from loading a model. The
        # dimension must match the schema's, which setup() checks, so it is not called here.
        store = MemoryStore(config, embeddings=HashEmbeddings(384), background_embedding=False)
        return store, AdapterRegistry(store)
    except Exception as exc:  # noqa: BLE001 - serving works without the registry
        logging.getLogger(__name__).warning(
            "adapter registry unavailable (%s): serving the base model only", exc)
        return None, None


def _serve(args: argparse.Namespace) -> int:
    import logging
    import sys
    import threading

    from langchain_ragtune.config import ServeConfig
    from langchain_ragtune.serving.launcher import serving_endpoints

    log = logging.getLogger("langchain_ragtune.serving")
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    config = ServeConfig.from_env(**overrides)

    # SIGTERM during start-up unwinds start_server, which stops vLLM; once serving, it ends
    # the watch loop cleanly.
    with stop_cleanly_on_sigterm():
        store, registry = (None, None) if args.no_reconcile else _open_registry()
        try:
            with serving_endpoints(config, log_path=args.log) as urls:
                publisher = None
                summary: dict[str, Any] = {"endpoints": urls}
                if registry is not None:
                    from langchain_ragtune.serving.publisher import Publisher

                    publisher = Publisher(registry, endpoints=urls, config=config)
                    try:
                        summary["reconcile"] = publisher.reconcile().as_dict()
                    except Exception as exc:  # noqa: BLE001 - e.g. tables not created yet
                        log.warning("reconcile failed: %s", exc)
                        summary["reconcile"] = {"errors": [str(exc)]}
                if args.json:
                    print_json(summary)
                else:
                    print(f"serving at {', '.join(urls)} (base model name "
                          f"{config.served_model_name!r}); Ctrl-C to stop", flush=True)
                if args.once:
                    return 0
                with stop_event_on_signals(threading.Event()) as stop:
                    while not stop.wait(args.watch if args.watch > 0 else 3600):
                        if publisher is not None and args.watch > 0:
                            _reconcile_quietly(publisher, log)
                print("stopping", file=sys.stderr)
        finally:
            if store is not None:
                store.close()
    return 0


def _reconcile_quietly(publisher: Any, log: Any) -> None:
    try:
        done = publisher.reconcile()
        if done.loaded or done.unloaded:
            log.warning("reconcile restored %s, unloaded %s", done.loaded, done.unloaded)
    except Exception as exc:  # noqa: BLE001 - keep serving
        log.warning("reconcile failed: %s", exc)
