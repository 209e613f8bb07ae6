"""The evaluation harness: memory modes answer LoCoMo questions, every answer is a record.

A *mode* is anything that follows the :class:`Mode` protocol: it builds its memory of one
conversation (:meth:`Mode.prepare`) and then answers that conversation's questions one by
one (:meth:`Mode.answer`). Retrieval is the first mode (:mod:`.retrieval_eval`); no-memory,
full-context, parametric, hybrid and routed modes plug in the same way.

:func:`run_modes` drives the modes, scores each answer with LoCoMo's official metrics, and
appends one JSON line per question to a records file as it goes, so a long run that stops
can continue where it was (``resume=True``). :func:`summarize` turns records into the JSON
the project's tools read::

    {"modes": {<mode>: {"f1": {...}, "recall_at_k": {"overall", "all", "1".."5"},
                        "latency_ms": {"p50", "p95"}, "memory_tokens": {"mean"}, ...}},
     "router": {...}, "questions": [...], "metadata": {...}}

Example:
    >>> from langchain_ragtune.eval.locomo import load_sample
    >>> class Echo:
    ...     name = "echo"
    ...     def describe(self): return {}
    ...     def prepare(self, conversation): return {}
    ...     def answer(self, conversation, question):
    ...         return ModeAnswer(prediction=question.answer, latency_ms=0.1)
    >>> records = run_modes(load_sample(), [Echo()], progress=False)
    >>> summarize(records)["modes"]["echo"]["f1"]["4"]
    1.0
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, Protocol, Sequence, runtime_checkable

from langchain_ragtune.errors import InvalidInputError
from langchain_ragtune.eval import metrics
from langchain_ragtune.eval.locomo import LocomoConversation, LocomoQuestion
from langchain_ragtune.hardware import machine_info  # owned there; kept importable from here

__all__ = [
    "Mode",
    "ModeAnswer",
    "RecordsFile",
    "estimate_tokens",
    "git_commit",
    "git_dirty",
    "machine_info",
    "now_iso",
    "run_metadata",
    "run_modes",
    "score_record",
    "summarize",
]

#: Categories whose mean is reported as "overall" (the project's targets use these).
OVERALL_CATEGORIES = (1, 2, 4)


@dataclass(kw_only=True)
class ModeAnswer:
    """What a mode returns for one question.

    Attributes:
        prediction: the answer text, or ``None`` for modes that only retrieve.
        retrieved: the retrieved items, best first, each as the message (dialogue) ids it
            covers; empty for modes that do not retrieve.
        latency_ms: wall time to produce this answer (retrieval and/or generation).
        memory_tokens: tokens of memory added to the prompt (estimated when no tokenizer is
            at hand, see :func:`estimate_tokens`); ``None`` when not applicable.
        route: the route a router chose (``"retrieval"``, ``"parametric"``, ``"both"``...).
        extra: anything else worth keeping per question (JSON-able).
    """

    prediction: str | None = None
    retrieved: list[list[str]] = field(default_factory=list)
    latency_ms: float = 0.0
    memory_tokens: int | None = None
    route: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Mode(Protocol):
    """A memory mode under evaluation.

    Attributes:
        name: the key of this mode in the results (``"retrieval"``, ``"routed"``...).

    Example:
        >>> class NoMemory:
        ...     name = "none"
        ...     def describe(self): return {"reader": "fake"}
        ...     def prepare(self, conversation): return {}
        ...     def answer(self, conversation, question):
        ...         return ModeAnswer(prediction="Not mentioned")
        >>> isinstance(NoMemory(), Mode)
        True
    """

    name: str

    def describe(self) -> dict[str, Any]:
        """Settings that change results (k, window, models...); kept in the metadata and
        checked when a run resumes."""
        ...

    def prepare(self, conversation: LocomoConversation) -> dict[str, Any]:
        """Build this mode's memory of ``conversation``; return JSON-able stats."""
        ...

    def answer(self, conversation: LocomoConversation, question: LocomoQuestion) -> ModeAnswer:
        """Answer (or retrieve for) one question."""
        ...


