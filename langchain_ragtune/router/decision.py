"""The routing decision: a pure function from a query and its signals to a route, with reasons.

Four routes (:data:`ROUTES`):

* ``parametric``: the namespace's current LoRA adapter answers, with no retrieved context;
* ``retrieval``: the base model answers from the top-k hybrid search results;
* ``hybrid``: the adapter answers with the retrieved context too (Parametric RAG found this
  the most robust combination);
* ``none``: no memory is needed (small talk, general knowledge).

:func:`decide` reads three plain inputs and no I/O, so it is table-testable and costs
microseconds: the words of the query (:mod:`.query`), the namespace's state
(:class:`NamespaceState`: its published adapter, the adapter's watermark, memories forgotten
since it was trained, which backends are up) and the retrieval signals of a cheap search
(:class:`Signals`: vector and lexical strength of the top hits, whether the best evidence is
newer than the adapter's watermark). Thresholds come from
:class:`~langchain_ragtune.config.RouterConfig`. Hard constraints always win over
preferences, in this order:

1. no generation backend at all -> :class:`~langchain_ragtune.errors.ServingError`;
2. PostgreSQL unreachable -> ``parametric`` if a usable adapter is known, ``none`` for small
   talk, else :class:`~langchain_ragtune.errors.StoreError`;
3. small talk or general knowledge with weak retrieval -> ``none``;
4. no adapter, an adapter that may hold forgotten memories, or vLLM down -> ``retrieval``
   (an adapter trained on a forgotten memory never answers until a refresh replaces it);
5. the best evidence is newer than the adapter's watermark -> ``fresh_route``;
6. then scope and strength: holistic -> ``parametric``; a question about when with some
   evidence -> ``temporal_route`` (``hybrid``); strong retrieval -> ``retrieval``
   (the memories answer it); nothing relevant found -> ``parametric``; partial evidence ->
   ``hybrid`` (the adapter with the context; ``retrieval`` when ``prefer_hybrid`` is off).

A learned policy (:mod:`.learned`, ``RouterConfig.policy="learned"``) replaces step 6 only:
the constraints above still hold, whatever it predicts.

Example:
    >>> from langchain_ragtune.config import RouterConfig
    >>> state = NamespaceState(namespace=("user-1",), adapter="user-1-v2-ab12cd", watermark_seq=40)
    >>> sig = Signals(hits=5, top_vector=0.71, lexical=0.8, relevant_seqs=(12, 30))
    >>> d = decide("Which city did Tomas move to?", state, sig, RouterConfig())
    >>> d.route, d.reasons[0]
    ('retrieval', 'specific question (scope -1.00) with strong retrieval (vector 0.71, lexical 0.80)')
    >>> decide("When did Tomas adopt Pepper?", state, sig, RouterConfig()).route
    'hybrid'
"""

from __future__ import annotations

from typing import Any

from langchain_ragtune.config import RouterConfig
from langchain_ragtune.errors import ServingError, StoreError
from langchain_ragtune.router.query import QueryFeatures, analyze_query
from langchain_ragtune.router.types import (
    _ADAPTER_ROUTES,
    ROUTES,
    NamespaceState,
    Route,
    RouteDecision,
    Signals,
)

__all__ = [
    "ROUTES",
    "NamespaceState",
    "Route",
    "RouteDecision",
    "Signals",
    "decide",
]

def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _strength(s: Signals, c: RouterConfig) -> tuple[bool, bool]:
    """(strong, weak) retrieval from the top hits' vector and lexical scores."""
    v = s.top_vector if s.top_vector is not None else 0.0
    strong = s.hits > 0 and (v >= c.strong_vector_score or s.lexical >= c.strong_lexical_score)
    weak = s.hits == 0 or (v < c.weak_vector_score and s.lexical < c.weak_lexical_score)
    return strong, weak


