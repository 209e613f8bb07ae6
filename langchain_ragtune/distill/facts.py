"""Atomic facts out of conversation turns, and the question forms that teach them.

A LoRA adapter learns a fact it can *answer questions about* only when the fact is short,
stated in the third person with speakers and dates resolved, and seen in several forms
(Allen-Zhu and Li, "Physics of Language Models, Part 3.1", arXiv 2309.14316: rephrased
copies per fact made question answering work; a single form was memorised but not
retrievable). Quoting whole turns, as the first recipe did, spent the CPU on filler and
taught one form per fact.

So each first-person clause of a turn becomes a :class:`Fact` ("I went to a LGBTQ support
group yesterday", said by Caroline on 8 May 2023 -> subject Caroline, verb go, object "a
LGBTQ support group", 7 May 2023) with the short answers questions want (the object, the
date, the speaker), and :func:`fact_questions` writes its question forms in both
directions. Two disjoint sets of templates exist: the *training* forms, and the *held-out*
forms used only to measure whether the adapter answers a trained fact asked in words it
never saw (so the measurement cannot leak into training).

The parsing is rules over the words of chat English: a verb is recognised by lemminflect's
lexicon (MIT licence, its data ships in the wheel), not by a statistical tagger, so it runs
anywhere without a model. It misses facts a strong teacher would find; a teacher, when
configured, adds its own question/answer pairs on top (:mod:`.teacher`).

Example:
    >>> from datetime import datetime, timezone
    >>> when = datetime(2023, 5, 8, 13, 56, tzinfo=timezone.utc)
    >>> f = extract_facts("I went to a LGBTQ support group yesterday and it was so powerful.",
    ...                   speaker="Caroline", when=when)[0]
    >>> f.statement
    'Caroline went to a LGBTQ support group on 7 May 2023.'
    >>> [q for q, a in fact_questions(f)][:2]
    ['Where did Caroline go?', 'Tell me what Caroline went to.']
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any, Iterable, Sequence

from langchain_ragtune.distill.text import content_words, format_date

__all__ = ["Fact", "digest_fact_drafts", "extract_facts", "fact_drafts", "fact_questions",
           "facts_from_memories", "global_fact_drafts", "heldout_questions"]

# -- words ----------------------------------------------------------------------------------

_SPACE = re.compile(r"\s+")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'“])|\s+[—–]\s+|\s+-\s+")
_CLAUSE_END = re.compile(
    r"\s*(?:[,;:!?.…]|\s[—–-]\s|\b(?:and it|and that|and this|but|because|'cause|cuz|which|"
    r"so that|so it|so I|since|while|when I|when we|it was|that was|who)\b)")
_ADVERBS = frozenset("""just recently finally also actually really even already still totally
definitely literally only again always often sometimes usually never ever kinda sorta
""".split())
# Objects that carry no fact ("I did it", "I loved that").
_EMPTY_OBJECTS = frozenset("""it that this them those these so one some something anything
everything nothing much lots lot a an the you him her me us myself yourself here there
""".split())
# Verbs whose clauses are reactions or talk, not facts about the speaker's life.
_WEAK_VERBS = frozenset("""be have do say tell think know guess mean hope wish feel bet suppose
agree thank appreciate love like hate want need get let make see look sound seem wonder
remember forget imagine believe understand realize realise hear care mind try can will
may might must could would should shall
""".split())
# Present-tense verbs that state lasting facts about the speaker (likes, plans, habits).
_STATE_VERBS = frozenset("""love like enjoy prefer hate own play collect volunteer work study
practice practise teach live plan want""".split())
_PREPOSITIONS = ("to", "at", "in", "into", "on", "for", "with", "from", "about", "by", "over",
                 "around", "through", "across")
_PLACE_PREPS = ("to", "at", "in", "into", "from")
_FIRST_PERSON = {"my": "{p}", "me": "{o}", "myself": "{o}", "mine": "{p}", "our": "{p}",
                 "us": "{o}", "ourselves": "{o}"}
_DAY_WORDS = re.compile(r"\b(?:yesterday|today|tonight|this (?:morning|afternoon|evening|"
                        r"week|month|year|weekend)|last (?:night|week|weekend|month|year|"
                        r"monday|tuesday|wednesday|thursday|friday|saturday|sunday)|"
                        r"(?:a few|two|three|\d+) (?:days|weeks|months|years) ago|recently|"
                        r"the other day|next (?:week|month|year)|tomorrow|these days|lately|"
                        r"nowadays|at the moment|right now)\b", re.I)


@lru_cache(maxsize=8192)
def _verb_lemma(word: str) -> tuple[str | None, str]:
    """(lemma, form) of ``word`` as a verb: form is ``past``, ``ing``, ``pres`` (base or
    3rd person) or ``None``-lemma when lemminflect does not know it as a verb."""
    from lemminflect import getAllInflections, getAllLemmas

    w = word.lower()
    lemmas = getAllLemmas(w).get("VERB")
    if not lemmas:
        return None, ""
    lemma = lemmas[0]
    forms = getAllInflections(lemma, upos="VERB")
    if w in forms.get("VBD", ()) or w in forms.get("VBN", ()):
        return lemma, "past"
    if w in forms.get("VBG", ()):
        return lemma, "ing"
    return lemma, "pres"


@lru_cache(maxsize=8192)
def _inflect(lemma: str, tag: str) -> str:
    from lemminflect import getInflection

    forms = getInflection(lemma, tag=tag)
    return forms[0] if forms else lemma


def _is_verb_only(word: str) -> bool:
    from lemminflect import getAllLemmas

    return set(getAllLemmas(word.lower())) <= {"VERB"}


def _is_noun_only(word: str) -> bool:
    from lemminflect import getAllLemmas

    lemmas = getAllLemmas(word.lower())
    return "VERB" not in lemmas


def _clean(text: str) -> str:
    text = text.replace("’", "'").replace("‘", "'").replace("“", '"').replace("”", '"')
    text = re.sub(r"[^\w\s'\".,;:!?&%$#@/()+-—–…]", " ", text)  # emoji and symbols
    return _SPACE.sub(" ", text).strip()


_I_FORMS = {"i'm": "{s} is", "i am": "{s} is", "i've": "{s} has", "i'll": "{s} will",
            "i'd": "{s} would", "i": "{s}"}


def _third_person(text: str, subject: str) -> str:
    """Rewrite the speaker's first-person words inside an object phrase."""
    possessive = f"{subject}'s"

    def sub(m: re.Match[str]) -> str:
        w = m.group(0)
        rule = _FIRST_PERSON[w.lower()]
        return rule.format(p=possessive, o=subject)

    text = re.sub(r"\b(?:i'm|i am|i've|i'll|i'd|i)\b",
                  lambda m: _I_FORMS[m.group(0).lower()].format(s=subject), text, flags=re.I)
    return re.sub(r"\b(?:my|me|myself|mine|our|us|ourselves)\b", sub, text, flags=re.I)


