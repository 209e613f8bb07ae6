"""A learned routing policy: which route answered questions like this one best.

In the spirit of SKR (self-knowledge guided retrieval) and Adaptive-RAG, the router can
learn its preference from evaluation runs instead of hand-set thresholds. Labels are JSON
lines, one question each, with the route that scored best on it::

    {"question": "When did Tomas adopt Pepper?", "route": "retrieval",
     "signals": {"top_vector": 0.71, "lexical": 0.8, "fresh_hits": 0, ...}}   # optional

:func:`labels_from_eval_records` makes them from ``ragtune eval locomo`` records (the
best-scoring mode per question; ties go to the cheaper route). Features are the query's
embedding (any LangChain ``Embeddings``; the store's own by default) concatenated with the
router's numeric features (scope cues, retrieval strength, freshness). Two methods, numpy
only (no scikit-learn in the core):

* ``logreg``: multinomial logistic regression, L2-regularised, full-batch gradient descent;
* ``knn``: cosine nearest-neighbour vote, weighted by similarity.

:class:`LearnedPolicy` saves to and loads from one JSON file (the embedding model's name
and dimension are kept and checked). It only chooses among preferences: the hard
constraints of :func:`~langchain_ragtune.router.decision.decide` (no adapter, forgotten
memories, fresh evidence, backends down) still apply on top of it.

Example:
    >>> from langchain_ragtune.testing import HashEmbeddings
    >>> labels = [{"question": q, "route": r} for q, r in [
    ...     ("When did Ann move?", "retrieval"), ("Where does Ann work?", "retrieval"),
    ...     ("What kind of person is Ann?", "parametric"), ("Summarize Ann's year", "parametric")]]
    >>> policy = fit_policy(labels, HashEmbeddings(dim=64), method="knn", k=1)
    >>> policy.predict_query("What kind of person is Ann really?")
    'parametric'
"""

from __future__ import annotations

import json
import math
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from langchain_ragtune.errors import ConfigError, DatasetError, InvalidInputError
from langchain_ragtune.router.query import QueryFeatures, analyze_query
from langchain_ragtune.router.types import ROUTES, Signals

__all__ = [
    "FEATURE_NAMES",
    "LearnedPolicy",
    "feature_vector",
    "fit_policy",
    "labels_from_eval_records",
    "load_policy",
    "read_labels",
]

FORMAT = "ragtune-router-policy/1"
METHODS = ("logreg", "knn")

#: The router's numeric features, in the order they follow the query embedding.
FEATURE_NAMES = ("holistic", "specific", "scope", "smalltalk", "general", "personal",
                 "proper_nouns", "n_words", "hits", "top_vector", "lexical", "fresh",
                 "has_signals", "has_adapter")


def _num(d: Mapping[str, Any], key: str, default: float = 0.0) -> float:
    v = d.get(key)
    if isinstance(v, bool):
        return float(v)
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else default


def feature_vector(features: QueryFeatures, signals: Mapping[str, Any] | Signals | None,
                   has_adapter: bool = True) -> list[float]:
    """The router features of one query as numbers in roughly ``[0, 1]`` (see FEATURE_NAMES).

    Example:
        >>> len(feature_vector(analyze_query("hi"), None)) == len(FEATURE_NAMES)
        True
    """
    s = signals.as_dict() if isinstance(signals, Signals) else dict(signals or {})
    return [
        features.holistic, features.specific, (features.scope + 1) / 2, float(features.smalltalk),
        features.general, float(features.personal), min(features.proper_nouns, 4) / 4,
        min(features.n_words, 40) / 40,
        min(_num(s, "hits"), 10) / 10, _num(s, "top_vector"), _num(s, "lexical"),
        float(_num(s, "fresh_hits") > 0), float(bool(s)), float(has_adapter),
    ]