def decide(query: str | QueryFeatures, state: NamespaceState, signals: Signals | None = None,
           config: RouterConfig | None = None, *, policy: Any = None) -> RouteDecision:
    """Choose the memory route for one query (pure; no I/O once the policy is given).

    Args:
        query: the latest human message (or its precomputed :class:`QueryFeatures`).
        state: the namespace's adapter and backend state.
        signals: the retrieval signals (``None`` when no search could run).
        config: thresholds and policy; ``RouterConfig()`` by default.
        policy: the learned policy when ``config.router_policy == "learned"``
            (:func:`~langchain_ragtune.router.learned.load_policy`; the memory router
            passes the one it loaded). Without it, it is loaded from
            ``config.router_policy_path`` (cached per file).

    Returns:
        The :class:`RouteDecision`.

    Raises:
        ServingError: neither vLLM nor an in-process backend can generate.
        StoreError: PostgreSQL is unreachable and the namespace has no usable adapter, so
            no memory route can answer a question that needs memory.

    Example:
        >>> st = NamespaceState(namespace=("u",), adapter="u-v1-000000", watermark_seq=10)
        >>> decide("Overall, what kind of person am I?", st, Signals(hits=3, top_vector=0.4)).route
        'parametric'
        >>> decide("thanks!", st, Signals()).route
        'none'
    """
    c = config or RouterConfig()
    f = query if isinstance(query, QueryFeatures) else analyze_query(query)
    s = signals or Signals()
    reasons: list[str] = []
    fallbacks: list[str] = []
    strong, weak = _strength(s, c)
    fresh = s.fresh_hits(state.watermark_seq) if state.has_adapter else 0
    scores: dict[str, Any] = {
        **f.as_dict(), **s.as_dict(), "fresh_hits": fresh, "strong_retrieval": strong,
        "weak_retrieval": weak,
        "adapter": state.adapter, "adapter_version": state.adapter_version,
        "watermark_seq": state.watermark_seq, "forgotten": state.forgotten,
    }

    def done(route: Route, policy: str = "rules") -> RouteDecision:
        return RouteDecision(route=route, reasons=reasons, scores=scores, fallbacks=fallbacks,
                             policy=policy, adapter=state.adapter if route in _ADAPTER_ROUTES
                             else None)

    # 1. Something must generate.
    if not state.serving_available:
        if not state.local_backend:
            raise ServingError(
                f"vLLM is unreachable and no in-process backend is configured, so namespace "
                f"{state.namespace!r} cannot be answered. Start the server (`ragtune serve`), "
                "check RAGTUNE_VLLM_URLS, or enable the in-process fallback "
                "(RouterConfig(local_fallback=True), RAGTUNE_LOCAL_FALLBACK=1).")
        fallbacks.append("serving_unreachable:local_backend")

    usable_adapter = (state.has_adapter and state.forgotten == 0 and state.serving_available)
    smalltalk = c.allow_none and f.smalltalk
    general = (c.allow_none and f.general >= c.general_threshold and not f.personal and not strong)

    # 2. PostgreSQL down: no search, no registry; only the weights (last known adapter) remain.
    if not state.store_available:
        fallbacks.append("store_unreachable")
        if smalltalk or general:
            reasons.append("PostgreSQL unreachable; small talk / general knowledge needs no memory")
            return done("none")
        if usable_adapter:
            reasons.append(f"PostgreSQL unreachable: answering from adapter {state.adapter} "
                           "(last known current version) without retrieval")
            return done("parametric")
        why = ("it has no published adapter" if not state.has_adapter else
               "its adapter may hold forgotten memories" if state.forgotten else
               "vLLM, which serves its adapter, is down too")
        raise StoreError(
            f"PostgreSQL is unreachable and namespace {state.namespace!r} cannot fall back to "
            f"parametric memory because {why}. Check RAGTUNE_PG_URI and that the server is "
            "running; answers resume when it is back.")

    # 3. No memory needed.
    if smalltalk:
        reasons.append("small talk: no memory needed")
        return done("none")
    if general and weak:
        reasons.append(f"general knowledge (score {f.general:.2f}) and nothing relevant in memory "
                       f"(vector {_fmt(s.top_vector)}, lexical {s.lexical:.2f})")
        return done("none")

    # 4. Only retrieval can answer.
    if not usable_adapter:
        if not state.has_adapter:
            reasons.append("no published adapter for this namespace")
        elif state.forgotten:
            reasons.append(f"adapter {state.adapter} may hold {state.forgotten} forgotten "
                           "memories: never used until a refresh replaces it")
        else:
            reasons.append("vLLM unreachable: the in-process backend answers from retrieval")
        return done("retrieval")

    # 5. Evidence the adapter cannot know.
    if s.best_seq is not None and s.best_seq > state.watermark_seq:
        reasons.append(f"best evidence (seq {s.best_seq}) is newer than the adapter's watermark "
                       f"(seq {state.watermark_seq}): the adapter cannot know it")
        return done(c.fresh_route)  # type: ignore[arg-type]
    if fresh and not strong:
        reasons.append(f"{fresh} relevant memories are newer than the adapter's watermark "
                       f"(seq {state.watermark_seq})")
        return done("hybrid" if c.prefer_hybrid else c.fresh_route)  # type: ignore[arg-type]

    # 6. Preference: learned policy or rules over scope and strength.
    if c.router_policy == "learned":
        if policy is None:
            from langchain_ragtune.router.learned import load_policy

            policy = load_policy(c.router_policy_path)
        route, probs = policy.predict_one(f, s, scores, has_adapter=state.has_adapter)
        scores["learned_probs"] = probs
        reasons.append(f"learned policy ({policy.method}, {policy.n_train} labels) chose {route} "
                       f"(p={probs.get(route, 0.0):.2f})")
        if route == "none" and not c.allow_none:
            route = "retrieval"
        return done(route, policy="learned")

    holistic = f.scope >= c.holistic_threshold
    specific = f.scope <= -c.specific_threshold
    if holistic:
        reasons.append(f"holistic question (scope {f.scope:+.2f}): the tuned adapter holds the "
                       "whole history")
        return done("parametric")
    if f.temporal and not weak and c.temporal_route != "retrieval":
        reasons.append(f"a question about when: the adapter was trained on the dates of the "
                       f"history's facts ({c.temporal_route})")
        return done(c.temporal_route)  # type: ignore[arg-type]
    if strong:
        # The retrieved memories answer it: the adapter would only add its slower decoding
        # (2.3x on vLLM's CPU LoRA path) and its trained answer style.
        kind = "specific question" if specific else "question"
        reasons.append(f"{kind} (scope {f.scope:+.2f}) with strong retrieval "
                       f"(vector {_fmt(s.top_vector)}, lexical {s.lexical:.2f})")
        return done("retrieval")
    if weak:
        reasons.append(f"retrieval found nothing relevant (vector {_fmt(s.top_vector)}, lexical "
                       f"{s.lexical:.2f}): the adapter may know it from training")
        return done("parametric")
    reasons.append(f"moderate retrieval (vector {_fmt(s.top_vector)}, lexical {s.lexical:.2f}) "
                   f"for a question of scope {f.scope:+.2f}: "
                   + ("the adapter answers with the partial evidence" if c.prefer_hybrid
                      else "the base model answers from the partial evidence"))
    return done("hybrid" if c.prefer_hybrid else "retrieval")