def _object(rest: str) -> str:
    """The object phrase at the start of ``rest``: up to the end of its clause, without
    time words (the fact's date carries those) and trailing fillers."""
    m = _CLAUSE_END.search(rest)
    obj = rest[: m.start()] if m else rest
    for m in re.finditer(r"\s(?:and|or)\s+(\w+)", obj):
        nxt = m.group(1).lower()
        lemma, form = _verb_lemma(nxt)
        if nxt in ("i", "we", "it", "they", "he", "she", "you") or (
                lemma is not None and form in ("past", "ing") and _is_verb_only(nxt)):
            obj = obj[: m.start()]
            break
    obj = _DAY_WORDS.sub("", obj)
    obj = re.sub(r"\b(?:too|as well|so much|a lot|lol|haha|though|now|then|again|yet)\s*$",
                 "", obj.strip(), flags=re.I)
    obj = _SPACE.sub(" ", obj).strip(" ,.'\"")
    words = obj.split()
    if len(words) > 12:  # a long tail is usually a second clause
        obj = " ".join(words[:12])
    return obj


def _informative(obj: str) -> bool:
    words = obj.lower().split()
    if not words or all(w in _EMPTY_OBJECTS for w in words):
        return False
    if re.search(r"\b(?:you|your|yours|yourself)\b", obj, re.I):
        return False  # about the listener: not a fact about the speaker
    return len(content_words(obj)) >= 1


