"""vLLM goes away during a chat, then comes back: a clear error or the fallback, then recovery.

The graph talks to the session's real vLLM server through a TCP relay on its own port. Closing
the relay is what the client sees when vLLM is killed (connections refused, in-flight ones
cut); opening it again is the restarted server. Killing the shared server itself would cost
every later test a minute-long restart.
"""

from __future__ import annotations

import socket
import threading
import time
from urllib.parse import urlsplit

import pytest
from langchain_core.messages import HumanMessage

from langchain_ragtune.config import RouterConfig, ServeConfig
from langchain_ragtune.errors import ServingError
from langchain_ragtune.router import create_memory_graph
from langchain_ragtune.store import Turn
from langchain_ragtune.testing import EchoChatModel


class Relay:
    """A TCP relay from a local port to ``target`` that can be switched off and on."""

    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        self.target = (parts.hostname, parts.port)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: socket.socket | None = None
        self._conns: list[socket.socket] = []

    def start(self) -> None:
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", self.port))
        srv.listen(32)
        self._server = srv
        threading.Thread(target=self._accept, args=(srv,), daemon=True).start()

    def stop(self) -> None:
        """Refuse new connections and cut the open ones (a killed server)."""
        if self._server is not None:
            # shutdown() wakes the thread blocked in accept(); close() alone would not, and
            # the socket would go on accepting.
            try:
                self._server.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._server.close()
            self._server = None
        for c in self._conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()
        self._conns.clear()

    def _accept(self, srv: socket.socket) -> None:
        while True:
            try:
                client, _ = srv.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def _ask(graph, text: str, thread: str) -> dict:
    return graph.invoke({"messages": [HumanMessage(text)]},
                        {"configurable": {"user_id": "kill", "thread_id": thread}})


@pytest.mark.vllm
def test_vllm_killed_mid_chat_then_back(store, vllm_server):
    ns = ("user-kill",)
    store.forget(ns)
    store.add(ns, [Turn(text="My sister Ines lives in Porto.", speaker="user")])
    store.flush()
    relay = Relay(vllm_server.url)
    relay.start()
    serve = ServeConfig(vllm_urls=(relay.url,), request_timeout_s=30.0)
    config = RouterConfig(serving_retry_s=1.0, state_ttl_s=0.0, answer_max_tokens=12)
    strict = create_memory_graph(store, serve_config=serve, config=config,
                                 background_remember=False)
    lenient = create_memory_graph(store, serve_config=serve, config=config,
                                  background_remember=False,
                                  local_chat_model=EchoChatModel(prefix="local"))
    try:
        up = _ask(strict, "Where does my sister Ines live?", "k1")
        assert up["memory_model"] == "base" and up["messages"][-1].content.strip()

        relay.stop()  # vLLM is gone
        with pytest.raises(ServingError) as err:
            _ask(strict, "Where does my sister Ines live?", "k2")
        assert relay.url in str(err.value) and "RAGTUNE_LOCAL_FALLBACK" in str(err.value)
        down = _ask(lenient, "Where does my sister Ines live?", "k3")
        assert down["memory_model"] == "local:base"
        assert down["messages"][-1].content.startswith("local:")
        assert "serving_unreachable:local_backend" in down["memory_decision"]["fallbacks"]

        relay.start()  # vLLM is back; the breaker lets the next request try it
        time.sleep(config.serving_retry_s + 0.2)
        for graph, thread in ((strict, "k4"), (lenient, "k5")):
            back = _ask(graph, "Where does my sister Ines live?", thread)
            assert back["memory_model"] == "base", back["memory_decision"]
            assert not back["memory_decision"]["fallbacks"]
            assert not back["messages"][-1].content.startswith("local:")
    finally:
        relay.stop()
        store.forget(ns)
