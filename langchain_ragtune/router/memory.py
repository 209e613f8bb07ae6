"""The memory router's I/O: namespace state, the signals' search, the decision, generation.

:class:`MemoryRouter` is what the graph nodes (:mod:`.nodes`) wrap. Per query it makes one
state query (the namespace's current adapter and how many of its memories were forgotten
since, cached for ``state_ttl_s``), one hybrid search (its scores are the retrieval signals
and its hits the context), then calls the pure :func:`~.decision.decide`. Generation picks
the model the route needs: the namespace's adapter on vLLM (``parametric``, ``hybrid``) or
the base model (``retrieval``, ``none``).

Degraded modes, each recorded in the decision's ``fallbacks``:

* PostgreSQL unreachable: no search and no registry; the last known adapter of the
  namespace answers (``parametric``), or a clear :class:`~langchain_ragtune.errors.StoreError`.
  The store is not retried for ``store_retry_s``.
* vLLM unreachable: the in-process transformers backend answers from retrieval when
  ``local_fallback`` is on, else a clear :class:`~langchain_ragtune.errors.ServingError`.
  vLLM is not retried for ``serving_retry_s``.
* the adapter is not loaded on the server (404): the base model answers from retrieval.

The namespace is an argument, always taken by the nodes from the run's configuration
(``configurable.user_id`` or ``configurable.namespace``), never from model output.

Example:
    >>> router = MemoryRouter(store)                                     # doctest: +SKIP
    >>> result = router.route("When did I adopt Biscuit?", ("user-42",))  # doctest: +SKIP
    >>> result.decision.route, result.model                              # doctest: +SKIP
    ('retrieval', 'base')
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

from langchain_ragtune.config import RouterConfig, ServeConfig
from langchain_ragtune.errors import (
    ConfigError,
    EndpointUnreachableError,
    ServingError,
    StoreError,
)
from langchain_ragtune.router.decision import decide
from langchain_ragtune.router.prompts import format_context, last_turns, system_prompt, user_prompt
from langchain_ragtune.router.query import analyze_query, is_echo
from langchain_ragtune.router.types import NamespaceState, RouteDecision, Signals
from langchain_ragtune.store.types import validate_namespace

__all__ = [
    "ChatModelFactory",
    "MemoryRouter",
    "RouteResult",
    "is_unreachable",
    "namespace_from_config",
    "vllm_chat_model_factory",
]

log = logging.getLogger(__name__)

#: ``factory(adapter_name_or_None) -> BaseChatModel``: the chat model serving an adapter
#: (``None``: the base model). The default is :func:`vllm_chat_model_factory`.
ChatModelFactory = Callable[[str | None], Any]


def namespace_from_config(config: Any) -> tuple[str, ...]:
    """The namespace of a run, from its trusted configuration only.

    ``configurable.namespace`` (a tuple/list of labels, or ``"a/b"``) wins; otherwise
    ``configurable.user_id`` gives ``("user-<id>",)``. Model output never decides it.

    Raises:
        ConfigError: neither is set.

    Example:
        >>> namespace_from_config({"configurable": {"user_id": "42"}})
        ('user-42',)
        >>> namespace_from_config({"configurable": {"namespace": "org/ann"}})
        ('org', 'ann')
    """
    conf = (config or {}).get("configurable") or {}
    ns = conf.get("namespace")
    if ns is not None:
        if isinstance(ns, str):
            ns = tuple(p for p in ns.split("/") if p) or (ns,)
        return validate_namespace(tuple(ns) if isinstance(ns, list) else ns)
    user = conf.get("user_id")
    if user is not None and str(user).strip():
        return validate_namespace((f"user-{user}",))
    raise ConfigError(
        "the memory node needs the run's namespace: invoke the graph with "
        "config={'configurable': {'user_id': '42'}} (namespace ('user-42',)) or "
        "{'configurable': {'namespace': ('org', 'user-42')}}.")


def is_unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` means the model server could not be reached (not a bad request)."""
    if isinstance(exc, (EndpointUnreachableError, ConnectionError)):
        return True
    names = {c.__name__ for c in type(exc).__mro__}
    return bool(names & {"APIConnectionError", "APITimeoutError", "ConnectError",
                         "ConnectTimeout", "RemoteProtocolError"})