# -- facts ----------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class Fact:
    """One atomic fact about a speaker, with the short answers questions about it want.

    Attributes:
        subject: who it is about (the speaker, resolved from "I").
        lemma: the verb's base form (``go``); ``be`` for attributes ("my goal is ...").
        predicate: the verb as the statement says it (``went``, ``is learning``, ``loves``).
        prep: a preposition between verb and object (``to``), or empty.
        obj: the object phrase, third person (``a LGBTQ support group``).
        tense: ``past``, ``progressive``, ``present`` or ``attribute``.
        when: the date it happened, as people write it (``7 May 2023``), or empty.
        said_on: the date of the turn.
        source_id: the memory it came from.
        attribute: for ``attribute`` facts, the thing described (``goal`` in "my goal is").
    """

    subject: str
    lemma: str
    predicate: str
    obj: str
    tense: str
    when: str = ""
    said_on: str = ""
    prep: str = ""
    attribute: str = ""
    source_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def key(self) -> str:
        """A stable id: paraphrases of this fact share it."""
        blob = "\x1f".join((self.subject, self.lemma, self.prep, self.obj.lower(), self.when))
        return hashlib.blake2b(blob.encode(), digest_size=6).hexdigest()

    @property
    def statement(self) -> str:
        """The fact as one third-person sentence with its date."""
        if self.tense == "attribute":
            text = f"{self.subject}'s {self.attribute} is {self.obj}"
        else:
            prep = f" {self.prep}" if self.prep else ""
            text = f"{self.subject} {self.predicate}{prep} {self.obj}"
        if self.when and self.tense == "past":
            text += f" {_date_prep(self.when)} {self.when}"
        return text + "."

    @property
    def answer(self) -> str:
        """The short answer to the object question."""
        return self.obj


def _date_prep(when: str) -> str:
    """``on 7 May 2023``, ``in May 2023``, ``in 2022``, ``during the week before ...``."""
    if re.fullmatch(r"\d{1,2} \w+ \d{4}", when):
        return "on"
    return "in" if re.fullmatch(r"(?:\w+ )?\d{4}", when) else "during"


def _when(sentence: str, said: datetime | None) -> str:
    if said is None:
        return ""
    from langchain_ragtune.distill.extract import resolve_relative_date

    return resolve_relative_date(sentence, said) or ""


def _clauses(text: str) -> list[str]:
    out = []
    for part in _SENTENCE.split(_clean(text)):
        out.extend(p.strip() for p in re.split(r"(?<=[.!?])\s+", part) if p.strip())
    return out


_ADVERB_RE = "|".join(sorted(_ADVERBS))
_I_CLAUSE = re.compile(rf"\b(?:I|we)(?:'ve| have)?\s+((?:(?:{_ADVERB_RE})\s+){{0,2}})(\w+)\s+(.*)",
                       re.I)
_I_AM = re.compile(rf"\b(?:I'm|I am|we're|we are)\s+((?:(?:{_ADVERB_RE})\s+){{0,2}})(\w+ing)\s+"
                   r"(.*)", re.I)
_PLAN = re.compile(r"\b(?:gonna|going to|planning to|planning on|hoping to|about to)\s+"
                   r"(\w+)\s+(.*)", re.I)