def _normalise(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(n == 0, 1.0, n)


@dataclass
class LearnedPolicy:
    """A fitted routing policy (logistic regression or nearest-neighbour vote).

    Attributes:
        method: ``logreg`` or ``knn``.
        routes: the routes it can predict (those seen in its labels).
        embedding_model: name of the embeddings it was fitted with (checked when used).
        dim: the embedding dimension.
        weights, bias: the logistic regression's parameters (``logreg``).
        mean, std: feature standardisation (``logreg``).
        points, point_labels, k: the labelled examples and the vote size (``knn``).
        n_train: labels it was fitted on.
        train_accuracy: accuracy on its own labels.
        embed: the embedding function used at prediction time (not saved).
    """

    method: str
    routes: list[str]
    embedding_model: str
    dim: int
    weights: np.ndarray | None = None
    bias: np.ndarray | None = None
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    points: np.ndarray | None = None
    point_labels: list[int] = field(default_factory=list)
    k: int = 5
    n_train: int = 0
    train_accuracy: float | None = None
    embed: Any = field(default=None, repr=False)

    # -- prediction ------------------------------------------------------------------------

    def _x(self, embedding: Sequence[float], feats: Sequence[float]) -> np.ndarray:
        e = np.asarray(embedding, dtype=np.float64)
        if e.shape != (self.dim,):
            raise ConfigError(f"the learned router policy expects {self.dim}-dimensional query "
                              f"embeddings ({self.embedding_model}), got {e.shape}; refit it "
                              "with the store's embedding model (`ragtune router fit`).")
        return np.concatenate([_normalise(e), np.asarray(feats, dtype=np.float64)])

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """Route probabilities for feature rows ``x`` (shape ``(n, dim + features)``)."""
        x = np.atleast_2d(x)
        if self.method == "logreg":
            z = (x - self.mean) / self.std @ self.weights + self.bias
            z -= z.max(axis=1, keepdims=True)
            p = np.exp(z)
            return p / p.sum(axis=1, keepdims=True)
        pts = self.points
        d = self.dim
        sim = _normalise(x[:, :d]) @ _normalise(pts[:, :d]).T
        # Router features break ties between equally similar questions.
        sim = sim - 0.1 * np.abs(x[:, None, d:] - pts[None, :, d:]).mean(axis=2)
        k = min(self.k, len(pts))
        idx = np.argsort(-sim, axis=1)[:, :k]
        out = np.zeros((len(x), len(self.routes)))
        labels = np.asarray(self.point_labels)
        for row in range(len(x)):
            for j in idx[row]:
                out[row, labels[j]] += max(sim[row, j], 0.0) + 1e-6
        return out / out.sum(axis=1, keepdims=True)

    def predict_one(self, features: QueryFeatures, signals: Signals | None,
                    scores: Mapping[str, Any] | None = None, *, has_adapter: bool = True
                    ) -> tuple[str, dict[str, float]]:
        """The route for one query and the probability of each route.

        Args:
            features: the query's features.
            signals: its retrieval signals; ``signals.query_embedding`` must be set.
            scores: the decision's scores (they add ``fresh_hits``); ``signals`` when omitted.
            has_adapter: whether the namespace has a published adapter.
        """
        emb = signals.query_embedding if signals is not None else None
        if emb is None:
            raise ConfigError("the learned router policy needs the query's embedding in "
                              "Signals.query_embedding (the memory router fills it in when "
                              "router_policy='learned').")
        x = self._x(emb, feature_vector(features, scores if scores is not None else signals,
                                        has_adapter))
        p = self.probabilities(x)[0]
        probs = {r: round(float(v), 4) for r, v in zip(self.routes, p)}
        return self.routes[int(np.argmax(p))], probs

    def predict_query(self, query: str, signals: Mapping[str, Any] | None = None) -> str:
        """Convenience for scripts: embed ``query`` with ``self.embed`` and predict."""
        if self.embed is None:
            raise ConfigError("policy.embed is not set: pass embeddings to load_policy() or "
                              "fit_policy().")
        feats = analyze_query(query)
        x = self._x(self.embed.embed_query(query), feature_vector(feats, signals))
        return self.routes[int(np.argmax(self.probabilities(x)[0]))]

    # -- persistence -----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        def arr(a: np.ndarray | None) -> Any:
            return None if a is None else np.round(a, 6).tolist()

        return {"format": FORMAT, "method": self.method, "routes": self.routes,
                "embedding_model": self.embedding_model, "dim": self.dim,
                "feature_names": list(FEATURE_NAMES), "weights": arr(self.weights),
                "bias": arr(self.bias), "mean": arr(self.mean), "std": arr(self.std),
                "points": arr(self.points), "point_labels": list(self.point_labels),
                "k": self.k, "n_train": self.n_train, "train_accuracy": self.train_accuracy}

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the policy as JSON (atomically); returns the path."""
        p = Path(path).expanduser()
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict()), encoding="utf-8")
        tmp.replace(p)
        return p

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, source: str = "<policy>") -> "LearnedPolicy":
        if d.get("format") != FORMAT:
            raise ConfigError(f"{source} is not a ragtune router policy (format "
                              f"{d.get('format')!r}, expected {FORMAT!r}); fit one with "
                              "`ragtune router fit`.")
        if list(d.get("feature_names", [])) != list(FEATURE_NAMES):
            raise ConfigError(f"{source} was fitted with other router features; refit it with "
                              "this version (`ragtune router fit`).")

        def arr(key: str) -> np.ndarray | None:
            return None if d.get(key) is None else np.asarray(d[key], dtype=np.float64)

        return cls(method=d["method"], routes=list(d["routes"]),
                   embedding_model=d["embedding_model"], dim=int(d["dim"]), weights=arr("weights"),
                   bias=arr("bias"), mean=arr("mean"), std=arr("std"), points=arr("points"),
                   point_labels=[int(i) for i in d.get("point_labels", [])], k=int(d.get("k", 5)),
                   n_train=int(d.get("n_train", 0)), train_accuracy=d.get("train_accuracy"))


_CACHE: dict[tuple[str, float], LearnedPolicy] = {}
_CACHE_LOCK = threading.Lock()


def load_policy(path: str | os.PathLike[str] | None, *, embeddings: Any = None) -> LearnedPolicy:
    """Load a policy file (cached per path and modification time).

    Raises:
        ConfigError: the file is missing or not a policy.
    """
    if path is None:
        raise ConfigError("no router policy path: set RouterConfig.router_policy_path "
                          "(RAGTUNE_ROUTER_POLICY_PATH).")
    p = Path(path).expanduser()
    try:
        key = (str(p.resolve()), p.stat().st_mtime)
    except OSError:
        raise ConfigError(f"router policy file {str(p)!r} does not exist; fit one with "
                          f"`ragtune router fit --labels LABELS.jsonl --out {p}`.") from None
    with _CACHE_LOCK:
        policy = _CACHE.get(key)
        if policy is None:
            try:
                data = json.loads(p.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ConfigError(f"router policy file {str(p)!r} is unreadable ({exc}); fit it "
                                  "again with `ragtune router fit`.") from None
            policy = LearnedPolicy.from_dict(data, source=f"router policy {str(p)!r}")
            _CACHE[key] = policy
    if embeddings is not None:
        policy.embed = embeddings
    return policy


# -- labels ---------------------------------------------------------------------------------

def read_labels(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a labels JSONL file: ``{"question", "route", "signals"?}`` per line.

    Raises:
        DatasetError: unreadable file, bad JSON, or a line without a question or a known route.
    """
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DatasetError(f"cannot read router labels {str(p)!r}: {exc}") from None
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise DatasetError(f"{str(p)!r} line {n} is not JSON; each line must be "
                               '{"question": ..., "route": ...}.') from None
        _check_label(row, f"{str(p)!r} line {n}")
        out.append(row)
    if not out:
        raise DatasetError(f"router labels {str(p)!r} are empty; make them from an evaluation run "
                           "(`ragtune router fit --from-eval RECORDS.jsonl`).")
    return out


def _check_label(row: Any, where: str) -> None:
    if not isinstance(row, Mapping) or not isinstance(row.get("question"), str) \
            or not row["question"].strip():
        raise DatasetError(f"{where}: a label needs a non-empty 'question' string.")
    if row.get("route") not in ROUTES:
        raise DatasetError(f"{where}: route {row.get('route')!r} is not one of {ROUTES}.")


_MODE_ROUTE = {"none": "none", "parametric": "parametric", "retrieval": "retrieval",
               "hybrid": "hybrid"}


def labels_from_eval_records(records: Iterable[Mapping[str, Any]], *,
                             metric: str = "f1", margin: float = 0.0) -> list[dict[str, Any]]:
    """Route labels from evaluation records: per question, the best-scoring route.

    Questions where no mode scored, or where the best beats the cheapest by no more than
    ``margin``, go to the cheapest route among the best (none < parametric < retrieval <
    hybrid): the label says which route is *enough*. Signals recorded by the routed mode
    (``extra.signals``) are carried over.

    Example:
        >>> recs = [{"kind": "question", "mode": m, "qid": "c#1", "question": "q?", "f1": f}
        ...         for m, f in [("retrieval", 0.9), ("parametric", 0.2), ("hybrid", 0.9)]]
        >>> labels_from_eval_records(recs)[0]["route"]
        'retrieval'
    """
    by_q: dict[str, dict[str, Any]] = {}
    for r in records:
        if r.get("kind") != "question" or r.get("mode") not in _MODE_ROUTE:
            if r.get("kind") == "question" and r.get("mode") == "routed":
                sig = (r.get("extra") or {}).get("signals")
                if sig:
                    by_q.setdefault(r["qid"], {"question": r["question"], "scores": {}})["signals"] = sig
            continue
        entry = by_q.setdefault(r["qid"], {"question": r["question"], "scores": {}})
        value = r.get(metric)
        if isinstance(value, (int, float)):
            entry["scores"][_MODE_ROUTE[r["mode"]]] = float(value)
    out = []
    for qid, entry in by_q.items():
        scores = entry["scores"]
        if not scores:
            continue
        best = max(scores.values())
        route = next(r for r in ROUTES if r in scores and scores[r] >= best - margin)
        label = {"question": entry["question"], "route": route, "qid": qid, "scores": scores}
        if "signals" in entry:
            label["signals"] = entry["signals"]
        out.append(label)
    return out


# -- fitting --------------------------------------------------------------------------------

def _embedding_name(embeddings: Any) -> str:
    for attr in ("model_name", "model", "model_path"):
        v = getattr(embeddings, attr, None)
        if isinstance(v, str) and v:
            return v
    return type(embeddings).__name__


def fit_policy(labels: Sequence[Mapping[str, Any]], embeddings: Any, *, method: str = "logreg",
               k: int = 5, l2: float = 1e-2, epochs: int = 500, lr: float = 0.5,
               seed: int = 0) -> LearnedPolicy:
    """Fit a routing policy on labelled questions.

    Args:
        labels: ``{"question", "route", "signals"?}`` mappings (see :func:`read_labels`).
        embeddings: LangChain ``Embeddings`` for the questions (use the store's model: the
            router embeds queries with it at run time).
        method: ``logreg`` or ``knn``.
        k: neighbours that vote (``knn``).
        l2, epochs, lr: regularisation and gradient descent settings (``logreg``).
        seed: initialisation seed.

    Returns:
        The fitted :class:`LearnedPolicy` (``embed`` set to ``embeddings``).

    Raises:
        InvalidInputError: unknown method, or fewer than two labels.
    """
    if method not in METHODS:
        raise InvalidInputError(f"method={method!r} is not a router policy method; use one of "
                                f"{METHODS}.")
    if len(labels) < 2:
        raise InvalidInputError(f"a router policy needs at least 2 labelled questions, got "
                                f"{len(labels)}.")
    for i, row in enumerate(labels):
        _check_label(row, f"label {i}")
    routes = [r for r in ROUTES if any(row["route"] == r for row in labels)]
    y = np.asarray([routes.index(row["route"]) for row in labels])
    emb = np.asarray(embeddings.embed_documents([row["question"] for row in labels]),
                     dtype=np.float64)
    feats = np.asarray([feature_vector(analyze_query(row["question"]), row.get("signals"),
                                       bool((row.get("signals") or {}).get("has_adapter", True)))
                        for row in labels])
    x = np.concatenate([_normalise(emb), feats], axis=1)
    policy = LearnedPolicy(method=method, routes=routes, embedding_model=_embedding_name(embeddings),
                           dim=emb.shape[1], n_train=len(labels), k=int(k), embed=embeddings)
    if method == "knn":
        policy.points = x
        policy.point_labels = y.tolist()
    else:
        mean = x.mean(axis=0)
        std = x.std(axis=0)
        std[std < 1e-6] = 1.0
        xs = (x - mean) / std
        rng = np.random.default_rng(seed)
        w = rng.normal(0, 0.01, size=(x.shape[1], len(routes)))
        b = np.zeros(len(routes))
        onehot = np.eye(len(routes))[y]
        # Inverse-frequency weights: a rare route (the adapter's holistic wins) still counts.
        counts = np.bincount(y, minlength=len(routes)).astype(np.float64)
        sw = (len(y) / (len(routes) * counts))[y][:, None]
        for _ in range(int(epochs)):
            z = xs @ w + b
            z -= z.max(axis=1, keepdims=True)
            p = np.exp(z)
            p /= p.sum(axis=1, keepdims=True)
            g = sw * (p - onehot) / len(y)
            w -= lr * (xs.T @ g + l2 * w)
            b -= lr * g.sum(axis=0)
        policy.weights, policy.bias, policy.mean, policy.std = w, b, mean, std
    pred = policy.probabilities(x).argmax(axis=1)
    policy.train_accuracy = round(float((pred == y).mean()), 4)
    return policy