def estimate_tokens(text: str) -> int:
    """A tokenizer-free token estimate: one token per 4 characters (rounded up).

    Example:
        >>> estimate_tokens("12345678"), estimate_tokens("")
        (2, 0)
    """
    return -(-len(text) // 4)


def score_record(mode: str, conversation: LocomoConversation, question: LocomoQuestion,
                 answer: ModeAnswer, *, k: int | None = None) -> dict[str, Any]:
    """Score one answer and return its per-question record (a JSON-able dict).

    Example:
        >>> from langchain_ragtune.eval.locomo import load_sample
        >>> conv = load_sample()[0]
        >>> q = conv.qa[0]
        >>> rec = score_record("x", conv, q, ModeAnswer(retrieved=[["D1:6", "D1:7"]]))
        >>> rec["recall"], rec["f1"]
        (1.0, None)
    """
    gold = question.answer
    rec: dict[str, Any] = {
        "kind": "question",
        "mode": mode,
        "conversation": conversation.sample_id,
        "qid": conversation.question_id(question),
        "index": question.index,
        "category": question.category,
        "question": question.question,
        "answer": gold,
        "prediction": answer.prediction,
        "f1": None,
        "exact_match": None,
        "evidence": list(question.evidence),
        "latency_ms": round(float(answer.latency_ms), 3),
        "memory_tokens": answer.memory_tokens,
        "route": answer.route,
    }
    if answer.prediction is not None:
        rec["f1"] = metrics.score_answer(answer.prediction, gold, question.category)
        if question.category != 5:
            rec["exact_match"] = float(metrics.exact_match(answer.prediction, gold))
    if answer.retrieved or answer.prediction is None:
        r = metrics.evidence_recall_at_k(question.evidence, answer.retrieved, k=k,
                                         known_ids=conversation.dia_ids)
        rec.update(recall=r.recall, found=r.found, unmatched_evidence=r.unmatched,
                   retrieved=[list(ids) for ids in answer.retrieved])
    if answer.extra:
        rec["extra"] = answer.extra
    return rec


def _settings_key(settings: Mapping[str, Any]) -> str:
    return json.dumps(settings, sort_keys=True, default=str)


class RecordsFile:
    """An append-only JSON-lines file of records, the memory of a resumable run.

    The first line holds the run's settings; a resumed run must have the same settings
    (otherwise its numbers would mix two experiments). Each further line is a question
    record (``"kind": "question"``) or a mode's preparation stats (``"kind": "prepare"``).
    A line cut short by a crash is ignored.

    Args:
        path: the file.
        settings: what identifies the run (data, conversations, modes and their settings).
        resume: keep the records already in the file (same settings required); otherwise
            the file is started afresh.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "run.jsonl"
        >>> with RecordsFile(p, {"k": 10}) as f:
        ...     f.append({"kind": "question", "mode": "m", "qid": "c#0"})
        >>> RecordsFile(p, {"k": 10}, resume=True).done("m")
        {'c#0'}
    """

    def __init__(self, path: str | os.PathLike[str], settings: Mapping[str, Any], *,
                 resume: bool = False) -> None:
        self.path = Path(path)
        self.settings = dict(settings)
        self.records: list[dict[str, Any]] = []
        if resume and self.path.exists():
            self._load()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "w", encoding="utf-8") as fh:
                fh.write(json.dumps({"kind": "run", "settings": self.settings}, default=str)
                         + "\n")
        self._fh = open(self.path, "a", encoding="utf-8")

    def _load(self) -> None:
        with open(self.path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
        header = None
        for n, line in enumerate(lines):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                if n == len(lines) - 1:  # the run died while writing this line
                    break
                raise InvalidInputError(f"records file {str(self.path)!r} line {n + 1} is not "
                                        "JSON; start a new run without --resume.") from None
            if header is None:
                header = obj
                continue
            self.records.append(obj)
        if not header or header.get("kind") != "run":
            raise InvalidInputError(f"{str(self.path)!r} is not a ragtune records file; "
                                    "choose another --records path or drop --resume.")
        if _settings_key(header.get("settings", {})) != _settings_key(self.settings):
            raise InvalidInputError(
                f"cannot resume from {str(self.path)!r}: it was written with other settings "
                f"({header.get('settings')}) than this run ({self.settings}). Use the same "
                "options, another --records path, or drop --resume to start over."
            )
        # Rewrite without a torn last line so appends start on a fresh line.
        with open(self.path, "w", encoding="utf-8") as fh:
            for obj in [header, *self.records]:
                fh.write(json.dumps(obj, default=str) + "\n")

    def done(self, mode: str) -> set[str]:
        """Question ids already answered by ``mode``."""
        return {r["qid"] for r in self.records if r.get("kind") == "question"
                and r.get("mode") == mode}

    def append(self, record: Mapping[str, Any]) -> None:
        """Add a record and write it through (one line, flushed)."""
        self.records.append(dict(record))
        self._fh.write(json.dumps(record, default=str, ensure_ascii=False) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "RecordsFile":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _progress(iterable: Iterable[Any], *, enabled: bool, **kwargs: Any) -> Iterable[Any]:
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, **kwargs)


def select_questions(qa: Sequence[Any], *, categories: Iterable[int] | None = None,
                     max_questions: int | None = None,
                     per_category: int | None = None) -> list[Any]:
    """The questions a run answers, in the conversation's order.

    ``per_category`` keeps the first N of each category: a conversation's questions come
    grouped by topic, not shuffled, so its first N questions may cover only one or two
    categories. ``max_questions`` then caps the total.

    Example:
        >>> from types import SimpleNamespace as Q
        >>> qa = [Q(category=c) for c in (2, 2, 2, 1, 1, 4)]
        >>> [q.category for q in select_questions(qa, per_category=1)]
        [2, 1, 4]
        >>> [q.category for q in select_questions(qa, categories=[2, 4], max_questions=2)]
        [2, 2]
    """
    wanted = None if categories is None else {int(c) for c in categories}
    out = [q for q in qa if wanted is None or q.category in wanted]
    if per_category is not None:
        seen: dict[int, int] = {}
        kept = []
        for q in out:
            seen[q.category] = seen.get(q.category, 0) + 1
            if seen[q.category] <= per_category:
                kept.append(q)
        out = kept
    return out[:max_questions] if max_questions is not None else out


def run_modes(conversations: Sequence[LocomoConversation], modes: Sequence[Mode], *,
              categories: Iterable[int] | None = None, k: int | None = None,
              records: RecordsFile | None = None, progress: bool = True,
              max_questions: int | None = None,
              per_category: int | None = None) -> list[dict[str, Any]]:
    """Answer every question of every conversation in every mode; return all records.

    Modes run one after the other, each conversation prepared (ingested, trained...) just
    before its questions. With a resumed ``records`` file, questions already answered are
    skipped, and so is the preparation of a conversation whose questions are all done.

    Args:
        conversations: the conversations to evaluate.
        modes: the modes to compare (each needs a distinct ``name``).
        categories: only questions of these categories (all when ``None``).
        k: how many retrieved items count for recall (all returned when ``None``).
        records: where records are appended as they are made (and resumed from).
        progress: show progress bars on stderr.
        max_questions: only the first N selected questions of each conversation (quick runs).
        per_category: only the first N questions of each category of each conversation.

    Returns:
        The records: ``"prepare"`` records (one per mode and conversation) and ``"question"``
        records (see :func:`score_record`), old ones from a resumed file included.
    """
    names = [m.name for m in modes]
    if len(set(names)) != len(names):
        raise InvalidInputError(f"mode names must be distinct, got {names}.")
    out: list[dict[str, Any]] = list(records.records) if records else []
    for mode in modes:
        done = records.done(mode.name) if records else set()
        for conv in conversations:
            questions = select_questions(conv.qa, categories=categories,
                                         max_questions=max_questions, per_category=per_category)
            todo = [q for q in questions if conv.question_id(q) not in done]
            if not todo:
                continue
            t0 = time.perf_counter()
            stats = mode.prepare(conv) or {}
            prep = {"kind": "prepare", "mode": mode.name, "conversation": conv.sample_id,
                    "seconds": round(time.perf_counter() - t0, 3), **stats}
            out.append(prep)
            if records:
                records.append(prep)
            bar = _progress(todo, enabled=progress, desc=f"{mode.name} {conv.sample_id}",
                            unit="q", leave=False)
            for q in bar:
                rec = score_record(mode.name, conv, q, mode.answer(conv, q), k=k)
                out.append(rec)
                if records:
                    records.append(rec)
    return out


def _mean_field(rows: list[dict[str, Any]], key: str) -> dict[str, float | None]:
    return {"mean": metrics.mean(r.get(key) for r in rows)}


def summarize(records: Iterable[Mapping[str, Any]], *, metadata: Mapping[str, Any] | None = None,
              include_questions: bool = True) -> dict[str, Any]:
    """Aggregate records into the results JSON (per mode, per category, router mix).

    ``"overall"`` averages categories 1, 2 and 4; ``"all"`` averages every category. Recall
    skips questions without usable evidence (counted under ``"excluded"``). F1 keys appear
    only for modes that produce answers.

    Example:
        >>> recs = [{"kind": "question", "mode": "retrieval", "category": 4, "recall": 0.5,
        ...          "latency_ms": 3.0, "conversation": "c", "evidence": ["D1:1"],
        ...          "unmatched_evidence": []}]
        >>> summarize(recs, include_questions=False)["modes"]["retrieval"]["recall_at_k"]["4"]
        0.5
    """
    questions = [dict(r) for r in records if r.get("kind") == "question"]
    prepares = [dict(r) for r in records if r.get("kind") == "prepare"]
    modes: dict[str, Any] = {}
    for name in dict.fromkeys(r["mode"] for r in questions):
        rows = [r for r in questions if r["mode"] == name]
        entry: dict[str, Any] = {"n_questions": len(rows)}
        if any(r.get("prediction") is not None for r in rows):
            entry["f1"] = metrics.by_category(rows, "f1", overall=OVERALL_CATEGORIES)
            entry["exact_match"] = metrics.by_category(
                [r for r in rows if r.get("exact_match") is not None], "exact_match",
                overall=OVERALL_CATEGORIES)
        judged = [r for r in rows if r.get("judge") is not None]
        if judged:  # LLM judge: CORRECT = 1.0, WRONG = 0.0 (categories 1-4)
            entry["judge"] = metrics.by_category(judged, "judge", overall=OVERALL_CATEGORIES)
            entry["judge_n"] = metrics.count_by_category(judged, "judge",
                                                         overall=OVERALL_CATEGORIES)
        if any("recall" in r for r in rows):
            scored = [r for r in rows if "recall" in r]
            entry["recall_at_k"] = metrics.by_category(scored, "recall",
                                                       overall=OVERALL_CATEGORIES)
            entry["recall_n"] = metrics.count_by_category(scored, "recall",
                                                          overall=OVERALL_CATEGORIES)
            entry["excluded"] = {
                "no_evidence": sum(1 for r in scored if not r.get("evidence")),
                "unmatched_evidence_only": sum(1 for r in scored if r.get("evidence")
                                               and r.get("recall") is None),
                "unmatched_evidence_ids": sum(len(r.get("unmatched_evidence") or [])
                                              for r in scored),
            }
            by_conv: dict[str, float | None] = {}
            for conv in dict.fromkeys(r["conversation"] for r in scored):
                by_conv[conv] = metrics.mean(
                    r["recall"] for r in scored if r["conversation"] == conv
                    and r["category"] in OVERALL_CATEGORIES)
            entry["recall_by_conversation"] = by_conv
        entry["latency_ms"] = metrics.latency_summary(r["latency_ms"] for r in rows)
        entry["memory_tokens"] = _mean_field(rows, "memory_tokens")
        preps = [p for p in prepares if p["mode"] == name]
        if preps:
            entry["prepare"] = _prepare_totals(preps)
        routed = [r for r in rows if r.get("route")]
        if routed:
            entry["router"] = _router_summary(questions, routed)
        modes[name] = entry
    out: dict[str, Any] = {"modes": modes}
    # The top-level "router" key (the shape other tools read) describes the routed mode;
    # with several routed modes each keeps its own under modes[<name>]["router"].
    for name, entry in modes.items():
        if "router" in entry:
            out["router"] = {"mode": name, **entry["router"]}
            break
    if metadata is not None:
        out["metadata"] = dict(metadata)
    if include_questions:
        out["questions"] = questions
    return out


def _prepare_totals(preps: list[dict[str, Any]]) -> dict[str, Any]:
    totals: dict[str, Any] = {"conversations": len(preps)}
    for key in ("seconds", "turns", "ingested", "add_seconds", "embed_seconds"):
        vals = [p[key] for p in preps if isinstance(p.get(key), (int, float))]
        if vals:
            totals[key] = round(sum(vals), 3)
    if any("fits" in p for p in preps):  # full-context: conversations over the reader's window
        totals["not_fitting"] = sum(1 for p in preps if p.get("fits") is False)
    adapters = [p["adapter"] for p in preps if isinstance(p.get("adapter"), dict)
                and not p["adapter"].get("shared")]
    if adapters:  # parametric memory: what training each conversation's adapter took
        totals["adapters"] = [{k: a.get(k) for k in ("adapter", "status", "examples",
                                                       "closed_book_before", "closed_book_after",
                                                       "train_seconds", "distill_seconds")}
                              for a in adapters]
    if totals.get("ingested") and totals.get("seconds"):
        totals["turns_per_s"] = round(totals["ingested"] / totals["seconds"], 1)
    return totals


def _router_summary(questions: list[dict[str, Any]], routed: list[dict[str, Any]]
                    ) -> dict[str, Any]:
    mix: dict[str, float] = {}
    for r in routed:
        mix[r["route"]] = mix.get(r["route"], 0) + 1
    mix = {k: v / len(routed) for k, v in sorted(mix.items())}
    # Oracle: per question, the single-route mode that scored best (ties: any best counts).
    by_q: dict[str, dict[str, float]] = {}
    for r in questions:
        if r.get("f1") is not None and not r.get("route"):
            by_q.setdefault(r["qid"], {})[r["mode"]] = r["f1"]
    hits = total = 0
    for r in routed:
        scores = by_q.get(r["qid"])
        if not scores or r["route"] not in scores:
            continue
        total += 1
        hits += scores[r["route"]] >= max(scores.values())
    return {"mix": mix, "accuracy_vs_oracle": hits / total if total else None,
            "oracle_questions": total}


def run_metadata(store: Any, conversations: Sequence[LocomoConversation], *, started: str,
                 seconds: float, data: Mapping[str, Any] | None,
                 categories: Sequence[int] | None, records_path: Any,
                 **settings: Any) -> dict[str, Any]:
    """What every results JSON says about its run: when, where, on what data and code.

    ``settings`` (k, window, modes...) are added as given. The store's search settings are
    kept too, never its URI (it may hold a password).
    """
    import dataclasses

    meta: dict[str, Any] = {
        "benchmark": "locomo",
        "date": started,
        "wall_seconds": round(seconds, 1),
        "machine": machine_info(),
        "commit": git_commit(),
        "commit_dirty": git_dirty(),
        "data": dict(data or {}),
        "conversations": [c.sample_id for c in conversations],
        "categories": list(categories) if categories is not None else None,
        **settings,
        "overall_categories": list(OVERALL_CATEGORIES),
        "records": str(records_path) if records_path else None,
        "token_estimate": "characters / 4",
    }
    config = getattr(store, "config", None)
    if dataclasses.is_dataclass(config):
        meta["store"] = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
                         if f.name not in ("pg_uri", "home")}
    return meta


def git_commit(path: str | os.PathLike[str] | None = None) -> str | None:
    """The commit of the working tree at ``path`` (this package's folder by default)."""
    cwd = Path(path) if path else Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=cwd,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def git_dirty(path: str | os.PathLike[str] | None = None) -> bool | None:
    """Whether the package's source differs from its commit (results then are not exactly
    reproducible from the commit alone); ``None`` outside a git checkout."""
    pkg = Path(path) if path else Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                              str(pkg)], cwd=pkg, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(out.stdout.strip()) if out.returncode == 0 else None


def now_iso() -> str:
    """The current UTC time, ISO-8601, to the second."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()