_GERUND_START = re.compile(r"^(?:just |still |also )?([A-Z]\w+ing)\s+(.*)")
_MY_IS = re.compile(r"\b(?:my|our)\s+((?:\w+\s+){0,2}?\w+)\s+(?:is|are|was|were)\s+(.*)", re.I)
_PARTICLES = ("out", "up", "off", "back", "down")
# A finite verb inside what would be the object: the gerund was the sentence's subject.
_CLAUSE_VERB = re.compile(r"\b(?:is|are|was|were|has|have|had|helps|brings|makes|gives|"
                          r"means|lets|keeps|feels)\b", re.I)


def _verb_and_rest(rest: str) -> tuple[str, str, str]:
    """(particle, preposition, object text) after a verb: "figuring out the details" ->
    ("out", "", "the details"); "went to a group" -> ("", "to", "a group")."""
    first, _, tail = rest.partition(" ")
    particle = ""
    if first.lower() in _PARTICLES and tail:
        particle, rest = first.lower(), tail
        first, _, tail = rest.partition(" ")
    if first.lower() in _PREPOSITIONS and tail:
        return particle, first.lower(), tail
    return particle, "", rest


def extract_facts(text: str, *, speaker: str, when: datetime | None = None,
                  source_id: str = "") -> list[Fact]:
    """The facts one turn states about its speaker (first-person clauses), in order.

    Example:
        >>> [f.statement for f in extract_facts("I'm learning the piano! My goal is to "
        ...                                      "adopt a kid.", speaker="Ann")]
        ['Ann is learning the piano.', "Ann's goal is to adopt a kid."]
    """
    if not speaker:
        return []
    said_on = format_date(when) if when else ""
    facts: list[Fact] = []
    seen: set[str] = set()

    def add(lemma: str, predicate: str, rest: str, tense: str, date: str = "",
            attribute: str = "", activity: bool = False) -> None:
        if tense == "attribute" or activity:
            particle, prep, obj_text = "", "", rest
        else:
            particle, prep, obj_text = _verb_and_rest(rest)
        if particle:
            predicate = f"{predicate} {particle}"
        obj = _third_person(_object(obj_text), speaker)
        fact = Fact(subject=speaker, lemma=lemma, predicate=predicate, prep=prep, obj=obj,
                    tense=tense, when=date if tense == "past" else "", said_on=said_on,
                    attribute=attribute, source_id=source_id,
                    extra={k: v for k, v in (("particle", particle), ("activity", activity))
                           if v})
        if fact.key not in seen and _informative(obj):
            seen.add(fact.key)
            facts.append(fact)

    for sentence in _clauses(text):
        if "?" in sentence:  # questions ask, they do not state
            continue
        date = _when(sentence, when)
        planned = False
        for m in _PLAN.finditer(sentence):
            lemma, form = _verb_lemma(m.group(1))
            if lemma is not None and form == "pres" and lemma not in _WEAK_VERBS:
                add(lemma, f"is going to {lemma}", m.group(2), "plan")
                planned = True
        for m in _I_AM.finditer(sentence):
            lemma, form = _verb_lemma(m.group(2))
            if lemma is None or form != "ing" or lemma in _WEAK_VERBS or planned:
                continue
            add(lemma, f"is {m.group(2).lower()}", m.group(3), "progressive")
        g = _GERUND_START.match(sentence)
        if g and not _CLAUSE_VERB.search(_object(g.group(2))):  # "Painting helps me": a subject
            lemma, form = _verb_lemma(g.group(1))
            if lemma is not None and form == "ing" and lemma not in _WEAK_VERBS:
                add(lemma, f"is {g.group(1).lower()}", g.group(2), "progressive")
        for m in _I_CLAUSE.finditer(sentence):
            adverbs = m.group(1).split()
            if any(a.lower() not in _ADVERBS for a in adverbs):
                continue
            word = m.group(2)
            lemma, form = _verb_lemma(word)
            if lemma is None or form == "ing" or lemma == "be":
                continue
            rest = m.group(3)
            if form == "past" and (lemma not in _WEAK_VERBS
                                   or lemma in ("get", "make", "have", "see")):
                if lemma == "use" and rest.lower().startswith("to ") or lemma == "get" \
                        and rest.split(" ", 1)[0].lower() in _PREPOSITIONS:
                    continue  # "used to" is a habit; "got from" lost its object
                if lemma == "go" and re.match(r"\w+ing\b", rest):
                    add("go", "went", rest, "past", date or said_on, activity=True)
                    continue  # "went camping with the kids": asked as what S did
                add(lemma, _inflect(lemma, "VBD"), rest, "past", date or said_on)
            elif form == "pres" and word.lower() == lemma and lemma in _STATE_VERBS:
                to = re.match(r"to (\w+) (.*)", rest)
                if to and _verb_lemma(to.group(1))[1] == "pres":
                    add(to.group(1).lower(),
                        f"{_inflect(lemma, 'VBZ')} to {to.group(1).lower()}", to.group(2),
                        "present")
                else:
                    add(lemma, _inflect(lemma, "VBZ"), rest, "present")
        for m in _MY_IS.finditer(sentence):
            attribute = m.group(1).strip().lower()
            value = m.group(2)
            if (not _is_noun_only(attribute.split()[-1]) or attribute in _EMPTY_OBJECTS
                    or re.match(r"(?:so|really|very|super|pretty|too|such|a bit|about)\b",
                                value, re.I)):
                continue
            add("be", "is", value, "attribute", attribute=_third_person(attribute, speaker))
    return facts


