"""LangGraph nodes for memory: route, remember, and a ready memory chat graph.

* :func:`create_memory_node`: a drop-in node for any ``StateGraph`` with a ``messages`` key.
  It reads the latest human message and the namespace (from the run's configuration:
  ``configurable.user_id`` -> ``("user-<id>",)`` or ``configurable.namespace``; never from
  model output), decides the route, retrieves, and writes ``memory_route``,
  ``memory_context``, ``memory_model``, ``memory_decision`` and ``memory_sources`` to state
  (declare them by subclassing :class:`MemoryState`). The decision also goes to the run's
  trace: a custom event ``ragtune_memory_route`` and a child run ``memory_route`` whose
  metadata holds the route, reasons and fallbacks (visible in LangSmith).
* :func:`create_remember_node`: stores each human and AI turn without delaying the reply
  (a background writer with explicit ``flush()``/``stop()``).
* :func:`create_memory_graph`: route -> retrieve -> generate -> remember, ready to run or to
  add as a subgraph.

Every node works with ``invoke`` and ``ainvoke`` (a sync store runs in worker threads in
async graphs; an :class:`~langchain_ragtune.store.AsyncMemoryStore` is awaited directly).

Example:
    >>> from langchain_ragtune.router import create_memory_graph               # doctest: +SKIP
    >>> graph = create_memory_graph(store)                                    # doctest: +SKIP
    >>> out = graph.invoke({"messages": [("user", "What is my dog called?")]},
    ...                    {"configurable": {"user_id": "42"}})               # doctest: +SKIP
    >>> out["memory_route"], out["messages"][-1].content                      # doctest: +SKIP
    ('retrieval', 'Your dog is called Biscuit.')
"""

from __future__ import annotations

import asyncio
import atexit
import hashlib
import logging
import queue
import threading
import time
import uuid
import weakref
from typing import Any, Literal, Sequence

from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableConfig, RunnableLambda
from langgraph.graph import END, START, MessagesState, StateGraph

from langchain_ragtune.config import RouterConfig, ServeConfig
from langchain_ragtune.errors import InvalidInputError
from langchain_ragtune.router.memory import (
    ChatModelFactory,
    MemoryRouter,
    RouteResult,
    namespace_from_config,
)
from langchain_ragtune.router.prompts import strip_injected_context
from langchain_ragtune.store.types import Turn, message_text

__all__ = [
    "MemoryNode",
    "MemoryState",
    "MemoryWriter",
    "RememberNode",
    "create_memory_graph",
    "create_memory_node",
    "create_remember_node",
    "latest_human_text",
    "memory_graph_builder",
    "memory_system_message",
    "route_condition",
]

log = logging.getLogger(__name__)


class MemoryState(MessagesState, total=False):
    """Graph state with the memory node's outputs (subclass it to add your own keys).

    Attributes:
        messages: the conversation (``add_messages`` reducer).
        memory_route: ``parametric``, ``retrieval``, ``hybrid`` or ``none``.
        memory_context: the retrieved memories put into the prompt (empty for the
            parametric and none routes).
        memory_model: the served name that should answer (adapter or base model).
        memory_decision: the decision: route, reasons, scores, fallbacks, timings.
        memory_sources: for each context entry, the message ids it covers.
        memory_hits: the search hits (dict form) the decision looked at.
    """

    memory_route: str
    memory_context: str
    memory_model: str
    memory_decision: dict
    memory_sources: list
    memory_hits: list


def latest_human_text(messages: Sequence[Any]) -> str | None:
    """The text of the latest human message (``None`` when there is none or it is empty)."""
    for msg in reversed(messages or []):
        if getattr(msg, "type", None) == "human":
            try:
                text = message_text(msg.content)
            except InvalidInputError:
                return None
            return text if text.strip() else None
    return None


def memory_system_message(state: dict[str, Any]) -> Any:
    """A ``SystemMessage`` for your own model from the memory node's state.

    Use it in an existing agent: put it first in the messages you send to your model.

    Example:
        >>> memory_system_message({"memory_route": "none"}).content[:20]
        'You are a helpful as'
    """
    from langchain_core.messages import SystemMessage

    from langchain_ragtune.router.prompts import system_prompt

    return SystemMessage(system_prompt(state.get("memory_route") or "none",
                                       state.get("memory_context") or ""))


