"""Faults on the storage side: a PostgreSQL restart in the middle of ingest loses nothing
that was acknowledged, and the store's pool recovers by itself."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from langchain_ragtune.config import StoreConfig
from langchain_ragtune.errors import StoreError
from langchain_ragtune.store import MemoryStore
from langchain_ragtune.testing import HashEmbeddings


def _pg_ctl(pgdata: Path, *args: str) -> None:
    from pgserver._commands import POSTGRES_BIN_PATH

    cmd = [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(pgdata), *args]
    if os.geteuid() == 0:  # the embedded server runs as the 'pgserver' system user
        cmd = ["runuser", "-u", "pgserver", "--", *cmd]
    # No pipes: a started postmaster would inherit them and keep run() waiting.
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)


@pytest.fixture()
def own_server(tmp_path_factory):
    """A private embedded server this test may restart without disturbing the others."""
    from langchain_ragtune.store.embedded import embedded_server

    import shutil

    pgdata = Path("/tmp") / f"ragtune-fault-{os.getpid()}"
    server = embedded_server(pgdata)
    yield pgdata, server.get_uri()
    # The restarted postmaster is not the process pgserver tracks: stop it here.
    try:
        _pg_ctl(pgdata, "-w", "-m", "fast", "stop")
    except subprocess.CalledProcessError:
        pass
    shutil.rmtree(pgdata, ignore_errors=True)


def test_postgres_restart_during_ingest_loses_no_acknowledged_write(own_server):
    pgdata, uri = own_server
    store = MemoryStore(StoreConfig(pg_uri=uri, schema="faults", connect_timeout=5),
                        embeddings=HashEmbeddings(), background_embedding=False)
    store.setup()
    ns = ("fault", "restart")
    acked: list[str] = []
    failures: list[str] = []
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            try:
                acked.extend(store.add(ns, [{"text": f"turn {i}", "message_id": f"m{i}"}]))
                i += 1
            except StoreError as exc:  # not acknowledged: the caller would retry
                failures.append(str(exc))
                time.sleep(0.05)

    t = threading.Thread(target=writer)
    t.start()
    try:
        time.sleep(1.0)
        before = len(acked)
        _pg_ctl(pgdata, "-w", "-m", "fast", "-l", str(pgdata / "restart.log"), "restart")
        time.sleep(2.0)
    finally:
        stop.set()
        t.join(timeout=30)
    assert before > 0 and len(acked) > before, "writes resumed after the restart"
    assert failures, "the restart was felt (some writes were refused, not silently lost)"
    # Every acknowledged id is there, exactly once.
    stored = {m.id for m in store.list(ns)}
    assert set(acked) <= stored
    assert store.count(ns) == len(stored)
    store.close()
