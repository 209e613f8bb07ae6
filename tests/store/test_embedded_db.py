"""``ragtune db status|stop`` on a real embedded PostgreSQL left running by a killed process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("pgserver", reason="install the [local] extra")

pytestmark = pytest.mark.slow

START = """
import sys, time
from langchain_ragtune.store.embedded import embedded_server
embedded_server(sys.argv[1]).get_uri()
print("up", flush=True)
if sys.argv[2] == "hang":
    time.sleep(600)
"""


def _ragtune(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAGTUNE_HOME": str(home)}
    env.pop("RAGTUNE_PG_URI", None)
    return subprocess.run([sys.executable, "-m", "langchain_ragtune.cli", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def _status(home: Path) -> dict:
    out = _ragtune(home, "db", "status", "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_status_and_stop_a_server_left_by_a_killed_process(tmp_path):
    home = tmp_path / "home"
    pgdata = home / "pgdata"
    assert _status(home)["initialised"] is False

    proc = subprocess.Popen([sys.executable, "-c", START, str(pgdata), "hang"],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "up"
    st = _status(home)
    assert st["running"] and st["clients"] == [proc.pid]
    refused = _ragtune(home, "db", "stop")  # a live process uses it: refused, named
    assert refused.returncode == 1 and str(proc.pid) in refused.stderr
    assert "--force" in refused.stderr

    proc.send_signal(signal.SIGKILL)
    proc.wait()
    st = _status(home)
    assert st["running"] and st["clients"] == [] and st["stale_clients"] == [proc.pid]
    pid = st["pid"]

    out = _ragtune(home, "db", "stop", "--json")
    assert out.returncode == 0, out.stderr
    stopped = json.loads(out.stdout)
    assert stopped["stopped"] is True and stopped["running"] is False
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert _status(home)["stale_clients"] == []
    again = _ragtune(home, "db", "stop")
    assert again.returncode == 0 and "was not running" in again.stdout


def test_a_killed_process_no_longer_keeps_the_server_alive_for_ever(tmp_path):
    """A process starting after a killed one drops its stale handle, so the server stops
    when that process exits normally."""
    pgdata = tmp_path / "home" / "pgdata"
    killed = subprocess.Popen([sys.executable, "-c", START, str(pgdata), "hang"],
                              stdout=subprocess.PIPE, text=True)
    assert killed.stdout.readline().strip() == "up"
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    done = subprocess.run([sys.executable, "-c", START, str(pgdata), "exit"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "up" in done.stdout, done.stderr
    deadline = time.monotonic() + 30
    while _status(tmp_path / "home")["running"] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _status(tmp_path / "home")["running"] is False


def test_with_an_external_server_db_commands_touch_nothing(tmp_path):
    env_home = tmp_path / "home"
    out = subprocess.run([sys.executable, "-m", "langchain_ragtune.cli", "db", "stop"],
                         env={**os.environ, "RAGTUNE_HOME": str(env_home),
                              "RAGTUNE_PG_URI": "postgresql://app@db.invalid:5432/app"},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "RAGTUNE_PG_URI is set" in out.stdout
