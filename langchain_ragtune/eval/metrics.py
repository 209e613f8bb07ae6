"""Scoring: LoCoMo's official answer F1, exact match, evidence recall@k, latency percentiles.

The answer metrics reproduce ``task_eval/evaluation.py`` of snap-research/LoCoMo exactly,
quirks included, so that numbers are comparable with published ones:

* :func:`normalize_answer` drops commas, lowercases, removes ASCII punctuation, the words
  *a, an, the* **and** *and*, and collapses whitespace.
* :func:`token_f1` is the F1 of Porter-stemmed tokens; when nothing overlaps it is 0, even
  when both sides are empty.
* category 1 (multi-hop): :func:`multi_answer_f1` splits the gold answer on commas and
  averages, over its parts, the best F1 against any comma-separated part of the prediction;
* categories 2 and 4: plain :func:`token_f1`; category 3: only the part of the gold answer
  before the first ``;`` counts;
* category 5 (adversarial): 1 when the prediction contains "no information available" or
  "not mentioned" (case-insensitive), else 0 (:func:`is_abstention`).
* :func:`exact_match` compares the *sets* of normalised tokens, as the official code does.

Everything here is pure. NLTK's Porter stemmer (the ``eval`` extra; no data download) is
imported on first use.

Example:
    >>> score_answer("Psychology, counseling", "Psychology, counseling certification", 1)
    0.8333333333333333
    >>> score_answer("That is not mentioned in the conversation.", "", 5)
    1.0
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from functools import lru_cache
from typing import Any, Iterable, Mapping, Sequence

from langchain_ragtune.errors import DependencyMissingError, InvalidInputError

__all__ = [
    "ABSTENTION_PHRASES",
    "EvidenceRecall",
    "evidence_recall_at_k",
    "exact_match",
    "is_abstention",
    "latency_summary",
    "mean",
    "multi_answer_f1",
    "normalize_answer",
    "percentile",
    "score_answer",
    "token_f1",
]

#: What an answer to an unanswerable (category 5) question must contain to score 1.
ABSTENTION_PHRASES = ("no information available", "not mentioned")

_PUNCT = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the|and)\b")


@lru_cache(maxsize=1)
def _stemmer() -> Any:
    try:
        from nltk.stem.porter import PorterStemmer
    except ImportError:
        raise DependencyMissingError("nltk", "eval", "LoCoMo's official F1 (Porter stemming)") \
            from None
    return PorterStemmer()


@lru_cache(maxsize=65536)
def _stem(word: str) -> str:
    return _stemmer().stem(word)


def normalize_answer(text: Any) -> str:
    """Normalise an answer the way LoCoMo's official scorer does.

    Example:
        >>> normalize_answer("The Cat, and a Hat!")
        'cat hat'
    """
    s = str(text).replace(",", "")
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def _stemmed_tokens(text: Any) -> list[str]:
    return [_stem(w) for w in normalize_answer(text).split()]


def token_f1(prediction: Any, gold: Any) -> float:
    """F1 of Porter-stemmed, normalised tokens (the official ``f1_score``).

    Example:
        >>> token_f1("running marathons", "she runs a marathon")  # P = 2/2, R = 2/3
        0.8
        >>> token_f1("", "")
        0.0
    """
    pred, ref = _stemmed_tokens(prediction), _stemmed_tokens(gold)
    same = sum((Counter(pred) & Counter(ref)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def multi_answer_f1(prediction: Any, gold: Any) -> float:
    """Category 1 F1: mean over gold comma-parts of the best F1 against prediction parts.

    Example:
        >>> multi_answer_f1("beach, mountains", "mountains, beach, forest")
        0.6666666666666666
    """
    preds = [p.strip() for p in str(prediction).split(",")]
    golds = [g.strip() for g in str(gold).split(",")]
    return sum(max(token_f1(p, g) for p in preds) for g in golds) / len(golds)


def is_abstention(prediction: Any) -> bool:
    """Whether an answer says the information is not there (the category 5 rule).

    Example:
        >>> is_abstention("Not mentioned in the conversation"), is_abstention("I don't know")
        (True, False)
    """
    low = str(prediction).lower()
    return any(phrase in low for phrase in ABSTENTION_PHRASES)


def score_answer(prediction: Any, gold: Any, category: int) -> float:
    """LoCoMo's official score of one answer, by question category (1-5).

    Raises:
        InvalidInputError: ``category`` is not 1-5.

    Example:
        >>> score_answer("7 May 2023", "7 May, 2023", 2)
        1.0
        >>> score_answer("psychology", "psychology; counseling", 3)
        1.0
    """
    if prediction is None:
        prediction = ""
    if category in (2, 4):
        return token_f1(prediction, gold)
    if category == 3:
        return token_f1(prediction, str(gold).split(";")[0].strip())
    if category == 1:
        return multi_answer_f1(prediction, gold)
    if category == 5:
        return 1.0 if is_abstention(prediction) else 0.0
    raise InvalidInputError(f"question category {category!r} is not a LoCoMo category; "
                            "use 1 (multi-hop), 2 (temporal), 3 (open-domain), 4 (single-hop) "
                            "or 5 (adversarial).")


def exact_match(prediction: Any, gold: Any) -> bool:
    """Official exact match: the normalised answers have the same *set* of tokens.

    Example:
        >>> exact_match("the Beagle, beagle", "beagle"), exact_match("beagles", "beagle")
        (True, False)
    """
    return set(normalize_answer(prediction).split()) == set(normalize_answer(gold).split())


class EvidenceRecall:
    """Evidence recall of one question (see :func:`evidence_recall_at_k`).

    Attributes:
        recall: share of matched evidence turns found, or ``None`` when the question has no
            usable evidence and is excluded from recall.
        found: the evidence ids that were retrieved.
        evidence: the evidence ids that were scored (those that match a known turn).
        unmatched: evidence ids that match no known turn (dropped from the denominator).
    """

    __slots__ = ("recall", "found", "evidence", "unmatched")

    def __init__(self, recall: float | None, found: list[str], evidence: list[str],
                 unmatched: list[str]) -> None:
        self.recall = recall
        self.found = found
        self.evidence = evidence
        self.unmatched = unmatched

    @property
    def excluded(self) -> bool:
        return self.recall is None

    def __repr__(self) -> str:
        return (f"EvidenceRecall(recall={self.recall}, found={self.found}, "
                f"evidence={self.evidence}, unmatched={self.unmatched})")


def evidence_recall_at_k(evidence_ids: Iterable[str],
                         retrieved: Sequence[str | Iterable[str]],
                         *, k: int | None = None,
                         known_ids: Iterable[str] | None = None) -> EvidenceRecall:
    """Share of a question's evidence turns that appear among the top-``k`` retrieved items.

    An item is either one message id or a collection of them (a chunk or a window of turns):
    a retrieved chunk counts for every turn it contains. Evidence ids that match no turn in
    ``known_ids`` are dropped and reported; a question left with no evidence is excluded
    (``recall is None``), never counted as 0 or 1.

    Args:
        evidence_ids: the cited dialogue ids (duplicates count once).
        retrieved: the ranked results, best first.
        k: how many items count (all when ``None``).
        known_ids: every turn id of the conversation, to detect unmatched evidence.

    Example:
        >>> r = evidence_recall_at_k(["D1:3", "D2:1"], [["D1:2", "D1:3"], "D5:5"], k=2)
        >>> r.recall, r.found
        (0.5, ['D1:3'])
        >>> evidence_recall_at_k([], ["D1:1"]).excluded
        True
    """
    evidence = list(dict.fromkeys(evidence_ids))
    unmatched: list[str] = []
    if known_ids is not None:
        known = known_ids if isinstance(known_ids, (set, frozenset)) else set(known_ids)
        unmatched = [e for e in evidence if e not in known]
        evidence = [e for e in evidence if e in known]
    if k is not None and k < 0:
        raise InvalidInputError(f"k={k} must be >= 0.")
    covered: set[str] = set()
    for item in (retrieved if k is None else retrieved[:k]):
        if isinstance(item, str):
            covered.add(item)
        else:
            covered.update(item)
    if not evidence:
        return EvidenceRecall(None, [], [], unmatched)
    found = [e for e in evidence if e in covered]
    return EvidenceRecall(len(found) / len(evidence), found, evidence, unmatched)


def mean(values: Iterable[float | None]) -> float | None:
    """Mean of the values that are not ``None``; ``None`` when there are none.

    Example:
        >>> mean([1, None, 0.5]), mean([None])
        (0.75, None)
    """
    kept = [float(v) for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def percentile(values: Iterable[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) with linear interpolation (numpy's default).

    Example:
        >>> percentile([1, 2, 3, 4], 50), percentile([10, 20], 95), percentile([], 50)
        (2.5, 19.5, None)
    """
    if not 0 <= q <= 100:
        raise InvalidInputError(f"percentile q={q} must be between 0 and 100.")
    data = sorted(float(v) for v in values)
    if not data:
        return None
    pos = (len(data) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def latency_summary(values_ms: Iterable[float]) -> dict[str, float | None]:
    """``{"p50", "p95", "mean", "n"}`` of latencies in milliseconds.

    Example:
        >>> latency_summary([1.0, 2.0, 3.0])["p50"]
        2.0
    """
    data = [float(v) for v in values_ms]
    return {"p50": percentile(data, 50), "p95": percentile(data, 95),
            "mean": mean(data), "n": len(data)}


def by_category(records: Iterable[Mapping[str, Any]], key: str,
                *, overall: Sequence[int] = (1, 2, 4)) -> dict[str, float | None]:
    """Average ``record[key]`` per category (``"1"``..``"5"``), plus ``"overall"`` and ``"all"``.

    ``overall`` averages the categories the project's targets use (1, 2, 4 by default, the
    ones with retrievable evidence answered from the conversation itself); ``all`` averages
    every record. Records whose value is ``None`` (excluded) are skipped.

    Example:
        >>> by_category([{"category": 1, "r": 1.0}, {"category": 4, "r": 0.0},
        ...              {"category": 5, "r": 1.0}], "r")
        {'overall': 0.5, 'all': 0.6666666666666666, '1': 1.0, '4': 0.0, '5': 1.0}
    """
    rows = [(int(r["category"]), r.get(key)) for r in records]
    out: dict[str, float | None] = {
        "overall": mean(v for c, v in rows if c in overall),
        "all": mean(v for _, v in rows),
    }
    for cat in sorted({c for c, _ in rows}):
        out[str(cat)] = mean(v for c, v in rows if c == cat)
    return out


def count_by_category(records: Iterable[Mapping[str, Any]], key: str,
                      *, overall: Sequence[int] = (1, 2, 4)) -> dict[str, int]:
    """How many records have a non-``None`` ``record[key]``, keyed like :func:`by_category`."""
    rows = [(int(r["category"]), r.get(key) is not None) for r in records]
    out = {"overall": sum(ok for c, ok in rows if c in overall), "all": sum(ok for _, ok in rows)}
    for cat in sorted({c for c, _ in rows}):
        out[str(cat)] = sum(ok for c, ok in rows if c == cat)
    return out
