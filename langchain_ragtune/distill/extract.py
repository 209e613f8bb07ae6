"""The deterministic, extractive half of distillation: chunks, entities and templated QA.

RAG-Tuned-LLM (arXiv 2503.16071) trains on what a RAG system would answer: *local* questions
answered from one retrieved chunk, *global* questions answered from entity and relation
descriptions aggregated over the whole history, and holistic questions. The paper writes
them with a strong teacher model; the default teacher here is a 135M model, too weak to be
trusted. So every kind has an extractive recipe that needs no model at all: questions are
templated from who said what and when, and answers quote or assemble the turns themselves.
A teacher, when configured, only adds to this (see :mod:`~langchain_ragtune.distill.teacher`).

Everything here is pure: memories in, :class:`Draft` candidates out.

Example:
    >>> from datetime import datetime, timezone
    >>> from langchain_ragtune.store.types import Memory
    >>> m = Memory(id="00000000-0000-0000-0000-000000000001", seq=1, namespace=("u",),
    ...            text="I adopted a beagle called Toby in Lisbon.", speaker="Ann", role="human",
    ...            message_id="m1", thread_id="s1", metadata={},
    ...            occurred_at=datetime(2023, 5, 8, tzinfo=timezone.utc),
    ...            created_at=datetime(2023, 5, 8, tzinfo=timezone.utc))
    >>> [d.question for d in local_drafts(chunk_memories([m])[0])][0]
    'What did Ann say about Toby on 8 May 2023?'
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Iterable, Sequence

from langchain_ragtune.distill.text import (
    STOPWORDS,
    content_words,
    format_date,
    sentences,
    truncate,
    words,
)

__all__ = [
    "KINDS",
    "Chunk",
    "Draft",
    "Entity",
    "broader_drafts",
    "chunk_memories",
    "digest_drafts",
    "extract_entities",
    "key_passage",
    "global_drafts",
    "local_drafts",
    "resolve_relative_date",
    "topic_phrase",
]

#: The kinds of training example, after the paper's recipe.
KINDS = ("local", "global", "broader", "digest")

# Capitalised words that are not names: sentence openers, interjections, months, weekdays.
_NOT_NAMES = frozenset("""
i i'm i've i'll i'd im the a an and but so oh hey hi hello wow yeah yes no ok okay thanks thank
that's it's what when where who why how this that these those my your our their his her its we
you they he she it there here just also well sure great awesome cool nice love haha lol omg
january february march april may june july august september october november december monday
tuesday wednesday thursday friday saturday sunday mom dad today tomorrow yesterday
congrats congratulations glad sounds good amazing absolutely definitely totally really maybe
let's thats im ive dont can't don't won't gonna did do does had have has is was were are am
here there last next first mon tue tues wed thu thur thurs fri sat sun whoa yep nope happy
good hope anyway btw wait guess sorry please
""".split())
# Words that make poor topics: feelings, reactions and light verbs of chat.
_WEAK = frozenset("""
anything something everything nothing someone anyone everyone somebody anybody
love loved loves amazing awesome glad want wanted wants since important inspiring sound sounds
show shows look looks looked make makes made time times help helps helped helping great good
nice happy fun cool fancy wonderful beautiful incredible fantastic lovely sweet super hard
share shares shared sharing photo photos pic pics picture pictures people person life day lot
feel feeling feels felt talk talking talked thought thinking sure true cause means mean keep
agree agreed need needs needed hear heard glad proud excited exciting enjoy enjoyed try trying tried
""".split())
_NAME = re.compile(r"\b(?:[A-Z][a-zA-Z'’\-]+|[A-Z]{2,})(?:\s+(?:[A-Z][a-zA-Z'’\-]+|[A-Z]{2,}))*")
_PLACE_CUE = re.compile(r"\b(?:in|at|to|from|visit(?:ed|ing)?|near|moved to|trip to)\s+$", re.I)
_PERSON_CUE = re.compile(r"\b(?:with|met|friend|named|called|sister|brother|husband|wife|hey|hi|"
                         r"son|daughter|cousin|aunt|uncle|boss|colleague|partner)\s+$", re.I)
_TIME_WORDS = frozenset("""yesterday today tomorrow tonight week weekend month year ago last
next recently soon lately morning afternoon evening night day days weeks months years""".split())
_RELATIVE = (
    (re.compile(r"\byesterday\b", re.I), lambda d: format_date(d - timedelta(days=1))),
    (re.compile(r"\blast night\b", re.I), lambda d: format_date(d - timedelta(days=1))),
    (re.compile(r"\btoday\b|\bthis morning\b", re.I), lambda d: format_date(d)),
    (re.compile(r"\blast week\b", re.I), lambda d: f"the week before {format_date(d)}"),
    (re.compile(r"\blast weekend\b", re.I), lambda d: f"the weekend before {format_date(d)}"),
    (re.compile(r"\blast month\b", re.I),
     lambda d: (d.replace(day=1) - timedelta(days=1)).strftime("%B %Y")),
    (re.compile(r"\blast year\b", re.I), lambda d: str(d.year - 1)),
    (re.compile(r"\bnext month\b", re.I),
     lambda d: (d.replace(day=28) + timedelta(days=4)).strftime("%B %Y")),
    (re.compile(r"\bnext year\b", re.I), lambda d: str(d.year + 1)),
)


@dataclass(frozen=True)
class Chunk:
    """A window of consecutive turns of one thread (session): the unit a RAG system retrieves.

    Attributes:
        id: a stable id within one distillation (``c0003``).
        memories: the turns, in conversation order.
    """

    id: str
    memories: tuple[Any, ...]

    @property
    def thread_id(self) -> str | None:
        return self.memories[0].thread_id

    @property
    def date(self) -> datetime:
        return self.memories[0].occurred_at

    @property
    def source_ids(self) -> tuple[str, ...]:
        return tuple(m.id for m in self.memories)

    def render(self, *, max_chars: int = 4000) -> str:
        """The chunk as retrieved context: a dated header, then ``Speaker: text`` lines."""
        head = f"[{format_date(self.date)}" + (f", {self.thread_id}]" if self.thread_id else "]")
        lines = [head] + [f"{m.speaker or m.role}: {m.text}" for m in self.memories]
        return truncate("\n".join(lines), max_chars)


@dataclass(frozen=True, kw_only=True)
class Draft:
    """A candidate training example, before filtering and splitting.

    Attributes:
        kind: one of :data:`KINDS`.
        question: the user message.
        answer: the assistant message.
        source_ids: ids of the memories it was made from (provenance).
        context: the text the answer must be grounded in (for the grounding filter).
        fact: what the question is about; paraphrases of one fact share it, and the
            held-out split never separates a fact from all of its training questions.
        variant: 0 for the main phrasing, 1.. for paraphrases.
        meta: origin (``extractive``/``teacher``), template name, ``expected`` key text...
    """

    kind: str
    question: str
    answer: str
    source_ids: tuple[str, ...]
    context: str
    fact: str
    variant: int = 0
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Entity:
    """Something the history keeps mentioning: a person, place, thing or topic.

    Attributes:
        name: its surface form (``"Lisbon"``, ``"LGBTQ"``) or, for topics, the word.
        type: ``person``, ``place``, ``thing`` or ``topic``.
        mentions: (memory, sentence) pairs in conversation order.
    """

    name: str
    type: str
    mentions: list[tuple[Any, str]] = field(default_factory=list)

    @property
    def source_ids(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(m.id for m, _ in self.mentions))

    def description(self, *, max_mentions: int = 5, max_chars: int = 1200) -> str:
        """A description aggregated from its mentions (first, last and evenly in between)."""
        ms = self.mentions
        first, last = format_date(ms[0][0].occurred_at), format_date(ms[-1][0].occurred_at)
        span = f"on {first}" if first == last else f"between {first} and {last}"
        times = "once" if len(ms) == 1 else f"{len(ms)} times"
        head = f"{self.name} ({self.type}) comes up {times} {span}."
        lines = [f'On {format_date(m.occurred_at)}, {m.speaker or m.role} said: "{s}"'
                 for m, s in _spread(ms, max_mentions)]
        return truncate(" ".join([head] + lines), max_chars)


def _spread(items: Sequence[Any], n: int) -> list[Any]:
    """Up to ``n`` items evenly spread over ``items`` (always the first and the last)."""
    if len(items) <= n:
        return list(items)
    step = (len(items) - 1) / (n - 1)
    return [items[round(i * step)] for i in range(n)]


#: Words the extractive templates add around quoted text; the grounding filter treats them
#: as given (they state how often and when, which the dated context supports).
TEMPLATE_WORDS = ("person place thing topic comes come up times once between step steps "
                  "talked talk talks connected connect connects together conversations "
                  "conversation memory holds recurring themes people places things session "
                  "first latest all most happened related both about said mention")


def _ctx(pairs: Iterable[tuple[Any, str]]) -> str:
    """Dated, attributed context of (memory, sentence) pairs, for the grounding filter."""
    return " ".join(f"{format_date(m.occurred_at)} {m.speaker or m.role}: {s}" for m, s in pairs)


def _key(*parts: Any) -> str:
    return hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=6).hexdigest()


# -- chunks -----------------------------------------------------------------------------------

def chunk_memories(memories: Iterable[Any], *, max_turns: int = 8,
                   max_chars: int = 1500) -> list[Chunk]:
    """Group memories into chunks of consecutive turns of one thread.

    Memories are ordered by thread (in order of first appearance), then time; a chunk ends
    at a thread change, after ``max_turns`` turns, or before it would exceed ``max_chars``.

    Example:
        >>> chunk_memories([])
        []
    """
    by_thread: dict[Any, list[Any]] = {}
    for m in sorted(memories, key=lambda m: (m.occurred_at, m.seq)):
        by_thread.setdefault(m.thread_id, []).append(m)
    chunks: list[Chunk] = []
    for thread in by_thread.values():
        cur: list[Any] = []
        size = 0
        for m in thread:
            if cur and (len(cur) >= max_turns or size + len(m.text) > max_chars):
                chunks.append(Chunk(f"c{len(chunks):04d}", tuple(cur)))
                cur, size = [], 0
            cur.append(m)
            size += len(m.text)
        if cur:
            chunks.append(Chunk(f"c{len(chunks):04d}", tuple(cur)))
    return chunks


# -- local ------------------------------------------------------------------------------------

def topic_phrase(text: str, *, exclude: Iterable[str] = ()) -> str | None:
    """A short phrase saying what a turn is about, or None for small talk.

    Prefers a name mentioned in it (not the excluded speakers), else the longest run of
    consecutive content words (up to four; time words trimmed).

    Example:
        >>> topic_phrase("I went to an LGBTQ support group yesterday and it was powerful.")
        'LGBTQ support group'
        >>> topic_phrase("Thanks, you too!") is None
        True
    """
    exclude = [e for e in exclude if e]
    skip = {e.lower() for e in exclude}
    runs: list[list[str]] = []
    run: list[str] = []
    for tok in re.findall(r"[A-Za-z0-9][A-Za-z0-9'’\-]*|[.,!?;:()\"“”\[\]]", text) + [""]:
        low = tok.lower().replace("’", "'")
        if tok and tok[0].isalnum() and low not in STOPWORDS and low not in _TIME_WORDS \
                and low not in _WEAK \
                and len(low) > 2 and low not in skip and not low.endswith("'s") \
                and not (tok[0].isupper() and _is_nickname(tok, exclude)):
            run.append(tok)
            continue
        if run:
            runs.append(run[:4])
        run = []
    name = next((n for n in _names(text) if n.lower() not in skip
                 and not _is_nickname(n, exclude)), None)
    if name:  # a name, widened to the run of content words it stands in ("LGBTQ support group")
        for r in runs:
            joined = " ".join(r)
            if name in joined:
                return joined[joined.index(name):]
        return name
    best = max(runs, key=lambda r: len(content_words(" ".join(r))), default=[])
    return " ".join(best) if best and len(" ".join(best)) >= 4 else None


def _name_spans(text: str) -> list[tuple[str, int, bool]]:
    """Capitalised names in ``text``: (name, start, whether it opens a sentence)."""
    out = []
    for match in _NAME.finditer(text):
        raw = match.group(0).split()
        parts = [p for p in raw
                 if p.lower().replace("’", "'").removesuffix("'s") not in _NOT_NAMES]
        if not parts:
            continue
        before = text[: match.start()].rstrip()
        opener = (not before or before[-1] in ".!?\"“(:") and raw[0] == parts[0] \
            and len(parts) == 1 and not parts[0].isupper()
        name = " ".join(parts).strip("'’-")
        if name.endswith(("'s", "’s")):
            name = name[:-2]
        if len(name) >= 2:
            out.append((name, match.start(), opener))
    return out


def _names(text: str) -> list[str]:
    """Names in ``text``, leaving out single capitalised words that only open a sentence."""
    return [n for n, _, opener in _name_spans(text) if not opener]


def _is_nickname(name: str, people: Iterable[str]) -> bool:
    """Whether ``name`` is one of ``people`` or a short form of one ("Mel" for "Melanie")."""
    low = name.lower()
    return any(p and (p.lower() == low or (len(low) >= 3 and p.lower().startswith(low)))
               for p in people)


def resolve_relative_date(text: str, when: datetime) -> str | None:
    """The date a relative time word in ``text`` points to, seen from ``when``.

    Example:
        >>> from datetime import datetime
        >>> resolve_relative_date("I went there yesterday.", datetime(2023, 5, 8))
        '7 May 2023'
        >>> resolve_relative_date("I went there.", datetime(2023, 5, 8)) is None
        True
    """
    for pattern, fn in _RELATIVE:
        if pattern.search(text):
            return fn(when)
    return None


def key_passage(text: str, topic: str | None = None, *, max_chars: int = 240) -> str:
    """The informative part of a turn: its sentences minus greetings and reactions.

    Chat turns wrap a fact in small talk ("Hey Mel! Great to hear from you. I finished the
    walnut table last week!"). Answers quote only the sentences that carry content (the
    one naming the topic first), up to ``max_chars``: fewer tokens to train on, and a
    shorter target the small model can actually memorise.

    Example:
        >>> key_passage("Hey Mel! Thanks so much. I finished a walnut table for a client.")
        'I finished a walnut table for a client.'
    """
    sents = sentences(text) or [text]
    rich = [s for s in sents if len(content_words(s)) >= 2] or sents
    if topic:
        first = [s for s in rich if topic.lower() in s.lower()]
        rich = first + [s for s in rich if s not in first]
    out: list[str] = []
    for s in rich:
        if out and len(" ".join(out + [s])) > max_chars:
            break
        out.append(s)
    order = {s: i for i, s in enumerate(sents)}
    return " ".join(sorted(out, key=lambda s: order.get(s, 0)))


def local_drafts(chunk: Chunk, *, min_content_words: int = 3, max_answer_chars: int = 1000
                 ) -> list[Draft]:
    """Extractive local questions for every informative turn of a chunk.

    Per turn: "What did S say about T on D?" (main), "What did S mention about T?"
    (paraphrase), and "When did S talk about T?" (temporal, with relative dates such as
    "yesterday" resolved against the session date). The answers quote the turn's key
    passage (:func:`key_passage`), what a RAG system that retrieved this chunk would answer.
    """
    speakers = {m.speaker for m in chunk.memories if m.speaker}
    context = chunk.render()
    out: list[Draft] = []
    for m in chunk.memories:
        if len(content_words(m.text)) < min_content_words:
            continue
        topic = topic_phrase(m.text, exclude=speakers)
        if not topic:
            continue
        who = m.speaker or "the user"
        date = format_date(m.occurred_at)
        quote = truncate(key_passage(m.text, topic), max_answer_chars)
        said = f'On {date}, {who} said: "{quote}"'
        fact = _key("local", m.id)
        base = dict(kind="local", source_ids=(m.id,), context=context, fact=fact)
        meta = {"origin": "extractive", "expected": quote}
        out.append(Draft(question=f"What did {who} say about {topic} on {date}?", answer=said,
                         variant=0, meta={**meta, "template": "said_on"}, **base))
        out.append(Draft(question=f"What did {who} mention about {topic}?", answer=said,
                         variant=1, meta={**meta, "template": "mention"}, **base))
        when = resolve_relative_date(m.text, m.occurred_at)
        answer = f"{who} talked about {topic} on {date}."
        if when and when != date:
            answer += f" It happened {when if when[0].isalpha() else 'on ' + when}."
        out.append(Draft(question=f"When did {who} talk about {topic}?", answer=answer,
                         variant=2, meta={"origin": "extractive", "template": "when",
                                          "expected": f"{date} {when or ''}".strip()}, **base))
    return out


# -- global -----------------------------------------------------------------------------------

def extract_entities(memories: Sequence[Any], *, max_entities: int = 40, max_topics: int = 30,
                     min_mentions: int = 2) -> list[Entity]:
    """People, places, things and recurring topics across the whole history.

    Names are capitalised phrases (sentence openers excluded unless seen capitalised
    mid-sentence too); the type comes from cue words before a mention ("in Lisbon" is a
    place, "my friend Jo" a person) and speakers are people. Topics are content words that
    one speaker uses in at least ``min_mentions`` turns of at least two threads.
    """
    speakers = {m.speaker for m in memories if m.speaker}
    spans = [(m, sent, _name_spans(sent))
             for m in memories for sent in sentences(m.text) or [m.text]]
    # A capitalised word that opens a sentence counts only if it is capitalised elsewhere too.
    mid = {n.lower() for _, _, sp in spans for n, _, opener in sp if not opener} | \
        {s.lower() for s in speakers}
    found: dict[str, Entity] = {}
    cues: dict[str, Counter] = defaultdict(Counter)
    for m, sent, sp in spans:
        for name, start, opener in sp:
            key = name.lower()
            if opener and key not in mid:
                continue
            ent = found.setdefault(key, Entity(name=name, type="thing"))
            if not ent.mentions or ent.mentions[-1][0] is not m:
                ent.mentions.append((m, sent))
            before = sent[:start]
            if _PLACE_CUE.search(before):
                cues[key]["place"] += 1
            elif _PERSON_CUE.search(before):
                cues[key]["person"] += 1
    for key, ent in found.items():
        if ent.name in speakers:
            ent.type = "person"
        elif cues[key]:
            ent.type = cues[key].most_common(1)[0][0]
    names = [e for e in found.values()
             if len(e.mentions) >= min_mentions and not _is_nickname(e.name, speakers)]
    names.sort(key=lambda e: (-len(e.mentions), e.name))
    people = [Entity(name=s, type="person", mentions=[(m, m.text) for m in memories
                                                      if m.speaker == s])
              for s in sorted(speakers)]
    return [p for p in people if p.mentions] + names[:max_entities] + _topics(
        memories, max_topics=max_topics, min_mentions=max(2, min_mentions),
        skip={k for k in found} | {s.lower() for s in speakers})


def _topics(memories: Sequence[Any], *, max_topics: int, min_mentions: int,
            skip: set[str]) -> list[Entity]:
    """Recurring content words per speaker, weighted by how specific they are."""
    doc_freq: Counter = Counter()
    per: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for m in memories:
        seen = set()
        for w in words(m.text):
            if w in STOPWORDS or w in _TIME_WORDS or w in _WEAK or len(w) < 4 or w in skip \
                    or w.isdigit():
                continue
            stem = content_words(w)
            if not stem or stem[0] in seen:
                continue
            seen.add(stem[0])
            doc_freq[stem[0]] += 1
            per[(m.speaker or "", stem[0])].append((m, w))
    n = max(1, len(memories))
    scored = []
    for (speaker, stem), hits in per.items():
        threads = {m.thread_id for m, _ in hits}
        if len(hits) < min_mentions or len(threads) < 2:
            continue
        idf = math.log(n / doc_freq[stem])
        if idf < 1.0:  # in more than a third of all turns: chatter, not a topic
            continue
        surface = Counter(w for _, w in hits).most_common(1)[0][0]
        scored.append((len(hits) * idf, speaker, surface, hits))
    scored.sort(key=lambda t: (-t[0], t[2]))
    out = []
    for _, speaker, surface, hits in scored[:max_topics]:
        ment = [(m, _sentence_with(m.text, w)) for m, w in hits]
        ent = Entity(name=surface, type="topic", mentions=ment)
        ent.speaker = speaker  # type: ignore[attr-defined]
        out.append(ent)
    return out


def _sentence_with(text: str, word: str) -> str:
    for s in sentences(text) or [text]:
        if word in words(s):
            return s
    return text


def relations(entities: Sequence[Entity], *, max_relations: int = 30,
              min_shared: int = 2) -> list[tuple[Entity, Entity, list[tuple[Any, str]]]]:
    """Pairs of entities mentioned in the same turns, with the shared mentions."""
    by_mem: dict[str, list[Entity]] = defaultdict(list)
    for e in entities:
        if e.type == "topic":
            continue
        for mid in e.source_ids:
            by_mem[mid].append(e)
    pairs: dict[tuple[str, str], list[str]] = defaultdict(list)
    lookup = {e.name: e for e in entities}
    for mid, ents in by_mem.items():
        for i, a in enumerate(ents):
            for b in ents[i + 1:]:
                if a.name != b.name:
                    key = tuple(sorted((a.name, b.name)))
                    pairs[key].append(mid)  # type: ignore[index]
    out = []
    for (a, b), mids in sorted(pairs.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        if len(mids) < min_shared:
            continue
        ea, eb = lookup[a], lookup[b]
        shared = set(mids)
        ment = [(m, s) for m, s in ea.mentions if m.id in shared]
        if eb.type != "person":
            ment = [(m, s) for m, s in eb.mentions if m.id in shared] or ment
        out.append((ea, eb, ment))
        if len(out) >= max_relations:
            break
    return out


def _steps(mentions: Sequence[tuple[Any, str]], n: int = 4) -> str:
    return " ".join(f'Step {i}: on {format_date(m.occurred_at)}, {m.speaker or m.role} said: "{s}"'
                    for i, (m, s) in enumerate(_spread(mentions, n), start=1))


def global_drafts(entities: Sequence[Entity], *, max_answer_chars: int = 1200) -> list[Draft]:
    """Templated questions per entity type and per relation, answered from the aggregates."""
    out: list[Draft] = []
    for e in entities:
        desc = e.description(max_chars=max_answer_chars)
        ids = e.source_ids
        ctx = _ctx(e.mentions) + " " + e.name
        fact = _key("entity", e.type, e.name, getattr(e, "speaker", ""))
        base = dict(kind="global", source_ids=ids, context=ctx, fact=fact)
        meta = {"origin": "extractive", "entity": e.name, "entity_type": e.type}
        if e.type == "topic":
            who = getattr(e, "speaker", "") or "the user"
            ans = truncate(f"{who} talked about {e.name} {len(e.mentions)} times. "
                           + _steps(e.mentions), max_answer_chars)
            out.append(Draft(question=f"What has {who} said about {e.name}?", answer=ans,
                             variant=0, meta={**meta, "template": "topic"}, **base))
            out.append(Draft(question=f"How often does {who} bring up {e.name}, and what about?",
                             answer=ans, variant=1, meta={**meta, "template": "topic_often"},
                             **base))
            continue
        out.append(Draft(question=f"What do you know about {e.name}?", answer=desc, variant=0,
                         meta={**meta, "template": "know"}, **base))
        if e.type == "person":
            q = f"Who is {e.name}?"
        elif e.type == "place":
            q = f"Who mentioned {e.name}, and when?"
        else:
            q = f"When did {e.name} come up?"
        out.append(Draft(question=q, answer=desc, variant=1,
                         meta={**meta, "template": f"{e.type}_q"}, **base))
    for a, b, ment in relations(entities):
        ids = tuple(dict.fromkeys(m.id for m, _ in ment))
        ans = truncate(f"{a.name} and {b.name} come up together {len(ids)} times. "
                       + _steps(ment) + f" So {a.name} and {b.name} are connected through "
                       "these conversations.", max_answer_chars)
        base = dict(kind="global", source_ids=ids, context=_ctx(ment) + f" {a.name} {b.name}",
                    fact=_key("relation", a.name, b.name))
        meta = {"origin": "extractive", "relation": [a.name, b.name]}
        out.append(Draft(question=f"How are {a.name} and {b.name} related?", answer=ans,
                         variant=0, meta={**meta, "template": "related"}, **base))
        out.append(Draft(question=f"What connects {a.name} with {b.name}?", answer=ans,
                         variant=1, meta={**meta, "template": "connects"}, **base))
    return out


# -- broader ----------------------------------------------------------------------------------

def broader_drafts(chunks: Sequence[Chunk], entities: Sequence[Entity], *,
                   max_answer_chars: int = 1200) -> list[Draft]:
    """Per chunk, one question that combines it with another source about the same thing.

    The other source is the nearest-in-time mention of an entity or topic of this chunk in
    a different thread: the answer puts both, dated, side by side.
    """
    by_mem: dict[str, list[Entity]] = defaultdict(list)
    for e in entities:
        if e.type != "person":
            for mid in e.source_ids:
                by_mem[mid].append(e)
    out: list[Draft] = []
    for chunk in chunks:
        done = False
        for m in chunk.memories:
            for e in by_mem.get(m.id, ()):
                others = [(o, s) for o, s in e.mentions if o.thread_id != chunk.thread_id]
                if not others:
                    continue
                here = next(s for o, s in e.mentions if o.id == m.id)
                o, s = min(others, key=lambda p: abs((p[0].occurred_at - m.occurred_at)
                                                     .total_seconds()))
                d1, d2 = format_date(m.occurred_at), format_date(o.occurred_at)
                earlier, later = ((m, here, d1), (o, s, d2)) if m.occurred_at <= o.occurred_at \
                    else ((o, s, d2), (m, here, d1))
                q = (f"What did {m.speaker or 'the user'} say about {e.name} on {d1}, and how "
                     f"does it connect to what was said about it on {d2}?")
                ans = truncate(
                    f'On {earlier[2]}, {earlier[0].speaker or "the user"} said: "{earlier[1]}" '
                    f'On {later[2]}, {later[0].speaker or "the user"} said: "{later[1]}" '
                    f"Both are about {e.name}.", max_answer_chars)
                out.append(Draft(kind="broader", question=q, answer=ans,
                                 source_ids=(m.id, o.id),
                                 context=_ctx([(m, here), (o, s)]) + " " + e.name,
                                 fact=_key("broader", m.id, o.id), variant=0,
                                 meta={"origin": "extractive", "entity": e.name,
                                       "template": "combine", "expected": f"{here} {s}"}))
                done = True
                break
            if done:
                break
    return out


# -- digest -----------------------------------------------------------------------------------

def _key_sentences(memories: Sequence[Any], doc_freq: Counter, n_docs: int, k: int
                   ) -> list[tuple[Any, str]]:
    """The ``k`` most informative sentences (sum of idf of their content words), in order."""
    scored = []
    for pos, m in enumerate(memories):
        for s in sentences(m.text) or [m.text]:
            cw = set(content_words(s))
            if len(cw) < 3:
                continue
            score = sum(math.log(n_docs / (1 + doc_freq[w])) for w in cw) / (1 + len(cw)) ** 0.3
            scored.append((score, pos, m, s))
    top = sorted(scored, key=lambda t: (-t[0], t[1]))[:k]
    return [(m, s) for _, _, m, s in sorted(top, key=lambda t: t[1])]


def digest_drafts(memories: Sequence[Any], entities: Sequence[Entity], *,
                  max_answer_chars: int = 1500) -> list[Draft]:
    """A summary of the whole memory, per-session digests, habits and change over time."""
    if not memories:
        return []
    mems = sorted(memories, key=lambda m: (m.occurred_at, m.seq))
    doc_freq: Counter = Counter()
    for m in mems:
        doc_freq.update(set(content_words(m.text)))
    n = len(mems)
    threads: dict[Any, list[Any]] = {}
    for m in mems:
        threads.setdefault(m.thread_id, []).append(m)
    speakers = sorted({m.speaker for m in mems if m.speaker})
    who = " and ".join(speakers) if speakers else "the user"
    first, last = format_date(mems[0].occurred_at), format_date(mems[-1].occurred_at)
    topics = [e for e in entities if e.type == "topic"]
    named = [e for e in entities if e.type not in ("topic", "person")]
    all_ids = tuple(m.id for m in mems)
    out: list[Draft] = []

    def add(q: str, a: str, fact: str, ids: tuple[str, ...], variant: int, template: str,
            ctx: str) -> None:
        out.append(Draft(kind="digest", question=q, answer=truncate(a, max_answer_chars),
                         source_ids=ids, context=ctx, fact=fact, variant=variant,
                         meta={"origin": "extractive", "template": template}))

    # The whole memory.
    sess_lines = []
    for tid, ms in threads.items():
        ks = _key_sentences(ms, doc_freq, n, 1)
        if ks:
            sess_lines.append(f"{format_date(ms[0].occurred_at)}: {ks[0][0].speaker or 'user'} "
                              f"- {ks[0][1]}")
    theme_names = list(dict.fromkeys(e.name for e in topics[:8]))
    thing_names = [e.name for e in named[:8]]
    summary = (f"The memory holds {len(threads)} conversation(s) between {who}, from {first} to "
               f"{last}. "
               + (f"Recurring themes: {', '.join(theme_names)}. " if theme_names else "")
               + (f"People, places and things that come up: {', '.join(thing_names)}. "
                  if thing_names else "") + "Session by session: " + " | ".join(sess_lines))
    ctx_all = _ctx((m, m.text) for m in mems) + " " + " ".join(e.name for e in entities)
    fact = _key("digest", "summary")
    add("Summarise everything you remember about our conversations.", summary, fact, all_ids, 0,
        "summary", ctx_all)
    add("What is the big picture of what we have talked about?", summary, fact, all_ids, 1,
        "big_picture", ctx_all)
    add("When did our conversations start, and when was the latest one?",
        f"The first conversation was on {first} and the latest on {last}, "
        f"{len(threads)} conversation(s) in all.", _key("digest", "span"), all_ids, 0, "span",
        ctx_all)
    # Each session.
    for tid, ms in threads.items():
        date = format_date(ms[0].occurred_at)
        ks = _key_sentences(ms, doc_freq, n, 3)
        if not ks:
            continue
        body = " ".join(f'{m.speaker or "The user"} said: "{s}"' for m, s in ks)
        people = " and ".join(sorted({m.speaker for m in ms if m.speaker})) or "we"
        ans = f"On {date}, {people} talked. " + body
        ids = tuple(m.id for m in ms)
        fact = _key("digest", "session", tid)
        ctx = _ctx((m, m.text) for m in ms)
        add(f"What happened in the conversation on {date}?", ans, fact, ids, 0, "session", ctx)
        add(f"What did we talk about on {date}?", ans, fact, ids, 1, "session_alt", ctx)
    # Habits and change over time, per speaker.
    for s in speakers:
        mine = [m for m in mems if m.speaker == s]
        own = [e for e in topics if getattr(e, "speaker", None) == s][:5]
        if own:
            ans = (f"{s} talks most about " + ", ".join(f"{e.name} ({len(e.mentions)} times)"
                                                        for e in own) + ".")
            ids = tuple(dict.fromkeys(i for e in own for i in e.source_ids))
            fact = _key("digest", "habits", s)
            ctx = _ctx(p for e in own for p in e.mentions) + " " + " ".join(e.name for e in own)
            add(f"What does {s} talk about most?", ans, fact, ids, 0, "habits", ctx)
            add(f"What are {s}'s recurring themes?", ans, fact, ids, 1, "themes", ctx)
        by_thread: dict[Any, list[Any]] = {}
        for m in mine:
            by_thread.setdefault(m.thread_id, []).append(m)
        if len(by_thread) >= 2:
            picks = []
            for ms in _spread(list(by_thread.values()), 4):
                ks = _key_sentences(ms, doc_freq, n, 1)
                if ks:
                    picks.append(ks[0])
            if len(picks) >= 2:
                parts = [f'on {format_date(m.occurred_at)} {s} said: "{t}"' for m, t in picks]
                ans = ("Over time, " + "; then ".join(parts) + ".")
                ids = tuple(m.id for m, _ in picks)
                add(f"How have things changed for {s} over time?", ans, _key("digest", "change", s),
                    ids, 0, "change", _ctx(picks))
    return out