def _is_not_found(exc: BaseException) -> bool:
    return type(exc).__name__ == "NotFoundError" or getattr(exc, "status_code", None) == 404


def _store_down(exc: BaseException) -> bool:
    """A connection-level PostgreSQL failure (not a bug or a missing table)."""
    import psycopg

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, psycopg.OperationalError):
            return True
        seen = seen.__cause__
    return isinstance(exc, StoreError) and "cannot reach PostgreSQL" in str(exc)


def vllm_chat_model_factory(serve_config: ServeConfig | None = None, *, max_tokens: int = 128,
                            cache_size: int = 64, **kwargs: Any) -> ChatModelFactory:
    """Chat models on vLLM, one per served name (the base model or an adapter), cached.

    The name is pinned (no registry look-up at request time): the router already read the
    namespace's current adapter, and pinning it keeps answering when PostgreSQL is down.

    Example:
        >>> factory = vllm_chat_model_factory(ServeConfig(port=9000))       # doctest: +SKIP
        >>> factory("user-42-v3-ab12cd").model_name                          # doctest: +SKIP
        'user-42-v3-ab12cd'
    """
    cfg = serve_config or ServeConfig.from_env()
    cache: OrderedDict[str, Any] = OrderedDict()
    lock = threading.Lock()

    def factory(adapter: str | None) -> Any:
        from langchain_ragtune.serving.chat import create_chat_model

        name = adapter or cfg.served_model_name
        with lock:
            model = cache.get(name)
            if model is None:
                model = cache[name] = create_chat_model(None, config=cfg, model=name,
                                                        max_tokens=max_tokens, **kwargs)
                if len(cache) > cache_size:
                    cache.popitem(last=False)
            cache.move_to_end(name)
        return model

    factory.serve_config = cfg  # type: ignore[attr-defined]
    return factory


