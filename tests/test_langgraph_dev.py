"""The shipped graphs under LangGraph's own server, as a user runs them.

``langgraph dev`` (langgraph-cli's in-memory server) loads langgraph.json from the repository
and runs each graph on its asyncio event loop with blockbuster on: any blocking call on the
loop fails the run. The server is started here without ``--allow-blocking``, pointed at the
test PostgreSQL (its own schema) and the session's real vLLM, and driven with langgraph-sdk.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("langgraph_api", reason="install the [dev] extra (langgraph-cli[inmem])")
from langgraph_sdk import get_client  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def langgraph_server(pg_uri, schema, vllm_server, tmp_path_factory):
    exe = Path(sys.executable).with_name("langgraph")
    if not exe.exists():
        exe = Path(shutil.which("langgraph") or "langgraph")
    port = _free_port()
    home = tmp_path_factory.mktemp("lg-home")
    log_path = home / "langgraph-dev.log"
    env = {**os.environ, "RAGTUNE_PG_URI": pg_uri, "RAGTUNE_SCHEMA": schema,
           "RAGTUNE_HOME": str(home), "RAGTUNE_VLLM_URLS": vllm_server.url,
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("RAGTUNE_LOCAL_FALLBACK", None)
    with open(log_path, "w") as log:
        proc = subprocess.Popen([str(exe), "dev", "--no-browser", "--no-reload",
                                 "--port", str(port)], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        import httpx

        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{url}/ok", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"langgraph dev did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(1)
        yield url, log_path
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


async def _chat(client, user: str, text: str) -> dict:
    thread = await client.threads.create()
    return await client.runs.wait(
        thread["thread_id"], "memory_chat",
        input={"messages": [{"role": "user", "content": text}]},
        config={"configurable": {"user_id": user}}, raise_error=True)


async def test_memory_chat_recalls_across_threads_of_one_user_only(langgraph_server):
    url, log_path = langgraph_server
    client = get_client(url=url)
    told = await _chat(client, "lg-alice", "My dog is called Biscuitorius.")
    assert told["messages"][-1]["type"] == "ai" and told["messages"][-1]["content"].strip()

    # The remember node writes in the background: poll another thread until it is found.
    for _ in range(30):
        again = await _chat(client, "lg-alice", "What is my dog called?")
        if "Biscuitorius" in again.get("memory_context", ""):
            break
        await asyncio.sleep(1)
    assert again["memory_route"] in ("retrieval", "hybrid"), again["memory_decision"]
    assert "Biscuitorius" in again["memory_context"]
    assert again["messages"][-1]["content"].strip()

    other = await _chat(client, "lg-bob", "What is my dog called?")
    assert "Biscuitorius" not in other.get("memory_context", "")
    assert "Biscuitorius" not in str(other["messages"])
    log = log_path.read_text()
    assert "BlockingError" not in log and "Blocking call" not in log


async def test_errors_reach_the_client_with_their_fix(langgraph_server):
    """A run without a user gets the library's message (and its fix), not "internal error"."""
    url, _ = langgraph_server
    client = get_client(url=url)
    thread = await client.threads.create()
    with pytest.raises(Exception) as info:
        await client.runs.wait(thread["thread_id"], "memory_chat",
                               input={"messages": [{"role": "user", "content": "hi"}]},
                               raise_error=True)
    text = str(info.value)
    assert "An internal error occurred" not in text
    assert "user_id" in text


async def test_refresh_graph_reports_a_namespace_too_small(langgraph_server):
    url, _ = langgraph_server
    client = get_client(url=url)
    await _chat(client, "lg-carol", "I collect old maps.")
    thread = await client.threads.create()
    out = await client.runs.wait(thread["thread_id"], "refresh", input={},
                                 config={"configurable": {"user_id": "lg-carol"}},
                                 raise_error=True)
    result = out["result"]
    assert result["status"] == "too_small", result
    assert result.get("adapter_name") in (None, ""), result
