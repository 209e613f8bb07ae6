"""The router's vocabulary: routes, what it knows of a namespace, search signals, decisions.

Plain data shared by the decision (:mod:`.decision`), the learned policy (:mod:`.learned`)
and the memory router (:mod:`.memory`), so none of them imports another for a type.

Example:
    >>> ROUTES
    ('none', 'parametric', 'retrieval', 'hybrid')
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable, Literal, Sequence

from langchain_ragtune.config import RouterConfig
from langchain_ragtune.router.query import QueryFeatures, content_terms, is_echo

__all__ = ["ROUTES", "NamespaceState", "Route", "RouteDecision", "Signals"]

Route = Literal["parametric", "retrieval", "hybrid", "none"]
#: Every route, cheapest first (ties in labels are broken in this order).
ROUTES: tuple[Route, ...] = ("none", "parametric", "retrieval", "hybrid")
_ADAPTER_ROUTES = frozenset({"parametric", "hybrid"})


@dataclass(frozen=True, kw_only=True)
class NamespaceState:
    """What the router knows about a namespace before it looks at the query.

    Attributes:
        namespace: the namespace (from the run's config, never from model output).
        adapter: the name the current adapter is served under; ``None`` when the namespace
            has no published adapter.
        adapter_version: its registry version.
        watermark_seq: the newest memory ``seq`` its training data covered.
        adapter_created_at: when it was registered.
        forgotten: memories at or below the watermark deleted after its data was distilled:
            the adapter may still hold them.
        store_available: PostgreSQL answered (``False``: the state is the last one seen).
        serving_available: vLLM answered recently (``False`` while it is marked down).
        local_backend: an in-process backend can generate when vLLM is down.
    """

    namespace: tuple[str, ...]
    adapter: str | None = None
    adapter_version: int | None = None
    watermark_seq: int = 0
    adapter_created_at: datetime | None = None
    forgotten: int = 0
    store_available: bool = True
    serving_available: bool = True
    local_backend: bool = False

    @property
    def has_adapter(self) -> bool:
        return self.adapter is not None


@dataclass(frozen=True, kw_only=True)
class Signals:
    """Retrieval signals of one cheap search for the query.

    Attributes:
        hits: results the search returned (echoes of the query itself excluded).
        top_vector: best cosine similarity among them (``None``: no vector score).
        top_keyword: best PostgreSQL keyword rank (``ts_rank_cd``) among them.
        lexical: best share of the query's content terms found in one hit, ``[0, 1]``.
        relevant_seqs: ``seq`` of every relevant hit stating facts, best first; compared with the adapter's
            watermark by :func:`decide` (evidence newer than it is unknown to the adapter).
        query_embedding: the query's vector (only the learned policy uses it).
    """

    hits: int = 0
    top_vector: float | None = None
    top_keyword: float | None = None
    lexical: float = 0.0
    relevant_seqs: tuple[int, ...] = ()
    query_embedding: Sequence[float] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_results(cls, query: str | QueryFeatures, results: Iterable[Any], *,
                     config: RouterConfig | None = None,
                     query_embedding: Sequence[float] | None = None) -> "Signals":
        """Signals from search results (:class:`~langchain_ragtune.store.SearchResult`).

        A hit *echoes* the query when it holds nearly the same words (the user asked this
        before and the remember node stored it): it carries no answer, so it is skipped.
        A hit is *relevant* when its vector similarity reaches ``weak_vector_score`` or it
        covers at least half of the query's content terms. Only relevant hits that can
        hold a new fact count as evidence for freshness: the assistant's own answers are
        derived from memory the adapter already had, and a question states no fact.

        Example:
            >>> Signals.from_results("dog name?", []).hits
            0
        """
        config = config or RouterConfig()
        terms = query.terms if isinstance(query, QueryFeatures) else content_terms(query)
        hits = 0
        top_v: float | None = None
        top_k: float | None = None
        lexical = 0.0
        seqs: list[int] = []
        for r in results:
            if is_echo(terms, r.memory.text, config.echo_threshold):
                continue  # the same question asked before: no evidence
            hit_terms = content_terms(r.memory.text)
            cover = len(terms & hit_terms) / len(terms) if terms else 0.0
            hits += 1
            v, kw = r.vector_score, r.keyword_score
            if v is not None and (top_v is None or v > top_v):
                top_v = v
            if kw is not None and (top_k is None or kw > top_k):
                top_k = kw
            lexical = max(lexical, cover)
            relevant = (v is not None and v >= config.weak_vector_score) or cover >= 0.5
            if relevant and _states_facts(r.memory):
                seqs.append(r.memory.seq)
        return cls(hits=hits, top_vector=top_v, top_keyword=top_k, lexical=round(lexical, 4),
                   relevant_seqs=tuple(seqs), query_embedding=query_embedding)

    @property
    def best_seq(self) -> int | None:
        """``seq`` of the best relevant hit (``None`` when nothing relevant was found)."""
        return self.relevant_seqs[0] if self.relevant_seqs else None

    def fresh_hits(self, watermark_seq: int) -> int:
        """Relevant hits newer than ``watermark_seq``."""
        return sum(1 for seq in self.relevant_seqs if seq > watermark_seq)

    def as_dict(self) -> dict[str, Any]:
        return {"hits": self.hits, "top_vector": self.top_vector, "top_keyword": self.top_keyword,
                "lexical": self.lexical, "best_seq": self.best_seq,
                "relevant": len(self.relevant_seqs)}


@dataclass(kw_only=True)
class RouteDecision:
    """A route, why it was chosen, and the numbers behind it.

    Attributes:
        route: ``parametric``, ``retrieval``, ``hybrid`` or ``none``.
        reasons: human-readable reasons, the deciding one first.
        scores: every feature and signal the decision looked at (JSON-able).
        fallbacks: degraded-mode steps taken (``"store_unreachable"``, ...), empty normally.
        policy: ``"rules"`` or ``"learned"``.
        adapter: the adapter that answers (``parametric``/``hybrid``), else ``None``.
    """

    route: Route
    reasons: list[str]
    scores: dict[str, Any] = field(default_factory=dict)
    fallbacks: list[str] = field(default_factory=list)
    policy: str = "rules"
    adapter: str | None = None

    @property
    def uses_adapter(self) -> bool:
        return self.route in _ADAPTER_ROUTES

    @property
    def uses_context(self) -> bool:
        return self.route in ("retrieval", "hybrid")

    def as_dict(self) -> dict[str, Any]:
        """The JSON-able form kept in graph state and run metadata."""
        return {"route": self.route, "reasons": list(self.reasons), "scores": dict(self.scores),
                "fallbacks": list(self.fallbacks), "policy": self.policy, "adapter": self.adapter}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RouteDecision":
        return cls(route=d["route"], reasons=list(d.get("reasons", [])),
                   scores=dict(d.get("scores", {})), fallbacks=list(d.get("fallbacks", [])),
                   policy=d.get("policy", "rules"), adapter=d.get("adapter"))


def _states_facts(memory: Any) -> bool:
    """Whether a memory can hold a fact the adapter lacks (not an AI answer or a question)."""
    return memory.role not in ("ai", "assistant", "system", "tool") \
        and not memory.text.rstrip().endswith("?")