# -- question forms -------------------------------------------------------------------------

def _did(f: Fact) -> str:
    return {"progressive": "is", "present": "does", "plan": "is"}.get(f.tense, "did")


def _question_verb(f: Fact) -> str:
    """The verb as a question puts it after the auxiliary (particle included)."""
    particle = f.extra.get("particle", "")
    if f.tense == "progressive":
        verb = _inflect(f.lemma, "VBG")
    elif f.tense == "plan":
        verb = f"going to {f.lemma}"
    elif f.tense == "present" and " to " in f.predicate:
        verb = f"{_lemma_of(f.predicate.split(' to ')[0])} to {f.lemma}"
    else:
        verb = f.lemma
    return f"{verb} {particle}".strip()


def _lemma_of(word: str) -> str:
    lemma, _ = _verb_lemma(word)
    return lemma or word


def fact_questions(f: Fact) -> list[tuple[str, str]]:
    """The training forms of ``f``: (question, answer) pairs, object first.

    The object is asked in three phrasings, so the answer is tied to the fact rather than to
    one string of words (what makes a fact retrievable by questions never seen); then the
    other directions: when (answer: the date), who (answer: the subject), and the whole
    statement as the answer to what happened. Attributes are asked by name and by value.
    """
    s, v, prep = f.subject, _question_verb(f), f.prep
    tail = f" {prep}" if prep else ""
    out: list[tuple[str, str]] = []
    if f.tense == "attribute":
        out.append((f"What is {s}'s {f.attribute}?", f.obj))
        out.append((f"Tell me {s}'s {f.attribute}.", f.obj))
        out.append((f"Whose {f.attribute} is {f.obj}?", s))
        return out
    if f.extra.get("activity"):
        done = f"{f.predicate} {f.obj}"
        out += [(f"What did {s} do?", done), (f"Tell me what {s} did.", done),
                (f"What activity did {s} go for?", f.obj)]
    else:
        first = (f"Where did {s} {v}?" if prep in _PLACE_PREPS and f.tense == "past"
                 else f"What {_did(f)} {s} {v}{tail}?")
        out += [(first, f.obj),
                (f"Tell me what {s} {f.predicate}{tail}.", f.obj),
                (f"{s} {f.predicate}{tail} what?", f.obj)]
    if f.when and f.tense == "past":
        out.append((f"When did {s} {v}{tail} {f.obj}?", f.when))
        out.append((f"What happened with {s} {_date_prep(f.when)} {f.when}?",
                    f.statement))
    out.append((f"Who {f.predicate}{tail} {f.obj}?", s))
    return out


