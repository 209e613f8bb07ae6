"""Canaries: the questions a new adapter version must answer before it serves.

Training records, per version, a few questions its adapter answers right by a clear greedy
lead (:func:`published_canaries`, :func:`steady_canaries`); the serving side asks them again
on vLLM before switching traffic (``Publisher``), checking the answer contains the expected
span (:func:`answer_matches`) or scoring the recorded answer up to it in one forward pass
(:func:`canary_continuation`). Both sides read the definitions here, so they cannot drift.

Example:
    >>> answer_matches("Your dog is named  BISCUIT.", "biscuit")
    True
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

from langchain_ragtune.tuning.evaluate import canary_span, check_canary

__all__ = ["answer_matches", "canary_continuation", "describe_canaries", "published_canaries",
           "steady_canaries"]

log = logging.getLogger(__name__)

_SPACE = re.compile(r"\s+")


def answer_matches(answer: str, expected: str) -> bool:
    """Whether a canary answer contains the expected text (case and spacing ignored).

    Example:
        >>> answer_matches("Your dog is named  BISCUIT.", "biscuit")
        True
    """
    norm = lambda s: _SPACE.sub(" ", s.casefold()).strip()
    return bool(expected.strip()) and norm(expected) in norm(answer)


def canary_continuation(answer: str, expected: str) -> str | None:
    """A recorded canary answer cut right after its expected text (``None``: not in it).

    This is what the scored check asks the new adapter to reproduce token for token.

    Example:
        >>> canary_continuation("Your dog is named Biscuit. He is three.", "biscuit")
        'Your dog is named Biscuit'
        >>> canary_continuation("I do not know.", "Biscuit") is None
        True
    """
    expected = expected.strip()
    if not answer or not expected:
        return None
    lowered = answer.lower()
    # Case-insensitive unless lower-casing shifts indices (a few characters, e.g. "İ").
    if len(lowered) == len(answer):
        at = lowered.find(expected.lower())
    else:
        at = answer.find(expected)
    return answer[: at + len(expected)] if at >= 0 else None


def published_canaries(canaries: Sequence[tuple[str, str]], answers: Sequence[str]
                       ) -> list[dict[str, str]]:
    """The canaries the serving side checks: those the new adapter answered correctly.

    ``answers`` are the adapter's greedy answers to the bare questions (no system prompt,
    short), the way the serving publisher asks them. Each canary gets as ``expected`` a
    verbatim span of that answer which the source also holds (see
    :func:`~langchain_ragtune.tuning.evaluate.canary_span`), so a containment check on the
    served answer proves the right adapter is loaded; and the answer itself as ``answer``,
    which the publisher's scored check verifies in one forward pass
    (:func:`canary_continuation`).
    :func:`~langchain_ragtune.tuning.gate.train_namespace` then publishes those answered by a clear greedy lead
    (``GateConfig.canary_min_margin``).
    """
    out = []
    for (q, ref), a in zip(canaries, answers):
        if not check_canary(a, {"question": q, "expected": ref}):
            continue
        span = canary_span(a, ref, min_content_words=2)
        if span:
            out.append({"question": q, "expected": span, "answer": a, "reference": ref})
    return out


def describe_canaries(metrics: Mapping[str, Any]) -> str:
    """How many canaries a version was published with, for command output.

    Example:
        >>> describe_canaries({"canaries": [{}], "canaries_unsteady": [{}, {}]})
        '1 published, 2 near ties not'
        >>> describe_canaries({})
        '0 published'
    """
    unsteady = len(metrics.get("canaries_unsteady") or [])
    return f"{len(metrics.get('canaries') or [])} published" + (
        f", {unsteady} near tie{'s' * (unsteady > 1)} not" if unsteady else "")


def steady_canaries(candidates: list[dict[str, Any]], evaluator: Any, adapter: Path,
                     min_margin: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split answered canaries into those greedy decoding gives by a lead of at least
    ``min_margin`` nats at every token up to the expected text (kept, with their
    ``margin``), and near ties (``question`` and ``margin``), which another numeric precision
    on the serving side may answer otherwise.

    An evaluator without ``greedy_margins`` (a stand-in) keeps every candidate.
    """
    margins_of = getattr(evaluator, "greedy_margins", None)
    if not candidates or margins_of is None:
        return candidates, []
    # The served check stops at the expected text, so only the answer up to it must hold.
    qa = [(c["question"], canary_continuation(c["answer"], c["expected"]) or c["answer"])
          for c in candidates]
    margins = margins_of(qa, adapter=adapter, system_prompt=None)
    kept, unsteady = [], []
    for c, m in zip(candidates, margins):
        if m >= min_margin:
            kept.append({**c, "margin": round(m, 3)})
        else:
            unsteady.append({"question": c["question"], "margin": round(m, 3)})
    if unsteady:
        log.info("%d answered canar%s not published: greedy lead below %.2f nats (%s)",
                 len(unsteady), "y" if len(unsteady) == 1 else "ies", min_margin,
                 ", ".join(f"{u['margin']:.2f}" for u in unsteady))
    return kept, unsteady