# -- tracing --------------------------------------------------------------------------------

def _identity(x: Any) -> Any:
    return x


_TRACE = RunnableLambda(_identity, name="memory_route")


def _trace_metadata(result: RouteResult) -> dict[str, Any]:
    d = result.decision
    return {"ragtune_route": d.route, "ragtune_reasons": list(d.reasons),
            "ragtune_fallbacks": list(d.fallbacks), "ragtune_model": result.model,
            "ragtune_policy": d.policy, "ragtune_namespace": "/".join(result.namespace)}


def _record(result: RouteResult, config: RunnableConfig | None) -> None:
    """Put the decision into the run's trace (custom event + a child run with metadata)."""
    if not config or not config.get("callbacks"):
        return  # no tracer or listener: nothing would see it
    payload = result.decision_dict()
    from langchain_core.callbacks.manager import dispatch_custom_event

    try:
        dispatch_custom_event("ragtune_memory_route", payload, config=config)
    except RuntimeError:  # no parent run (called outside a graph)
        pass
    try:
        _TRACE.invoke(payload, config={"callbacks": config.get("callbacks"),
                                       "metadata": _trace_metadata(result),
                                       "tags": [f"ragtune:{result.route}"],
                                       "run_name": "memory_route"})
    except Exception:  # tracing must never break a reply
        log.debug("could not trace the memory route", exc_info=True)


async def _arecord(result: RouteResult, config: RunnableConfig | None) -> None:
    if not config or not config.get("callbacks"):
        return
    payload = result.decision_dict()
    from langchain_core.callbacks.manager import adispatch_custom_event

    try:
        await adispatch_custom_event("ragtune_memory_route", payload, config=config)
    except RuntimeError:
        pass
    try:
        await _TRACE.ainvoke(payload, config={"callbacks": config.get("callbacks"),
                                              "metadata": _trace_metadata(result),
                                              "tags": [f"ragtune:{result.route}"],
                                              "run_name": "memory_route"})
    except Exception:
        log.debug("could not trace the memory route", exc_info=True)


# -- the memory node ------------------------------------------------------------------------

# No human message to route: clear the last decision so nothing answers it twice.
_NO_QUERY: dict[str, Any] = {"memory_route": "none", "memory_context": "", "memory_decision": {},
                             "memory_sources": []}