def heldout_questions(f: Fact) -> list[tuple[str, str]]:
    """Forms that never appear in training (disjoint templates), for measuring recall of a
    trained fact asked in new words. The answer is the object (or, for attributes, the
    description)."""
    s, tail = f.subject, f" {f.prep}" if f.prep else ""
    if f.tense == "attribute":
        return [(f"Can you remind me what {s} told you {s}'s {f.attribute} was?", f.obj)]
    if f.tense == "progressive":
        return [(f"Do you recall what {s} has been {_question_verb(f)}{tail} lately?", f.obj)]
    if f.tense == "plan":
        return [(f"Do you recall what {s} was planning to {f.lemma}{tail}?", f.obj)]
    if f.extra.get("activity"):
        return [(f"Do you recall what {s} went off to do?", f.obj)]
    return [(f"Do you recall what {s} {f.predicate}{tail}?", f.obj)]


def facts_from_memories(memories: Iterable[Any]) -> list[Fact]:
    """Every fact of ``memories`` (store :class:`~langchain_ragtune.store.types.Memory`
    objects), in order, one per (subject, verb, object, date)."""
    out: list[Fact] = []
    seen: set[str] = set()
    for m in memories:
        if getattr(m, "role", "human") not in ("human", "user", None):
            continue  # the assistant's replies are not facts about the user
        for f in extract_facts(m.text, speaker=m.speaker or "the user", when=m.occurred_at,
                               source_id=m.id):
            if f.key not in seen:
                seen.add(f.key)
                out.append(f)
    return out


def answer_in_question(question: str, answer: str) -> bool:
    """Whether the question already gives the answer's content words away."""
    q = set(content_words(question))
    a = set(content_words(answer))
    return bool(a) and a <= q