@dataclass
class RouteResult:
    """The router's answer to "how should this query be answered?".

    Attributes:
        namespace: the namespace.
        query: the query.
        decision: the route, reasons, scores and fallbacks.
        hits: the search results in dict form (``SearchResult.as_dict()``), best first.
        context: the memories written into the prompt (empty for parametric and none).
        sources: message ids each context entry covers (provenance).
        model: the served name that answers: the adapter, or the base model's name
            (``local:<name>`` on the in-process backend).
        backend: ``"vllm"`` (the chat model factory) or ``"local"`` (in-process).
        timings_ms: ``state``, ``search``, ``decide`` (and ``generate`` once answered).
    """

    namespace: tuple[str, ...]
    query: str
    decision: RouteDecision
    hits: list[dict[str, Any]] = field(default_factory=list)
    context: str = ""
    sources: list[list[str]] = field(default_factory=list)
    model: str = "base"
    backend: str = "vllm"
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def route(self) -> str:
        return self.decision.route

    @property
    def memory_tokens(self) -> int:
        """Estimated tokens of memory added to the prompt (4 characters a token)."""
        return -(-len(self.context) // 4)

    def decision_dict(self) -> dict[str, Any]:
        """The decision plus where it ran: what graph state and run metadata keep."""
        d = self.decision.as_dict()
        d.update(namespace=list(self.namespace), model=self.model, backend=self.backend,
                 timings_ms=dict(self.timings_ms), memory_tokens=self.memory_tokens)
        return d

    def as_state(self, *, hits: bool = False) -> dict[str, Any]:
        """The graph state update (``memory_*`` keys) for this result."""
        out = {"memory_route": self.decision.route, "memory_context": self.context,
               "memory_model": self.model, "memory_decision": self.decision_dict(),
               "memory_sources": self.sources}
        if hits:
            out["memory_hits"] = self.hits
        return out

    @classmethod
    def from_state(cls, state: dict[str, Any], query: str) -> "RouteResult":
        """Rebuild a result from graph state written by :meth:`as_state`."""
        d = dict(state.get("memory_decision") or {})
        return cls(namespace=tuple(d.get("namespace") or ()), query=query,
                   decision=RouteDecision.from_dict(d), hits=list(state.get("memory_hits") or []),
                   context=state.get("memory_context") or "",
                   sources=list(state.get("memory_sources") or []),
                   model=state.get("memory_model") or d.get("model") or "base",
                   backend=d.get("backend", "vllm"), timings_ms=dict(d.get("timings_ms") or {}))


def _hit_dict(hit: Any) -> dict[str, Any]:
    d = hit.as_dict() if hasattr(hit, "as_dict") else dict(hit)
    d.pop("metadata", None)  # callers' metadata stays out of graph state and traces
    return d


class MemoryRouter:
    """Decides, per query, which memory answers, and prepares the prompt and the model.

    Args:
        store: a :class:`~langchain_ragtune.store.MemoryStore` (or
            :class:`~langchain_ragtune.store.AsyncMemoryStore` for async graphs), or a
            zero-argument callable returning one (opened on first use, e.g. in
            ``graphs/*.py`` where importing must not connect).
        registry: anything with ``current(namespace)`` returning an adapter record
            (:class:`~langchain_ragtune.tuning.registry.AdapterRegistry`); by default the
            store's registry tables are read in one query together with the forgotten count.
        config: thresholds and policy (``RouterConfig.from_env()`` when omitted).
        serve_config: where vLLM is (``ServeConfig.from_env()`` when omitted).
        chat_model_factory: ``factory(adapter_or_None) -> chat model``; default: vLLM
            (:func:`vllm_chat_model_factory`).
        local_chat_model: the in-process fallback model (a chat model, or a zero-argument
            callable making one); default: ``InProcessChatModel`` when
            ``config.local_fallback`` is on.
        store_timeout_s: longest wait for a PostgreSQL connection before the store counts
            as unreachable.

    Example:
        >>> router = MemoryRouter(store, config=RouterConfig(k=4))          # doctest: +SKIP
        >>> router.route("What kind of person am I?", ("user-42",)).route   # doctest: +SKIP
        'parametric'
    """

    def __init__(self, store: Any, *, registry: Any = None, config: RouterConfig | None = None,
                 serve_config: ServeConfig | None = None,
                 chat_model_factory: ChatModelFactory | None = None,
                 local_chat_model: Any = None, store_timeout_s: float = 3.0) -> None:
        self._store = store
        self._store_lock = threading.Lock()
        self.registry = registry
        self.config = config or RouterConfig.from_env()
        self._serve_config = serve_config
        self._factory = chat_model_factory
        self._local = local_chat_model
        self.store_timeout_s = store_timeout_s
        self._states: dict[tuple[str, ...], tuple[float, NamespaceState]] = {}
        self._store_down_until = 0.0
        self._serving_down_until = 0.0
        self._missing: dict[str, float] = {}  # adapter name -> retry time
        self._lock = threading.Lock()

    # -- collaborators ---------------------------------------------------------------------

    @property
    def store(self) -> Any:
        """The memory store (opened on first use when a factory was given)."""
        if callable(self._store) and not hasattr(self._store, "search"):
            with self._store_lock:
                if callable(self._store) and not hasattr(self._store, "search"):
                    self._store = self._store()
        return self._store

    async def aget_store(self) -> Any:
        """The memory store for async callers: opened in a worker thread on first use.

        Opening may start the embedded PostgreSQL (folders, a server process, a schema
        check): blocking work that must never run on the event loop of an ASGI server such
        as ``langgraph dev``.
        """
        if callable(self._store) and not hasattr(self._store, "search"):
            return await asyncio.to_thread(lambda: self.store)
        return self._store

    @property
    def is_async_store(self) -> bool:
        return inspect.iscoroutinefunction(getattr(self.store, "search", None))

    @property
    def serve_config(self) -> ServeConfig:
        if self._serve_config is None:
            self._serve_config = ServeConfig.from_env()
        return self._serve_config

    @property
    def factory(self) -> ChatModelFactory:
        if self._factory is None:
            self._factory = vllm_chat_model_factory(self.serve_config,
                                                    max_tokens=self.config.answer_max_tokens)
        return self._factory

    @property
    def has_local_backend(self) -> bool:
        return self._local is not None or self.config.local_fallback

    def local_model(self) -> Any:
        """The in-process fallback chat model (created on first use)."""
        if self._local is None:
            if not self.config.local_fallback:
                raise ServingError("no in-process backend is configured; set "
                                   "RouterConfig(local_fallback=True) (RAGTUNE_LOCAL_FALLBACK=1) "
                                   "or pass local_chat_model.")
            from langchain_ragtune.serving.chat import InProcessChatModel

            self._local = InProcessChatModel(max_tokens=self.config.answer_max_tokens)
        elif callable(self._local) and not hasattr(self._local, "invoke"):
            self._local = self._local()
        return self._local

    # -- circuit breakers ------------------------------------------------------------------

    def mark_store_down(self, exc: BaseException | None = None) -> None:
        """Stop asking PostgreSQL for ``store_retry_s`` (it just failed)."""
        with self._lock:
            self._store_down_until = time.monotonic() + self.config.store_retry_s
        log.warning("PostgreSQL unreachable (%s); retrying in %.0f s", exc,
                    self.config.store_retry_s)

    def mark_serving_down(self, exc: BaseException | None = None) -> None:
        """Stop sending to vLLM for ``serving_retry_s`` (it just failed)."""
        with self._lock:
            self._serving_down_until = time.monotonic() + self.config.serving_retry_s
        log.warning("vLLM unreachable (%s); retrying in %.0f s", exc, self.config.serving_retry_s)

    def mark_adapter_missing(self, name: str) -> None:
        """The server does not have adapter ``name``: route around it for ``serving_retry_s``."""
        with self._lock:
            self._missing[name] = time.monotonic() + self.config.serving_retry_s

    @property
    def store_up(self) -> bool:
        return time.monotonic() >= self._store_down_until

    @property
    def serving_up(self) -> bool:
        return time.monotonic() >= self._serving_down_until

    # -- namespace state -------------------------------------------------------------------

    def _state_from_row(self, ns: tuple[str, ...], rec: Any, forgotten: int) -> NamespaceState:
        if rec is None:
            return NamespaceState(namespace=ns)
        get = rec.get if isinstance(rec, dict) else (lambda k: getattr(rec, k, None))
        if tuple(get("namespace") or ns) != ns:  # never another namespace's adapter
            log.error("registry returned adapter %s of %s for %s; ignoring it", get("name"),
                      get("namespace"), ns)
            return NamespaceState(namespace=ns)
        return NamespaceState(namespace=ns, adapter=get("name"), adapter_version=get("version"),
                              watermark_seq=int(get("watermark_seq") or 0),
                              adapter_created_at=get("created_at"), forgotten=int(forgotten or 0))

    def _read_state(self, ns: tuple[str, ...]) -> NamespaceState:
        store = self.store
        if self.registry is not None:
            rec = self.registry.current(ns)
            forgotten = 0
            if rec is not None:
                forgotten = store.forgotten_since(ns, watermark=rec.watermark_seq,
                                                  since=rec.created_at)
            return self._state_from_row(ns, rec, forgotten)
        row = store.router_state(ns, timeout_s=self.store_timeout_s)
        return self._state_from_row(ns, row, row["forgotten"] if row else 0)

    async def _aread_state(self, ns: tuple[str, ...]) -> NamespaceState:
        store = await self.aget_store()
        if not inspect.iscoroutinefunction(getattr(store, "router_state", None)):
            return await asyncio.to_thread(self._read_state, ns)
        if self.registry is not None:
            rec = await asyncio.to_thread(self.registry.current, ns)
            forgotten = 0
            if rec is not None:
                forgotten = await store.forgotten_since(ns, watermark=rec.watermark_seq,
                                                        since=rec.created_at)
            return self._state_from_row(ns, rec, forgotten)
        row = await store.router_state(ns, timeout_s=self.store_timeout_s)
        return self._state_from_row(ns, row, row["forgotten"] if row else 0)

    def _cached_state(self, ns: tuple[str, ...], fresh: bool = True) -> NamespaceState | None:
        hit = self._states.get(ns)
        if hit is None:
            return None
        if fresh and time.monotonic() - hit[0] > self.config.state_ttl_s:
            return None
        return hit[1]

    def _finish_state(self, ns: tuple[str, ...], state: NamespaceState | None) -> NamespaceState:
        """Add backend availability to a state (the last known one when the store is down)."""
        if state is None:
            state = replace(self._cached_state(ns, fresh=False) or NamespaceState(namespace=ns),
                            store_available=False)
        if state.adapter and self._missing.get(state.adapter, 0.0) > time.monotonic():
            state = replace(state, adapter=None, adapter_version=None)
        return replace(state, serving_available=self.serving_up,
                       local_backend=self.has_local_backend)

    def namespace_state(self, namespace: Any) -> NamespaceState:
        """The namespace's adapter state and backend availability (cached ``state_ttl_s``)."""
        ns = validate_namespace(namespace)
        state = self._cached_state(ns)
        if state is None and self.store_up:
            try:
                state = self._read_state(ns)
                self._states[ns] = (time.monotonic(), state)
            except Exception as exc:
                if not _store_down(exc):
                    raise
                self.mark_store_down(exc)
        return self._finish_state(ns, state)

    async def anamespace_state(self, namespace: Any) -> NamespaceState:
        """Async twin of :meth:`namespace_state`."""
        ns = validate_namespace(namespace)
        state = self._cached_state(ns)
        if state is None and self.store_up:
            try:
                state = await self._aread_state(ns)
                self._states[ns] = (time.monotonic(), state)
            except Exception as exc:
                if not _store_down(exc):
                    raise
                self.mark_store_down(exc)
        return self._finish_state(ns, state)

    def invalidate(self, namespace: Any = None) -> None:
        """Forget cached adapter state (of one namespace, or all): e.g. right after a publish."""
        if namespace is None:
            self._states.clear()
        else:
            self._states.pop(validate_namespace(namespace), None)

    # -- routing ---------------------------------------------------------------------------

    def context_for(self, query: str, hits: Sequence[Any]) -> tuple[str, list[list[str]]]:
        """The prompt context from search hits (echoes of the query itself left out)."""
        terms = analyze_query(query).terms
        kept = [h for h in hits if not is_echo(
            terms, h["text"] if isinstance(h, dict) else h.memory.text, self.config.echo_threshold)]
        return format_context(kept, max_chars=self.config.max_context_chars)

    def _finish(self, query: str, state: NamespaceState, results: list[Any], embedding: Any,
                t: dict[str, float], with_context: bool) -> RouteResult:
        t0 = time.perf_counter()
        feats = analyze_query(query)
        signals = (Signals.from_results(feats, results, config=self.config,
                                        query_embedding=embedding)
                   if state.store_available else None)
        decision = decide(feats, state, signals, self.config, policy=self._policy())
        raw = self._cached_state(state.namespace, fresh=False)
        if state.adapter is None and raw is not None and raw.adapter \
                and self._missing.get(raw.adapter, 0.0) > time.monotonic():
            decision.fallbacks.append("adapter_not_loaded")
            decision.reasons.append(f"adapter {raw.adapter} is not loaded on the server")
        t["decide"] = (time.perf_counter() - t0) * 1000
        hits = [_hit_dict(r) for r in results]
        context, sources = ("", [])
        if with_context and decision.uses_context:
            context, sources = self.context_for(query, hits)
        local = not state.serving_available
        model = decision.adapter if decision.uses_adapter else self.serve_config.served_model_name
        return RouteResult(namespace=state.namespace, query=query, decision=decision, hits=hits,
                           context=context, sources=sources,
                           model=f"local:{model}" if local else str(model),
                           backend="local" if local else "vllm",
                           timings_ms={k: round(v, 3) for k, v in t.items()})

    def _should_search(self, state: NamespaceState, query: str) -> bool:
        # Small talk is answered without memory whatever the search finds: save the search.
        return state.store_available and not (self.config.allow_none
                                              and analyze_query(query).smalltalk)

    def _store_failed(self, exc: Exception, state: NamespaceState) -> NamespaceState:
        """The state after a failed search: PostgreSQL marked down (the decision then falls
        back), or ``exc`` re-raised when it is not the store being down."""
        if not _store_down(exc):
            raise exc
        self.mark_store_down(exc)
        return replace(state, store_available=False)

    def _needs_embedding(self) -> bool:
        return self.config.router_policy == "learned"

    def _policy(self) -> Any:
        """The learned policy when the config asks for one (loaded once per file version),
        so the decision itself reads no file."""
        if self.config.router_policy != "learned":
            return None
        from langchain_ragtune.router.learned import load_policy

        return load_policy(self.config.router_policy_path)

    def route(self, query: str, namespace: Any, *, with_context: bool = True) -> RouteResult:
        """Decide how to answer ``query`` for ``namespace`` and gather its context.

        Args:
            query: the latest human message.
            namespace: from the run's configuration (see :func:`namespace_from_config`).
            with_context: also format the retrieval context (the ready graph does it in
                its own ``retrieve`` step from ``hits``).

        Raises:
            StoreError: PostgreSQL is down and no adapter can answer (see :func:`decide`).
            ServingError: no backend can generate.
        """
        t: dict[str, float] = {}
        t0 = time.perf_counter()
        state = self.namespace_state(namespace)
        t["state"] = _ms_since(t0)
        results: list[Any] = []
        embedding = None
        if self._should_search(state, query):
            t0 = time.perf_counter()
            try:
                results = self.store.search(state.namespace, query, k=self.config.k,
                                            window=self.config.window)
                if self._needs_embedding():
                    embedding = self.store.embeddings.embed_query(query)
            except Exception as exc:
                state = self._store_failed(exc, state)
            t["search"] = _ms_since(t0)
        return self._finish(query, state, results, embedding, t, with_context)

    async def aroute(self, query: str, namespace: Any, *, with_context: bool = True
                     ) -> RouteResult:
        """Async twin of :meth:`route` (a sync store runs in a worker thread)."""
        if not inspect.iscoroutinefunction(getattr(await self.aget_store(), "search", None)):
            return await asyncio.to_thread(self.route, query, namespace,
                                           with_context=with_context)
        t: dict[str, float] = {}
        t0 = time.perf_counter()
        state = await self.anamespace_state(namespace)
        t["state"] = _ms_since(t0)
        results: list[Any] = []
        embedding = None
        if self._should_search(state, query):
            t0 = time.perf_counter()
            try:
                results = await self.store.search(state.namespace, query, k=self.config.k,
                                                  window=self.config.window)
                if self._needs_embedding():
                    embedding = await asyncio.to_thread(self.store.embeddings.embed_query, query)
            except Exception as exc:
                state = self._store_failed(exc, state)
            t["search"] = _ms_since(t0)
        return self._finish(query, state, results, embedding, t, with_context)

    def force(self, result: RouteResult, route: str, *, adapter: str | None = None,
              reason: str = "forced") -> RouteResult:
        """A copy of ``result`` answered through ``route``, whatever the router chose.

        Benchmarks and evaluations compare the routes on the same query and the same hits;
        the context is rebuilt for the routes that use it.

        Args:
            result: what :meth:`route` returned for the query.
            route: ``none``, ``retrieval``, ``parametric`` or ``hybrid``.
            adapter: the adapter for ``parametric``/``hybrid``; default: the namespace's
                current one.
            reason: recorded as the decision's only reason.

        Raises:
            ConfigError: an unknown route, or an adapter route for a namespace without one.
        """
        from copy import deepcopy

        if route not in ("none", "retrieval", "parametric", "hybrid"):
            raise ConfigError(f"route={route!r}: use none, retrieval, parametric or hybrid.")
        uses_adapter = route in ("parametric", "hybrid")
        if uses_adapter and adapter is None:
            adapter = result.decision.adapter or self.namespace_state(result.namespace).adapter
            if adapter is None:
                raise ConfigError(
                    f"route {route!r} needs an adapter, and namespace {result.namespace!r} has "
                    "none published: run `ragtune refresh --namespace ...` first.")
        out = deepcopy(result)
        out.decision = RouteDecision(route=route, reasons=[f"{reason}: {route}"],  # type: ignore[arg-type]
                                     adapter=adapter if uses_adapter else None)
        out.context, out.sources = ("", [])
        if route in ("retrieval", "hybrid"):
            out.context, out.sources = self.context_for(result.query, result.hits)
        name = adapter if uses_adapter else self.serve_config.served_model_name
        local = result.backend == "local"
        out.model = f"local:{name}" if local else str(name)
        return out

    # -- generation ------------------------------------------------------------------------

    def messages(self, result: RouteResult, history: Sequence[Any] = (),
                 history_turns: int = 4) -> list[Any]:
        """The prompt for ``result``: the route's system prompt (with context), the last
        ``history_turns`` turns before the query, and the query."""
        from langchain_core.messages import HumanMessage, SystemMessage

        msgs: list[Any] = [SystemMessage(system_prompt(result.route))]
        msgs += last_turns(list(history), history_turns) if history else []
        msgs.append(HumanMessage(user_prompt(result.route, result.query, result.context)))
        return msgs

    def chat_model(self, result: RouteResult) -> Any:
        """The chat model ``result`` is answered with."""
        if result.backend == "local":
            return self.local_model()
        return self.factory(result.decision.adapter if result.decision.uses_adapter else None)

    def _run_config(self, result: RouteResult, config: Any) -> dict[str, Any]:
        # The route travels with the model call too, so LangSmith shows it on the LLM run.
        md = {"ragtune_route": result.route, "ragtune_model": result.model,
              "ragtune_fallbacks": list(result.decision.fallbacks)}
        out = dict(config or {})
        out["metadata"] = {**(out.get("metadata") or {}), **md}
        out["tags"] = [*(out.get("tags") or []), f"ragtune:{result.route}"]
        return out

    def generate(self, result: RouteResult, history: Sequence[Any] = (), *,
                 config: Any = None, history_turns: int = 4) -> tuple[Any, RouteResult]:
        """Answer ``result``'s query; on a server failure, fall back and record it.

        Returns:
            ``(AIMessage, result)``: ``result`` is a new one when a fallback re-routed.

        Raises:
            ServingError: vLLM is down and no in-process backend is configured.
        """
        for attempt in range(3):
            t0 = time.perf_counter()
            try:
                answer = self.chat_model(result).invoke(
                    self.messages(result, history, history_turns),
                    config=self._run_config(result, config))
            except Exception as exc:
                self._after_failure(result, exc, attempt)
                result = self._merge(result, self.route(result.query, result.namespace))
                continue
            result.timings_ms["generate"] = round((time.perf_counter() - t0) * 1000, 3)
            return answer, result
        raise AssertionError("unreachable")  # pragma: no cover

    async def agenerate(self, result: RouteResult, history: Sequence[Any] = (), *,
                        config: Any = None, history_turns: int = 4) -> tuple[Any, RouteResult]:
        """Async twin of :meth:`generate`."""
        for attempt in range(3):
            t0 = time.perf_counter()
            try:
                answer = await self.chat_model(result).ainvoke(
                    self.messages(result, history, history_turns),
                    config=self._run_config(result, config))
            except Exception as exc:
                self._after_failure(result, exc, attempt)
                result = self._merge(result, await self.aroute(result.query, result.namespace))
                continue
            result.timings_ms["generate"] = round((time.perf_counter() - t0) * 1000, 3)
            return answer, result
        raise AssertionError("unreachable")  # pragma: no cover

    def _after_failure(self, result: RouteResult, exc: Exception, attempt: int) -> None:
        """Mark what failed so the next decision routes around it, or re-raise."""
        if attempt < 2 and result.backend != "local" and is_unreachable(exc):
            self.mark_serving_down(exc)
            if not self.has_local_backend:
                from langchain_ragtune.serving.chat import endpoint_for

                cfg = getattr(self._factory, "serve_config", None)  # the vLLM factory's
                where = endpoint_for(cfg) if cfg is not None else "the model server"
                raise ServingError(
                    f"vLLM at {where} is unreachable ({type(exc).__name__}: {exc}) and no "
                    "in-process backend is configured. Start the server (`ragtune serve`), "
                    "check RAGTUNE_VLLM_URLS, or enable the fallback "
                    "(RAGTUNE_LOCAL_FALLBACK=1).") from exc
            return
        if attempt < 2 and result.backend != "local" and result.decision.uses_adapter \
                and _is_not_found(exc):
            log.warning("adapter %s is not loaded on the server (%s); answering from retrieval",
                        result.decision.adapter, exc)
            self.mark_adapter_missing(str(result.decision.adapter))
            return
        raise exc

    @staticmethod
    def _merge(old: RouteResult, new: RouteResult) -> RouteResult:
        """Keep the failed attempt's fallbacks in the new decision, and say what happened."""
        for f in old.decision.fallbacks:
            if f not in new.decision.fallbacks:
                new.decision.fallbacks.insert(0, f)
        new.decision.scores["first_route"] = old.route
        return new


def _ms_since(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000
