"""Distillation: a namespace's history -> filtered, split, versioned chat training data.

:func:`build_examples` is the core (memories in, examples and a report out, no database);
:func:`distill` reads the namespace's live memories from the store, calls it, and saves the
result as the namespace's next dataset version.

What goes in: the live memories newer than the current adapter's watermark, plus a replay
sample of older live memories (whole chunks, so the adapter keeps rehearsing what it knew);
global and digest examples aggregate over the whole live history. Deleted and expired
memories are never read, so nothing of them reaches a new dataset.

Example:
    >>> from langchain_ragtune.distill import distill                     # doctest: +SKIP
    >>> result = distill(("user-42",), store=store)                         # doctest: +SKIP
    >>> result.stats["examples"]                                           # doctest: +SKIP
    {'local': 120, 'global': 30, 'broader': 18, 'digest': 9}
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import re
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from langchain_ragtune.config import _from_env
from langchain_ragtune.distill.dataset import (
    MEMORY_SYSTEM_PROMPT,
    DatasetRecord,
    Example,
    latest_dataset,
    load_examples,
    save_dataset,
)
from langchain_ragtune.distill.extract import (
    KINDS,
    TEMPLATE_WORDS,
    Chunk,
    Draft,
    broader_drafts,
    chunk_memories,
    extract_entities,
)
from langchain_ragtune.distill.facts import (
    digest_fact_drafts,
    fact_drafts,
    facts_from_memories,
    global_fact_drafts,
)
from langchain_ragtune.distill.teacher import Teacher, resolve_teacher
from langchain_ragtune.distill.text import (
    answer_recall,
    content_words,
    dedupe_questions,
    grounding,
    length_ok,
)
from langchain_ragtune.errors import ConfigError
from langchain_ragtune.store.types import validate_namespace

__all__ = ["DistillConfig", "DistillResult", "build_examples", "distill", "filter_drafts",
           "split_drafts"]

log = logging.getLogger(__name__)

#: What a refresh distills by default: facts asked locally (one turn), globally (per person,
#: over the whole history) and as monthly digests. ``broader`` (combinations of chunks,
#: quoted) is opt-in: its long quotes cost training time without teaching facts.
DEFAULT_KINDS = ("local", "global", "digest")


@dataclass(kw_only=True)
class DistillConfig:
    """How history becomes training data (every field also reads ``RAGTUNE_<FIELD>``).

    Attributes:
        kinds: which kinds to make (``local``, ``global``, ``broader``, ``digest``).
        teacher: ``None``/``"none"`` (the default: facts extracted by rules, no model),
            ``"local"`` (the base model in-process), an ``init_chat_model`` string, or a
            chat model object; a teacher's pairs are added to the facts'.
        teacher_questions: questions asked of the teacher per chunk.
        teacher_max_chunks: chunks sent to the teacher per run (newest first); bounds the
            time a slow local teacher takes. ``0`` sends none.
        teacher_timeout_s: seconds one teacher call may take before it is skipped.
        teacher_retries: extra attempts when a reply does not parse.
        chunk_turns, chunk_chars: the size of a chunk (what a RAG system retrieves).
        replay_ratio: replayed older memories per new memory (continual training).
        replay_facts: a continued refresh also trains every earlier fact again, one probe
            question each (the previous dataset's), so the adapter keeps them.
        max_replay: most older memories replayed.
        min_grounding: share of an answer's content words that must occur in its source.
        dedupe_threshold: word-set Jaccard at which two questions are near-duplicates.
        min_question_chars, max_question_chars, min_answer_chars, max_answer_chars: length
            bounds.
        heldout_fraction: share of facts (with at least two phrasings) whose paraphrase is
            held out for the closed-book evaluation.
        max_examples: most training examples (a stratified sample keeps every kind and every
            canary); ``0`` keeps all.
        canaries: canary questions per namespace (known answers, checked at every publish).
        min_facts: fewest distinct facts worth an adapter: below it a refresh trains nothing
            (status ``too_small``) and retrieval answers, which costs no training run.
        seed: makes sampling and splitting reproducible.
        system_prompt: the system message of every example.
    """

    kinds: tuple[str, ...] = DEFAULT_KINDS
    teacher: Any = None
    teacher_questions: int = 3
    teacher_max_chunks: int = 24
    teacher_timeout_s: float = 120.0
    teacher_retries: int = 1
    chunk_turns: int = 8
    chunk_chars: int = 1500
    replay_ratio: float = 0.5
    replay_facts: bool = True
    max_replay: int = 400
    min_grounding: float = 0.6
    dedupe_threshold: float = 0.9
    min_question_chars: int = 8
    max_question_chars: int = 300
    min_answer_chars: int = 2
    max_answer_chars: int = 1500
    heldout_fraction: float = 0.15
    max_examples: int = 0
    canaries: int = 4
    min_facts: int = 5
    seed: int = 0
    system_prompt: str = MEMORY_SYSTEM_PROMPT

    def __post_init__(self) -> None:
        self.kinds = tuple(self.kinds)
        bad = [k for k in self.kinds if k not in KINDS]
        if bad or not self.kinds:
            raise ConfigError(f"DistillConfig.kinds={self.kinds!r}: use a non-empty subset of "
                              f"{KINDS} (RAGTUNE_KINDS, comma separated).")
        for name in ("min_grounding", "dedupe_threshold", "heldout_fraction"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not 0 <= v <= 1:
                raise ConfigError(f"DistillConfig.{name}={v!r} must be between 0 and 1.")
        for name in ("teacher_questions", "teacher_max_chunks", "teacher_retries", "max_replay",
                     "max_examples", "canaries", "min_question_chars", "min_answer_chars",
                     "min_facts"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ConfigError(f"DistillConfig.{name}={v!r} must be an int >= 0 "
                                  f"(RAGTUNE_{name.upper()}).")
        for name in ("chunk_turns", "chunk_chars", "max_question_chars", "max_answer_chars"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ConfigError(f"DistillConfig.{name}={v!r} must be a positive int.")
        if self.replay_ratio < 0 or self.teacher_timeout_s <= 0:
            raise ConfigError("DistillConfig.replay_ratio must be >= 0 and teacher_timeout_s > 0, "
                              f"got {self.replay_ratio!r} and {self.teacher_timeout_s!r}.")

    @classmethod
    def from_env(cls, **overrides: Any) -> "DistillConfig":
        """Read ``RAGTUNE_*`` variables; keyword arguments win."""
        return _from_env(cls, overrides)


@dataclass
class DistillResult:
    """What a distillation produced.

    Attributes:
        examples: the examples (train, held-out), canaries flagged in ``meta``.
        stats: the report: inputs, drafts and examples per kind, rejections per reason,
            rejection rate, teacher counters, timings, a sample.
        dataset: the stored dataset (None when not saved).
        watermark_seq: the newest memory ``seq`` the input covered.
    """

    examples: list[Example]
    stats: dict[str, Any]
    dataset: DatasetRecord | None = None
    watermark_seq: int = 0

    @property
    def train(self) -> list[Example]:
        return [e for e in self.examples if e.split == "train"]

    @property
    def heldout(self) -> list[Example]:
        return [e for e in self.examples if e.split == "heldout"]

    @property
    def facts(self) -> int:
        """Distinct facts the training examples teach (teacher pairs count one each)."""
        return len({e.meta.get("fact") or e.question for e in self.train})

    @property
    def canaries(self) -> list[Example]:
        return [e for e in self.examples if e.meta.get("canary")]


# -- pure steps -----------------------------------------------------------------------------

def filter_drafts(drafts: Sequence[Draft], config: DistillConfig) -> tuple[list[Draft], Counter]:
    """Apply length, grounding and near-duplicate filters; returns kept drafts and reasons.

    Order matters: earlier drafts win near-duplicate ties, so callers put extractive drafts
    (always grounded) before teacher drafts.
    """
    rejected: Counter = Counter()
    kept: list[Draft] = []
    for d in drafts:
        if not length_ok(d.question, min_chars=config.min_question_chars,
                         max_chars=config.max_question_chars):
            rejected["question_length"] += 1
        elif not length_ok(d.answer, min_chars=config.min_answer_chars,
                           max_chars=config.max_answer_chars):
            rejected["answer_length"] += 1
        elif not content_words(d.answer):
            rejected["empty_answer"] += 1
        elif grounding(d.answer, d.context + " " + TEMPLATE_WORDS) < config.min_grounding:
            rejected["ungrounded"] += 1
        else:
            kept.append(d)
    keep = set(dedupe_questions([d.question for d in kept], threshold=config.dedupe_threshold))
    rejected["near_duplicate"] += len(kept) - len(keep)
    return [d for i, d in enumerate(kept) if i in keep], +rejected


def _unit(seed: int, key: str) -> float:
    h = hashlib.blake2b(f"{seed}\x1f{key}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2 ** 64


def split_drafts(drafts: Sequence[Draft], *, heldout_fraction: float, seed: int
                 ) -> list[tuple[Draft, str]]:
    """Assign train/heldout per fact: a sampled fact's paraphrase (variant 1) is held out.

    The fact's other phrasings stay in training, so the held-out question asks about
    something the adapter was taught, in words it never saw: closed-book accuracy on it
    measures memory, not string recall. Facts with one phrasing always train.
    """
    by_fact: dict[str, list[Draft]] = {}
    held: set[int] = set()
    for d in drafts:
        if d.meta.get("heldout_form"):  # a template never trained: always measured
            held.add(id(d))
        else:
            by_fact.setdefault(d.fact, []).append(d)
    for fact, ds in by_fact.items():
        if any(d.meta.get("template", "").startswith("fact_") for d in ds):
            continue  # facts are measured on their held-out forms, and trained on all others
        if len(ds) < 2 or _unit(seed, fact) >= heldout_fraction:
            continue
        pick = next((d for d in ds if d.variant == 1), ds[-1])
        held.add(id(pick))
    return [(d, "heldout" if id(d) in held else "train") for d in drafts]


def choose_canaries(drafts: Sequence[tuple[Draft, str]], n: int, *, seed: int,
                    previous: Sequence[Example] = (), live_ids: set[str] | None = None
                    ) -> tuple[list[Example], list[int]]:
    """Pick the namespace's canary questions: previous ones still live, then new ones.

    Canaries are trained fact questions (the form unique to one fact) with a specific short
    answer, spread over time: facts an adapter that loaded correctly reliably answers, and
    the base model does not. Returns the carried-over canaries (as examples) and the positions of new ones.
    """
    carried = [c for c in previous if live_ids is None or set(c.source_ids) <= live_ids][:n]
    have = {c.question for c in carried}
    candidates = [
        (i, d) for i, (d, split) in enumerate(drafts)
        if split == "train" and d.kind == "local" and d.meta.get("probe")
        and d.meta.get("origin") == "extractive"
        and 2 <= len(content_words(d.meta.get("expected", ""))) <= 12
        and d.question not in have
    ]
    need = max(0, n - len(carried))
    if not candidates or not need:
        return carried, []
    # Prefer turns with something specific to get right: a number or a name.
    specific = [(i, d) for i, d in candidates
                if re.search(r"\d|(?<=[a-z,] )[A-Z][a-z]+", d.meta.get("expected", ""))]
    if len(specific) >= need:
        candidates = specific
    candidates.sort(key=lambda p: (p[1].source_ids, _unit(seed, p[1].fact)))
    step = len(candidates) / need
    picks = sorted({candidates[min(len(candidates) - 1, int(i * step + step / 2))][0]
                    for i in range(need)})
    return carried, picks


def _cap(examples: list[Example], max_examples: int, seed: int) -> list[Example]:
    """Sample the training examples down to ``max_examples``; held-out ones are untouched.

    Canaries are always kept, and so are the training phrasings of held-out facts (else the
    held-out questions would ask about facts never taught). The holistic kinds (global,
    broader, digest) are few and are what retrieval cannot do, so they are kept whole up to
    half the budget; the local questions, by far the most numerous, fill the rest by a
    seeded random sample. Held-out examples whose fact lost all its training phrasings
    are dropped with them.
    """
    train = [e for e in examples if e.split == "train"]
    if not max_examples or len(train) <= max_examples:
        return examples
    rng = random.Random(seed)
    held_facts = {e.meta.get("fact") for e in examples if e.split == "heldout"}
    held_facts.discard(None)
    must = [e for e in train if e.meta.get("canary")]
    siblings = [e for e in train if not e.meta.get("canary") and e.meta.get("fact") in held_facts]
    rng.shuffle(siblings)
    budget = max(0, max_examples - len(must))
    must += siblings[: budget // 2]
    rest = [e for e in train if id(e) not in set(map(id, must))]
    holistic = [e for e in rest if e.kind != "local"]
    local = [e for e in rest if e.kind == "local"]
    budget = max(0, max_examples - len(must))
    if len(holistic) > budget // 2:
        holistic = rng.sample(holistic, budget // 2)
    local = rng.sample(local, min(len(local), budget - len(holistic)))
    keep = set(map(id, must + holistic + local))
    taught = {e.meta.get("fact") for e in train if id(e) in keep}
    return [e for e in examples
            if (e.split == "train" and id(e) in keep)
            or (e.split != "train" and e.meta.get("fact") in taught)]


def _teacher_drafts(teacher: Teacher, chunks: Sequence[Chunk], config: DistillConfig,
                    progress: Callable[[int], None] | None) -> list[Draft]:
    out: list[Draft] = []
    for chunk in chunks:
        context = chunk.render(max_chars=config.chunk_chars + 200)
        for j, (q, a) in enumerate(teacher.qa_pairs(context, n=config.teacher_questions)):
            out.append(Draft(kind="local", question=q, answer=a, source_ids=chunk.source_ids,
                             context=context, fact=f"teacher:{chunk.id}:{j}", variant=0,
                             meta={"origin": "teacher", "teacher": teacher.name,
                                   "template": "teacher_qa", "expected": a}))
        if progress:
            progress(1)
    return out


def build_examples(memories: Sequence[Any], *, history: Sequence[Any] | None = None,
                   config: DistillConfig | None = None, teacher: Teacher | None = None,
                   previous_canaries: Sequence[Example] = (), new_ids: set[str] | None = None,
                   previous_facts: Sequence[Example] = (),
                   progress: bool = False) -> DistillResult:
    """Make the training examples for ``memories`` (no database).

    Args:
        memories: the input turns (new ones plus any replay sample), as
            :class:`~langchain_ragtune.store.types.Memory` objects.
        history: every live memory of the namespace, for the global and digest kinds
            (defaults to ``memories``).
        config: settings (defaults from the environment).
        teacher: a ready :class:`Teacher`, or None for the extractive path only.
        previous_canaries: the namespace's canaries so far (kept while their sources live).
        new_ids: ids of the new (not replayed) memories: the teacher sees their chunks first.
        previous_facts: the previous dataset's fact probes (one question per fact): a
            continued refresh trains them again, so the adapter keeps the facts it knew
            (their sources must still be live: a forgotten memory's fact is not replayed).
        progress: show a progress bar for the teacher calls.

    Returns:
        A :class:`DistillResult` (not saved).
    """
    config = config or DistillConfig.from_env()
    started = time.monotonic()
    history = list(history if history is not None else memories)
    chunks = chunk_memories(memories, max_turns=config.chunk_turns, max_chars=config.chunk_chars)
    entities = extract_entities(history) if "broader" in config.kinds else []
    drafts: list[Draft] = []
    facts = facts_from_memories(memories)
    history_facts = facts_from_memories(history) if history is not memories else facts
    if "local" in config.kinds:
        drafts.extend(fact_drafts(facts, contexts={m.id: m.text for m in memories}))
    if "global" in config.kinds:
        drafts.extend(global_fact_drafts(history_facts))
    if "broader" in config.kinds:
        hist_chunks = chunk_memories(history, max_turns=config.chunk_turns,
                                     max_chars=config.chunk_chars)
        in_input = {m.id for m in memories}
        drafts.extend(broader_drafts([c for c in hist_chunks
                                      if set(c.source_ids) & in_input], entities,
                                     max_answer_chars=config.max_answer_chars))
    if "digest" in config.kinds:
        drafts.extend(digest_fact_drafts(history_facts))
    teacher_secs = 0.0
    if teacher is not None and "local" in config.kinds and config.teacher_max_chunks:
        new_ids = new_ids if new_ids is not None else {m.id for m in memories}
        order = sorted(chunks, key=lambda c: (not set(c.source_ids) & new_ids, -c.date.timestamp()))
        todo = order[: config.teacher_max_chunks]
        bar = _bar(len(todo), "teacher", progress)
        t0 = time.monotonic()
        drafts.extend(_teacher_drafts(teacher, todo, config, bar.update if bar else None))
        teacher_secs = time.monotonic() - t0
        if bar:
            bar.close()
    drafted = Counter(d.kind for d in drafts)
    drafted_by_origin = Counter(d.meta.get("origin", "extractive") for d in drafts)
    kept, rejected = filter_drafts(drafts, config)
    assigned = split_drafts(kept, heldout_fraction=config.heldout_fraction, seed=config.seed)
    live_ids = {m.id for m in history}
    carried, picks = choose_canaries(assigned, config.canaries, seed=config.seed,
                                     previous=previous_canaries, live_ids=live_ids)
    pick_set = set(picks)
    examples: list[Example] = []
    present = set()
    for i, (d, split) in enumerate(assigned):
        meta = {**d.meta, "fact": d.fact}
        if i in pick_set:
            meta["canary"] = True
        present.add(d.question)
        examples.append(Example(kind=d.kind, split=split, question=d.question, answer=d.answer,
                                source_ids=d.source_ids, meta=meta, system=config.system_prompt))
    for c in carried:  # keep training the old canaries even when their turns are not replayed
        if c.question in present:
            examples = [Example(kind=e.kind, split="train", question=e.question, answer=e.answer,
                                source_ids=e.source_ids, meta={**e.meta, "canary": True},
                                system=e.system) if e.question == c.question else e
                        for e in examples]
        else:
            examples.append(Example(kind=c.kind, split="train", question=c.question,
                                    answer=c.answer, source_ids=c.source_ids,
                                    meta={**c.meta, "canary": True}, system=config.system_prompt))
    taught = {e.meta.get("fact") for e in examples}
    replayed_facts = 0
    for e in previous_facts:
        fact = e.meta.get("fact")
        if not fact or fact in taught or not set(e.source_ids) <= live_ids:
            continue
        taught.add(fact)
        replayed_facts += 1
        examples.append(Example(kind=e.kind, split="train", question=e.question,
                                answer=e.answer, source_ids=e.source_ids,
                                meta={**e.meta, "probe": True, "replayed_fact": True,
                                      "canary": False},
                                system=config.system_prompt))
    examples = _cap(examples, config.max_examples, config.seed)
    n_drafts = sum(drafted.values())
    n_rejected = sum(rejected.values())
    stats: dict[str, Any] = {
        "input": {"memories": len(memories), "history": len(history), "chunks": len(chunks),
                  "entities": sum(1 for e in entities if e.type != "topic"),
                  "topics": sum(1 for e in entities if e.type == "topic")},
        "drafts": dict(drafted),
        "drafts_by_origin": dict(drafted_by_origin),
        "examples": dict(Counter(e.kind for e in examples)),
        "train": sum(e.split == "train" for e in examples),
        "heldout": sum(e.split == "heldout" for e in examples),
        "canaries": [{"question": e.question, "expected": e.expected,
                      "source_ids": list(e.source_ids)} for e in examples if e.meta.get("canary")],
        "replayed_facts": replayed_facts,
        "rejected": dict(rejected),
        "rejection_rate": round(n_rejected / n_drafts, 4) if n_drafts else 0.0,
        "teacher": {"name": teacher.name if teacher else None,
                    **dict(teacher.stats if teacher else {}),
                    "seconds": round(teacher_secs, 2)},
        "seconds": round(time.monotonic() - started, 2),
        "sample": [e.as_dict() for e in _sample(examples)],
    }
    return DistillResult(examples=examples, stats=stats,
                         watermark_seq=max((m.seq for m in memories), default=0))


def _sample(examples: Sequence[Example], per_kind: int = 2) -> list[Example]:
    seen: Counter = Counter()
    out = []
    for e in examples:
        if seen[e.kind] < per_kind:
            seen[e.kind] += 1
            out.append(e)
    return out


def _bar(total: int, desc: str, enabled: bool) -> Any:
    if not enabled or total <= 0:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="chunk", leave=False)


def _replay_sample(old: Sequence[Any], k: int, config: DistillConfig) -> list[Any]:
    """About ``k`` older memories, as whole chunks drawn at random (seeded)."""
    if k <= 0 or not old:
        return []
    chunks = chunk_memories(old, max_turns=config.chunk_turns, max_chars=config.chunk_chars)
    rng = random.Random(config.seed)
    rng.shuffle(chunks)
    out: list[Any] = []
    for c in chunks:
        if len(out) >= k:
            break
        out.extend(c.memories)
    return out


# -- with the store -------------------------------------------------------------------------

def distill(namespace: Any, *, store: Any, config: DistillConfig | None = None,
            teacher: Any = ..., after_seq: int | None = None, save: bool = True,
            progress: bool = False, model_config: Any = None) -> DistillResult:
    """Distill a namespace's new history into its next dataset version.

    Args:
        namespace: the namespace.
        store: a set-up :class:`~langchain_ragtune.store.MemoryStore`.
        config: distillation settings (``DistillConfig.from_env()`` by default).
        teacher: overrides ``config.teacher`` (a spec or a :class:`Teacher`).
        after_seq: the watermark: memories with a larger ``seq`` are new. Defaults to the
            namespace's current adapter's watermark (0 without one, i.e. everything).
        save: store the dataset in PostgreSQL.
        progress: show progress bars.
        model_config: for the ``"local"`` teacher.

    Returns:
        A :class:`DistillResult`; ``result.dataset`` is the stored dataset when saved.
    """
    ns = validate_namespace(namespace)
    config = config or DistillConfig.from_env()
    if after_seq is None:
        cur = store.current_adapter(ns)
        after_seq = int(cur["watermark_seq"]) if cur else 0
    history = store.list(ns, after_seq=0)
    new = [m for m in history if m.seq > after_seq]
    old = [m for m in history if m.seq <= after_seq]
    replay = _replay_sample(old, min(config.max_replay, math.ceil(config.replay_ratio * len(new))),
                            config) if new else []
    prev = latest_dataset(store, ns)
    prev_train = load_examples(store, prev.id, split="train") if prev else []
    prev_canaries = [e for e in prev_train if e.meta.get("canary")]
    # A continued refresh trains on the new memories only; the facts learned before come
    # back as one probe question each, or the adapter forgets them (27 of 72 points lost on
    # LoCoMo conv-26 when only older turns were replayed, docs/benchmarks.md).
    prev_facts = ([e for e in prev_train if e.meta.get("probe")]
                  if after_seq and config.replay_facts else [])
    spec = config.teacher if teacher is ... else teacher
    t = resolve_teacher(spec, model_config=model_config, timeout_s=config.teacher_timeout_s,
                        retries=config.teacher_retries) if new else None
    result = build_examples(new + replay, history=history, config=config, teacher=t,
                            previous_canaries=prev_canaries, new_ids={m.id for m in new},
                            previous_facts=prev_facts,
                            progress=progress)
    result.watermark_seq = max((m.seq for m in history), default=0)
    result.stats["input"].update({"new": len(new), "replay": len(replay), "after_seq": after_seq})
    if save and result.examples:
        result.dataset = save_dataset(store, ns, result.examples,
                                      watermark_seq=result.watermark_seq, stats=result.stats)
    return result


def closed_book_set(examples: Iterable[Example]) -> list[tuple[str, str]]:
    """(question, expected) pairs of the held-out examples, for the closed-book evaluation."""
    return [(e.question, e.expected) for e in examples if e.split == "heldout"]


def is_correct(prediction: str, question: str, expected: str, *, threshold: float = 0.5) -> bool:
    """Whether a closed-book answer holds at least ``threshold`` of the expected content
    words that the question does not already give away."""
    return answer_recall(prediction, expected, ignore=question) >= threshold