def questions_ok(pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The pairs whose question does not contain its own answer."""
    return [(q, a) for q, a in pairs if not answer_in_question(q, a)]


# -- drafts ---------------------------------------------------------------------------------

def _month(f: Fact) -> str:
    m = re.search(r"([A-Z][a-z]+ \d{4})$", f.when or f.said_on)
    return m.group(1) if m else ""


def _dated_question(f: Fact) -> str:
    """The object question pinned to the fact's date: tells apart facts that share a verb
    ("What did Caroline make in August 2023?")."""
    s, v, tail = f.subject, _question_verb(f), f" {f.prep}" if f.prep else ""
    if f.tense == "past" and f.when:
        return f"What did {s} {v}{tail} {_date_prep(f.when)} {f.when}?"
    month = re.search(r"[A-Z][a-z]+ \d{4}$", f.said_on)
    when = f"in {month.group(0)}" if month else f"on {f.said_on}"
    if f.tense == "attribute":
        return f"What was {s}'s {f.attribute} {when}?"
    aux = {"progressive": "was", "plan": "was", "present": "did"}.get(f.tense, "did")
    return f"What {aux} {s} {v}{tail} {when}?"


def fact_drafts(facts: Sequence[Fact], *, contexts: dict[str, str] | None = None) -> list[Any]:
    """The local drafts of ``facts``: every training form, then one held-out form each.

    The held-out form (``meta["heldout_form"]``) is assigned to the held-out split whatever
    the sampling: its template is never trained, so it measures whether the fact is known
    rather than whether a string was memorised. Each fact gets one *probe*
    (``meta["probe"]``): a training question answered by the object that no other fact
    shares (adding the dated form where none is), which trained-fact recall asks.
    """
    from collections import Counter

    from langchain_ragtune.distill.extract import Draft

    contexts = contexts or {}
    forms_of = {f.key: questions_ok(fact_questions(f)) for f in facts}
    shared = Counter(q.lower() for forms in forms_of.values() for q in {q for q, _ in forms})
    out: list[Any] = []
    for f in facts:
        context = f"{contexts.get(f.source_id, '')} {f.statement}"
        forms = forms_of[f.key]
        answer = f"{f.predicate} {f.obj}" if f.extra.get("activity") else f.obj
        probe = next((q for q, a in forms if a == answer and shared[q.lower()] == 1), None)
        if probe is None:
            probe = _dated_question(f)
            forms.insert(1, (probe, answer))
        for i, (q, a) in enumerate(forms):
            template = ("fact_attr" if f.tense == "attribute" else
                        "fact_when" if a == f.when else "fact_who" if a == f.subject else
                        "fact_what")
            out.append(Draft(kind="local", question=q, answer=a, source_ids=(f.source_id,),
                             context=context, fact=f.key, variant=i,
                             meta={"origin": "extractive", "template": template,
                                   "expected": a, "statement": f.statement,
                                   "probe": q == probe}))
        for q, a in questions_ok(heldout_questions(f)):
            out.append(Draft(kind="local", question=q, answer=a, source_ids=(f.source_id,),
                             context=context, fact=f.key, variant=len(forms),
                             meta={"origin": "extractive", "template": "fact_heldout",
                                   "expected": a, "heldout_form": True}))
    return out


def global_fact_drafts(facts: Sequence[Fact], *, max_items: int = 5) -> list[Any]:
    """Global drafts: what the whole history says about each person, aggregated over facts
    (likes and habits, what they are working on, what they went to), as short lists."""
    from langchain_ragtune.distill.extract import Draft

    out: list[Any] = []
    by_subject: dict[str, list[Fact]] = {}
    for f in facts:
        by_subject.setdefault(f.subject, []).append(f)
    groups = (
        ("likes", lambda f: f.tense == "present" and f.lemma in ("love", "like", "enjoy"),
         "What does {s} enjoy?"),
        ("activities", lambda f: f.tense in ("present", "progressive")
         and f.lemma not in ("love", "like", "enjoy"), "What is {s} into these days?"),
        ("places", lambda f: f.tense == "past" and f.prep in _PLACE_PREPS
         and not f.extra.get("activity"), "Which events and places did {s} go to?"),
        ("activities_past", lambda f: bool(f.extra.get("activity")),
         "What activities has {s} done?"),
    )
    for s, fs in by_subject.items():
        for name, keep, question in groups:
            chosen = [f for f in fs if keep(f)]
            if len(chosen) < 2:
                continue
            chosen = chosen[-max_items:]  # the latest
            answer = "; ".join(f.obj for f in chosen)
            out.append(Draft(kind="global", question=question.format(s=s), answer=answer,
                             source_ids=tuple(f.source_id for f in chosen),
                             context=" ".join(f.statement for f in chosen),
                             fact=f"global:{s}:{name}", variant=0,
                             meta={"origin": "extractive", "template": f"facts_{name}",
                                   "expected": answer}))
    return out


def digest_fact_drafts(facts: Sequence[Fact], *, max_items: int = 4) -> list[Any]:
    """Digest drafts: what each person did in each month of the history, in a few dated
    statements (the timeline a RAG system would assemble from many chunks)."""
    from langchain_ragtune.distill.extract import Draft

    out: list[Any] = []
    by_key: dict[tuple[str, str], list[Fact]] = {}
    for f in facts:
        if f.tense == "past" and _month(f):
            by_key.setdefault((f.subject, _month(f)), []).append(f)
    for (s, month), fs in by_key.items():
        chosen = sorted(fs, key=lambda f: len(f.statement))[:max_items]
        answer = " ".join(f.statement for f in chosen)
        out.append(Draft(kind="digest", question=f"What did {s} do in {month}?", answer=answer,
                         source_ids=tuple(f.source_id for f in chosen), context=answer,
                         fact=f"digest:{s}:{month}", variant=0,
                         meta={"origin": "extractive", "template": "facts_month",
                               "expected": answer}))
    return out