class MemoryNode(RunnableLambda):
    """The routing node (sync and async); see :func:`create_memory_node`.

    Attributes:
        router: the :class:`~langchain_ragtune.router.memory.MemoryRouter` doing the work.
    """

    def __init__(self, router: MemoryRouter, *, with_context: bool = True,
                 name: str = "memory") -> None:
        self.router = router
        self.with_context = with_context
        super().__init__(self._run, afunc=self._arun, name=name)

    def _run(self, state: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        query = latest_human_text(state.get("messages") or [])
        if query is None:
            return dict(_NO_QUERY)
        result = self.router.route(query, namespace_from_config(config),
                                   with_context=self.with_context)
        _record(result, config)
        return result.as_state(hits=not self.with_context)

    async def _arun(self, state: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        query = latest_human_text(state.get("messages") or [])
        if query is None:
            return dict(_NO_QUERY)
        result = await self.router.aroute(query, namespace_from_config(config),
                                          with_context=self.with_context)
        await _arecord(result, config)
        return result.as_state(hits=not self.with_context)


def create_memory_node(store: Any, *, registry: Any = None,
                       chat_model_factory: ChatModelFactory | None = None,
                       config: RouterConfig | None = None,
                       serve_config: ServeConfig | None = None, local_chat_model: Any = None,
                       router: MemoryRouter | None = None, name: str = "memory") -> MemoryNode:
    """A node that decides which memory answers the latest human message.

    Add it before your model node; it writes the ``memory_*`` keys of :class:`MemoryState`
    (your state must declare them: subclass :class:`MemoryState`). Then either answer with
    your own model and :func:`memory_system_message`, or with the chat model the route
    chose (``node.router.chat_model(...)``).

    Args:
        store: a :class:`~langchain_ragtune.store.MemoryStore` (or async store), or a
            zero-argument callable opening one on first use.
        registry: the adapter registry (default: read from the store's tables).
        chat_model_factory: ``factory(adapter_or_None) -> chat model`` (default: vLLM).
        config: router thresholds and policy.
        serve_config: vLLM settings.
        local_chat_model: in-process fallback model (or set ``config.local_fallback``).
        router: an existing router to share (the other arguments are then ignored).
        name: the node's run name.

    Returns:
        A :class:`MemoryNode` (a ``RunnableLambda`` with sync and async bodies).

    Example:
        >>> class State(MemoryState):                                   # doctest: +SKIP
        ...     pass
        >>> builder = StateGraph(State)                                 # doctest: +SKIP
        >>> builder.add_node("memory", create_memory_node(store))       # doctest: +SKIP
        >>> builder.add_node("agent", agent)                            # doctest: +SKIP
        >>> builder.add_edge(START, "memory"); builder.add_edge("memory", "agent")  # doctest: +SKIP
    """
    router = router or MemoryRouter(store, registry=registry, config=config,
                                    serve_config=serve_config,
                                    chat_model_factory=chat_model_factory,
                                    local_chat_model=local_chat_model)
    return MemoryNode(router, name=name)


# -- remembering ----------------------------------------------------------------------------

_WRITERS: "weakref.WeakSet[MemoryWriter]" = weakref.WeakSet()


@atexit.register
def _flush_writers() -> None:  # pragma: no cover - interpreter shutdown
    for writer in list(_WRITERS):
        writer.stop(timeout=10.0)


class MemoryWriter:
    """Writes turns to the store in a background thread, so replies never wait for it.

    ``submit`` returns at once; one worker thread calls ``store.add`` (which itself
    acknowledges in milliseconds, embedding later). A failed write (PostgreSQL down) is
    retried with backoff; writes beyond ``max_pending`` are dropped and counted, never
    blocking the caller. ``flush()`` waits until everything submitted is stored; ``stop()``
    flushes and ends the thread (also run at interpreter exit).

    Args:
        store: a sync :class:`~langchain_ragtune.store.MemoryStore` (or a callable making one).
        max_pending: most queued writes.
        max_retries: attempts per write before it is dropped (logged).

    Example:
        >>> writer = MemoryWriter(store)                              # doctest: +SKIP
        >>> writer.submit(("user-42",), [Turn(text="I moved to Lisbon.")])  # doctest: +SKIP
        >>> writer.flush()                                            # doctest: +SKIP
        True
    """

    def __init__(self, store: Any, *, max_pending: int = 10_000, max_retries: int = 5) -> None:
        self._store = store
        self._q: queue.Queue = queue.Queue()
        self._pending = 0
        self._cond = threading.Condition()
        self.max_pending = max_pending
        self.max_retries = max_retries
        self.stats: dict[str, Any] = {"written": 0, "dropped": 0, "failed": 0,
                                      "last_ack_ms": None}
        self._thread: threading.Thread | None = None
        self._stopped = False
        _WRITERS.add(self)

    @property
    def store(self) -> Any:
        if callable(self._store) and not hasattr(self._store, "add"):
            self._store = self._store()
        return self._store

    @property
    def pending(self) -> int:
        """Writes submitted and not yet stored."""
        return self._pending

    def submit(self, namespace: tuple[str, ...], turns: list[Turn]) -> bool:
        """Queue turns for ``namespace``; returns False when the queue is full (dropped)."""
        if not turns:
            return True
        with self._cond:
            if self._stopped:
                raise RuntimeError("this MemoryWriter was stopped; create a new one.")
            if self._pending >= self.max_pending:
                self.stats["dropped"] += len(turns)
                log.error("memory writer queue full (%d): dropped %d turns of %s",
                          self._pending, len(turns), namespace)
                return False
            self._pending += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="ragtune-remember",
                                                daemon=True)
                self._thread.start()
        self._q.put((namespace, turns))
        return True

    def _work(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            namespace, turns = item
            delay = 0.2
            for attempt in range(self.max_retries):
                try:
                    t0 = time.perf_counter()
                    self.store.add(namespace, turns)
                    self.stats["last_ack_ms"] = round((time.perf_counter() - t0) * 1000, 3)
                    self.stats["written"] += len(turns)
                    break
                except InvalidInputError:
                    log.exception("memory writer: invalid turns for %s dropped", namespace)
                    self.stats["failed"] += len(turns)
                    break
                except Exception:
                    if attempt == self.max_retries - 1:
                        log.exception("memory writer: %d turns of %s not stored after %d tries",
                                      len(turns), namespace, self.max_retries)
                        self.stats["failed"] += len(turns)
                    else:
                        time.sleep(delay)
                        delay = min(delay * 3, 10.0)
            with self._cond:
                self._pending -= 1
                self._cond.notify_all()

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Wait until every submitted turn is stored; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._pending == 0, timeout=timeout)

    def stop(self, timeout: float | None = 30.0) -> bool:
        """Flush, then end the worker thread. Returns whether everything was stored."""
        ok = self.flush(timeout)
        with self._cond:
            self._stopped = True
            thread, self._thread = self._thread, None
        if thread is not None:
            self._q.put(None)
            thread.join(timeout)
        return ok


def _turns_to_remember(messages: Sequence[Any], config: RunnableConfig | None,
                       context: str = "") -> list[Turn]:
    """The latest human message and what followed it (human and AI text only).

    The memories injected into the prompt (``context``) are never stored: an AI reply
    loses the lines it copied from them (:func:`strip_injected_context`)."""
    start = None
    for i in range(len(messages) - 1, -1, -1):
        if getattr(messages[i], "type", None) == "human":
            start = i
            break
    if start is None:
        return []
    conf = (config or {}).get("configurable") or {}
    thread = conf.get("thread_id")
    thread = str(thread) if thread is not None else None
    out = []
    for msg in messages[start:]:
        if msg.type not in ("human", "ai"):
            continue
        try:
            text = message_text(msg.content)
        except InvalidInputError:
            continue
        if msg.type == "ai":
            text = strip_injected_context(text, context)
        if not text.strip():
            continue  # e.g. an AI message that only calls tools, or only echoed its prompt
        mid = getattr(msg, "id", None)
        if not mid:  # stable ids keep re-runs idempotent (the store dedupes on them)
            mid = str(uuid.UUID(bytes=hashlib.blake2b(
                f"{thread}|{msg.type}|{text}".encode(), digest_size=16).digest()))
        out.append(Turn(text=text, role=msg.type, message_id=str(mid), thread_id=thread,
                        speaker=getattr(msg, "name", None) or (
                            "user" if msg.type == "human" else "assistant"),
                        metadata={"source": "chat"}))
    return out


class RememberNode(RunnableLambda):
    """The remember node (sync and async); see :func:`create_remember_node`.

    Attributes:
        writer: the background :class:`MemoryWriter` (``None`` when writing inline).
    """

    def __init__(self, store: Any, *, background: bool = True, name: str = "remember") -> None:
        self._store = store
        self.background = background
        self.writer = MemoryWriter(store) if background else None
        self._tasks: set[asyncio.Task] = set()
        super().__init__(self._run, afunc=self._arun, name=name)

    @property
    def store(self) -> Any:
        if self.writer is not None:
            return self.writer.store
        if callable(self._store) and not hasattr(self._store, "add"):
            self._store = self._store()
        return self._store

    def _run(self, state: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        turns = _turns_to_remember(state.get("messages") or [], config,
                                   state.get("memory_context") or "")
        if turns:
            ns = namespace_from_config(config)
            if self.writer is not None:
                self.writer.submit(ns, turns)
            else:
                self.store.add(ns, turns)
        return {}

    async def _arun(self, state: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        turns = _turns_to_remember(state.get("messages") or [], config,
                                   state.get("memory_context") or "")
        if not turns:
            return {}
        ns = namespace_from_config(config)
        import inspect

        store = self._store
        if callable(store) and not hasattr(store, "add"):
            # Opening may start the embedded PostgreSQL: not on the event loop.
            store = await asyncio.to_thread(lambda: self.store)
        if inspect.iscoroutinefunction(getattr(store, "add", None)):
            if self.background:
                task = asyncio.get_running_loop().create_task(store.add(ns, turns))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            else:
                await store.add(ns, turns)
        elif self.writer is not None:
            self.writer.submit(ns, turns)
        else:
            await asyncio.to_thread(store.add, ns, turns)
        return {}

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Wait until every remembered turn is stored (sync writer)."""
        return self.writer.flush(timeout) if self.writer is not None else True

    async def aflush(self) -> None:
        """Await the async writes still in flight (async stores)."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self.writer is not None:
            await asyncio.to_thread(self.writer.flush)

    def stop(self, timeout: float | None = 30.0) -> bool:
        """Flush and stop the background writer."""
        return self.writer.stop(timeout) if self.writer is not None else True


def create_remember_node(store: Any, *, background: bool = True,
                         name: str = "remember") -> RememberNode:
    """A node that stores the latest human turn and the AI reply in the namespace's memory.

    Put it after your model node. Messages keep their ids, so a re-run stores nothing twice.
    The namespace comes from the run's configuration, like the memory node's.

    Args:
        store: a memory store (sync or async), or a callable opening one on first use.
        background: write in a background thread / task (the reply never waits); call
            ``node.flush()`` (or ``await node.aflush()``) before reading back, and
            ``node.stop()`` at shutdown. ``False`` writes before the node returns (a
            ``store.add`` is acknowledged in milliseconds).
        name: the node's run name.

    Example:
        >>> remember = create_remember_node(store)                       # doctest: +SKIP
        >>> builder.add_node("remember", remember)                       # doctest: +SKIP
        >>> remember.flush()                                             # doctest: +SKIP
        True
    """
    return RememberNode(store, background=background, name=name)


# -- the ready graph ------------------------------------------------------------------------

def route_condition(state: dict[str, Any]) -> Literal["retrieve", "generate"]:
    """After routing: fetch context for ``retrieval``/``hybrid``, else generate directly.

    Example:
        >>> route_condition({"memory_route": "hybrid"}), route_condition({"memory_route": "none"})
        ('retrieve', 'generate')
    """
    return "retrieve" if state.get("memory_route") in ("retrieval", "hybrid") else "generate"


class _Retrieve:
    def __init__(self, router: MemoryRouter) -> None:
        self.router = router

    def __call__(self, state: dict[str, Any]) -> dict[str, Any]:
        query = latest_human_text(state.get("messages") or []) or ""
        context, sources = self.router.context_for(query, state.get("memory_hits") or [])
        decision = dict(state.get("memory_decision") or {})
        decision["memory_tokens"] = -(-len(context) // 4)
        return {"memory_context": context, "memory_sources": sources, "memory_decision": decision}


class _Generate:
    def __init__(self, router: MemoryRouter, history_turns: int) -> None:
        self.router = router
        self.history_turns = history_turns

    def _prepare(self, state: dict[str, Any]) -> tuple[RouteResult, list[Any]]:
        messages = list(state.get("messages") or [])
        query = latest_human_text(messages) or ""
        result = RouteResult.from_state(state, query)
        humans = [i for i, m in enumerate(messages) if getattr(m, "type", None) == "human"]
        history = messages[:humans[-1] + 1] if humans else []
        return result, history

    def _update(self, answer: Any, result: RouteResult) -> dict[str, Any]:
        if not isinstance(answer, AIMessage):
            answer = AIMessage(content=getattr(answer, "content", str(answer)))
        answer.response_metadata = {**(answer.response_metadata or {}),
                                    "ragtune_route": result.route, "ragtune_model": result.model}
        out = result.as_state()
        out["messages"] = [answer]
        return out

    def sync(self, state: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        if not state.get("memory_decision"):
            return {}  # no human message was routed: nothing to answer
        result, history = self._prepare(state)
        if not result.query:
            return {}
        first = result.route
        answer, result = self.router.generate(result, history, config=config,
                                              history_turns=self.history_turns)
        if result.route != first:
            _record(result, config)
        return self._update(answer, result)

    async def async_(self, state: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        if not state.get("memory_decision"):
            return {}
        result, history = self._prepare(state)
        if not result.query:
            return {}
        first = result.route
        answer, result = await self.router.agenerate(result, history, config=config,
                                                     history_turns=self.history_turns)
        if result.route != first:
            await _arecord(result, config)
        return self._update(answer, result)


def memory_graph_builder(store: Any, *, registry: Any = None,
                         chat_model_factory: ChatModelFactory | None = None,
                         config: RouterConfig | None = None,
                         serve_config: ServeConfig | None = None, local_chat_model: Any = None,
                         background_remember: bool = True, history_turns: int = 4,
                         state_schema: type = MemoryState) -> StateGraph:
    """The uncompiled memory chat graph: route -> [retrieve] -> generate -> remember.

    ``route`` decides (one state query and one search), ``retrieve`` (only for the
    retrieval and hybrid routes) writes the context, ``generate`` answers with the route's
    model (falling back when a server fails), ``remember`` stores the two turns.

    The builder exposes its router and remember node as ``builder.memory_router`` and
    ``builder.remember_node`` (flush / stop it at shutdown).

    Args: see :func:`create_memory_graph`.
    """
    router = MemoryRouter(store, registry=registry, config=config, serve_config=serve_config,
                          chat_model_factory=chat_model_factory,
                          local_chat_model=local_chat_model)
    remember = RememberNode(store if not callable(store) or hasattr(store, "add")
                            else (lambda: router.store), background=background_remember)
    gen = _Generate(router, history_turns)
    builder = StateGraph(state_schema)
    builder.add_node("route", MemoryNode(router, with_context=False, name="route"))
    builder.add_node("retrieve", _Retrieve(router))
    builder.add_node("generate", RunnableLambda(gen.sync, afunc=gen.async_, name="generate"))
    builder.add_node("remember", remember)
    builder.add_edge(START, "route")
    builder.add_conditional_edges("route", route_condition, ["retrieve", "generate"])
    builder.add_edge("retrieve", "generate")
    builder.add_edge("generate", "remember")
    builder.add_edge("remember", END)
    builder.memory_router = router  # type: ignore[attr-defined]
    builder.remember_node = remember  # type: ignore[attr-defined]
    return builder


def create_memory_graph(store: Any, *, registry: Any = None,
                        chat_model_factory: ChatModelFactory | None = None,
                        config: RouterConfig | None = None,
                        serve_config: ServeConfig | None = None, local_chat_model: Any = None,
                        background_remember: bool = True, history_turns: int = 4,
                        checkpointer: Any = None, name: str = "memory_chat") -> Any:
    """A ready memory chat graph: route -> retrieve -> generate -> remember.

    Use it as is (a chatbot with long-term memory) or add it as a node of a larger graph
    (a subgraph sharing the ``messages`` key).

    Args:
        store: a memory store (sync, or async for ``ainvoke``), or a callable opening one.
        registry: the adapter registry (default: read from the store's tables).
        chat_model_factory: ``factory(adapter_or_None) -> chat model`` (default: vLLM).
        config: router thresholds and policy (``RouterConfig.from_env()``).
        serve_config: vLLM settings (``ServeConfig.from_env()``).
        local_chat_model: the in-process fallback model (or ``config.local_fallback``).
        background_remember: store turns in the background (see :func:`create_remember_node`).
        history_turns: earlier turns of the thread sent with the query.
        checkpointer: a LangGraph checkpointer for per-thread history.
        name: the compiled graph's name.

    Returns:
        The compiled graph; its router is ``graph.memory_router`` and its remember node
        ``graph.remember_node``.

    Example:
        >>> graph = create_memory_graph(store, chat_model_factory=lambda adapter: llm)  # doctest: +SKIP
        >>> graph.invoke({"messages": [("user", "hi!")]}, {"configurable": {"user_id": "7"}})  # doctest: +SKIP
    """
    builder = memory_graph_builder(store, registry=registry, chat_model_factory=chat_model_factory,
                                   config=config, serve_config=serve_config,
                                   local_chat_model=local_chat_model,
                                   background_remember=background_remember,
                                   history_turns=history_turns)
    graph = builder.compile(checkpointer=checkpointer, name=name)
    graph.memory_router = builder.memory_router  # type: ignore[attr-defined]
    graph.remember_node = builder.remember_node  # type: ignore[attr-defined]
    return graph
