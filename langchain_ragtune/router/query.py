"""What a query asks for, read from its words alone: scope, small talk, general knowledge.

Pure and fast (precompiled regular expressions, no model): the router calls
:func:`analyze_query` on every turn, so it must cost microseconds.

*Scope* is the signal RAG-Tuned-LLM (arXiv 2503.16071) found decisive: *specific*,
keyword-matchable questions ("When did Tomas adopt Pepper?") are answered best from
retrieved turns, *holistic* questions about the whole history ("What kind of person is
Priya?", "How has her running changed over the year?") best by a model tuned on that
history. Each side is a weighted lexicon of cues plus a few structural features; the
scope score is ``holistic - specific`` in ``[-1, 1]``.

Example:
    >>> f = analyze_query("Overall, what kind of person is Priya?")
    >>> f.holistic > f.specific, f.smalltalk
    (True, False)
    >>> analyze_query("When did Tomas adopt Pepper?").scope < 0
    True
    >>> analyze_query("hi there, how are you?").smalltalk
    True
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

__all__ = ["QueryFeatures", "analyze_query", "content_terms", "is_echo", "STOPWORDS"]

_I = re.IGNORECASE


def _cues(pairs: list[tuple[str, float]]) -> tuple[tuple[re.Pattern[str], float], ...]:
    return tuple((re.compile(p, _I), w) for p, w in pairs)


#: Holistic cues: the question is about the whole history, a person, a change or a pattern.
HOLISTIC_CUES = _cues([
    (r"\boverall\b", 1.0),
    (r"\bin general\b|\bgenerally\b|\bon the whole\b|\bbroadly\b", 1.0),
    (r"\bsummar(?:y|ies|ise|ize|ised|ized|ising|izing)\b|\brecap\b|\bgist\b", 1.0),
    (r"\bhow (?:has|have|did|does|do|is|are) .{1,80}?\b(?:chang\w*|evolv\w*|grow\w*|grown|"
     r"develop\w*|progress\w*|shift\w*|improv\w*)", 1.0),
    (r"\b(?:chang\w*|evolv\w*|develop\w*) over\b|\bover (?:time|the (?:years|months|weeks|course))\b",
     1.0),
    (r"\bwhat (?:kind|sort|type) of (?:a )?(?:person|people|man|woman|friend|partner|parent|"
     r"character|life)\b", 1.0),
    (r"\bpersonalit\w*|\bcharacter traits?\b|\btemperament\b", 1.0),
    (r"\bhabits?\b|\broutines?\b|\btendenc\w*|\bpatterns?\b|\blifestyle\b", 0.8),
    (r"\busually\b|\btypically\b|\btends? to\b|\boften\b|\bregularly\b|\balways\b", 0.6),
    (r"\bthemes?\b|\bbig picture\b|\bmain (?:topics?|things?|interests?|points?)\b", 1.0),
    (r"\bwhat (?:do|does|did) (?:you|we|i) (?:know|remember|recall) about\b", 0.9),
    (r"\btell me (?:everything|all|more|what you know) about\b|\beverything about\b", 0.9),
    (r"\bdescribe\b|\bcharacteri[sz]e\b|\bportrait\b|\bprofile\b", 0.8),
    (r"\bso far\b|\bthroughout\b|\bacross (?:all|the)\b|\bthe whole\b|\bin all\b", 0.7),
    (r"\bvalues\b|\bpriorit\w*|\bmotivat\w*|\bpassion\w*|\bcares? (?:most )?about\b|\bgoals?\b",
     0.6),
    (r"\brelationship (?:between|with)\b|\bhow (?:are|is) .{1,40}? related\b|\bget along\b", 0.8),
    (r"\b(?:would|might|could) .{1,60}?\b(?:likely|probably|enjoy|prefer|want|be interested)\b",
     0.5),
    (r"\bwhy (?:do|does|did|is|are|was|were)\b", 0.3),
    (r"\b(?:things|ways|interests|hobbies|activities|experiences)\b", 0.3),
])

#: Specific cues: a factoid, a name, a date, a number, a quoted phrase.
SPECIFIC_CUES = _cues([
    (r"^\W*(?:when|where|which|who|whom|whose)\b", 0.8),
    (r"^\W*(?:what|which) (?:time|date|day|month|year|city|country|place|colou?r|breed|book|"
     r"movie|film|song|band|game|number|brand|model)\b", 1.0),
    (r"^\W*how (?:many|much|long|old|often|far)\b", 0.9),
    (r"\bwhat (?:is|was|were|are|'s) (?:the |his |her |their |my |your )?(?:name|title|date|"
     r"time|number|address|price|score|breed|colou?r|age)\b|\bname of\b|\bcalled\b|\bnamed\b",
     1.0),
    (r"\bin (?:which|what) (?:year|month|city|country)\b|\bon (?:which|what) (?:day|date)\b", 1.0),
    (r"\b(?:january|february|march|april|may|june|july|august|september|october|november|"
     r"december)\b|\b(?:19|20)\d\d\b", 0.6),
    (r"\b(?:yesterday|today|tomorrow|last (?:week|month|year|night|weekend)|next (?:week|month|"
     r"year)|ago)\b|\bon (?:monday|tuesday|wednesday|thursday|friday|saturday|sunday)\b", 0.6),
    (r"\b\d+(?:[.,:]\d+)?\b", 0.4),
    (r"[\"“][^\"”]{2,}[\"”]", 0.8),
    (r"^\W*(?:did|does|do|is|was|were|has|have|had) \w+", 0.4),
    (r"^\W*what (?:did|does|do|is|was|were)\b", 0.3),
])

# Whole-message small talk: greetings, thanks, acknowledgements, farewells.
_SMALLTALK_PHRASES = re.compile(
    r"\b(?:hi|hello|hey|hiya|howdy|yo|greetings|good (?:morning|afternoon|evening|night|day)|"
    r"thanks?(?: you)?(?: (?:so|very) much| a lot| again)?|thank you|thx|ty|ok(?:ay)?|k|cool|"
    r"great|nice|awesome|perfect|sure|yes|yeah|yep|no|nope|alright|got it|sounds good|bye|"
    r"goodbye|see (?:you|ya)(?: later| soon)?|cheers|lol|haha+|hah|wow|"
    r"how are (?:you|things)(?: doing)?(?: today)?|how(?:'s| is) it going|what'?s up|sup|"
    r"nice to (?:meet|see) you|pleased to meet you|good to (?:see|hear from) you|"
    r"i(?:'m| am) (?:fine|good|great|ok|okay|well)|doing (?:fine|good|great|well)|"
    r"you too|same here|no problem|np|welcome|there|again|today|friend|buddy|mate|please|"
    r"and you|you|all|everyone|folks)\b",
    _I,
)

# General knowledge: facts about the world, not about the user's history.
_GENERAL_CUES = _cues([
    (r"\bcapital of\b|\bpopulation of\b|\bcurrency of\b|\blargest \w+ (?:in|of) the world\b", 1.0),
    (r"\b(?:define|definition of|meaning of|what does .{1,40}? mean)\b", 1.0),
    (r"\bwho (?:wrote|invented|discovered|painted|composed|founded|directed)\b", 1.0),
    (r"\b(?:explain|how does .{1,40}? work|how do (?:you|i|we|people) (?:make|cook|calculate|"
     r"convert|write|fix))\b", 0.8),
    (r"\b(?:square root|formula|equation|derivative|integral|convert \d)\b|\d+\s*[-+*/x^]\s*\d+",
     1.0),
    (r"\btranslate\b|\bin (?:french|spanish|german|portuguese|italian|japanese|chinese)\b", 0.8),
    (r"^\W*what (?:is|are) (?:a|an) \w+", 0.6),
    (r"\bboiling point\b|\bspeed of light\b|\bdistance (?:from|between) .{1,30}? (?:and|to) \b",
     1.0),
])

# The user asks about their own life or past conversations. A bare "I" is not enough:
# "how do I convert..." is a general question.
_PERSONAL = re.compile(
    r"\b(?:my|me|mine|myself|our|ours|us)\b|\b(?:did|have|had|was|am|were) (?:i|we)\b|"
    r"\b(?:i|we) (?:\w+ed|went|did|said|told|was|were|had|have|got|bought|met|saw|made|took|"
    r"gave|ran|began|wrote|read|left|came|felt|thought|knew|found|lost|won|am)\b|"
    r"\b(?:remember|recall|last time|earlier|you know about)\b|"
    r"\b(?:you|i|we) (?:told|mentioned|said|talked)\b", _I)

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?", _I)
_PROPER = re.compile(r"(?<![.!?]\s)(?<!^)\b[A-Z][a-z]{2,}\b")

#: Function words ignored when counting a query's content terms.
STOPWORDS = frozenset("""
a an the and or but if then else of to in on at by for with from about into over after before
between through during without within under above up down out off again further once here there
when where why how what which who whom whose this that these those am is are was were be been
being have has had having do does did doing would should could can will shall may might must
i me my mine myself we us our ours you your yours he him his she her hers it its they them their
theirs what's who's i'm i've you're he's she's it's we're they're not no nor so too very just
any some all both each few more most other such only own same than s t don't didn't doesn't isn't
wasn't weren't haven't hasn't hadn't won't wouldn't can't cannot tell know please ever also like
get got much many lot thing things one ones really still yet
""".split())


def _score(cues: tuple[tuple[re.Pattern[str], float], ...], text: str) -> tuple[float, list[str]]:
    total, hits = 0.0, []
    for pattern, weight in cues:
        m = pattern.search(text)
        if m:
            total += weight
            hits.append(m.group(0).strip().lower()[:40])
    return min(total, 1.0), hits


def _stem(word: str) -> str:
    # A light suffix strip so "adopted"/"adopt" and "races"/"race" meet; a full stemmer
    # is not worth its cost here.
    for suffix in ("ing", "ed", "es", "s", "ly"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def content_terms(text: str) -> frozenset[str]:
    """Lower-cased, lightly stemmed words of ``text`` that are not function words.

    Example:
        >>> sorted(content_terms("When did Tomas adopt his cat Pepper?"))
        ['adopt', 'cat', 'pepper', 'toma']
    """
    return frozenset(_stem(w) for w in _WORD.findall(text.lower()) if w not in STOPWORDS)


def is_echo(query_terms: frozenset[str], text: str, threshold: float = 0.8) -> bool:
    """Whether ``text`` is the query itself again (the user asked it before).

    The remember node stores every question; searching for the same question later finds
    it first, and it carries no answer. An echo is a question holding at least
    ``threshold`` of the query's content terms and not many more (a statement with the same
    words is an answer, not an echo).

    Example:
        >>> is_echo(content_terms("What is my dog's name?"), "what's my dog's name??")
        True
        >>> is_echo(content_terms("What is my dog's name?"), "My dog's name is Biscuit, a beagle.")
        False
        >>> is_echo(content_terms("Which beer do I brew?"), "I brew my own beer.")
        False
    """
    if not query_terms or not text.rstrip().endswith("?"):
        return False
    hit = content_terms(text)
    return (len(query_terms & hit) >= threshold * len(query_terms)
            and len(hit) * threshold <= len(query_terms))


#: A question about when something happened.
_TEMPORAL = re.compile(r"^\W*(?:when\b|(?:in )?what (?:year|month|day|date|time)\b|"
                       r"how long ago\b)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class QueryFeatures:
    """What the words of a query say about the memory it needs.

    Attributes:
        holistic: strength of the holistic cues, in ``[0, 1]``.
        specific: strength of the specific cues, in ``[0, 1]``.
        smalltalk: the whole message is a greeting, thanks or acknowledgement.
        general: strength of general-knowledge cues, in ``[0, 1]``.
        personal: the query refers to the user or to past conversations (I, my, remember...).
        proper_nouns: capitalised words inside the sentence (names, places).
        terms: the query's content terms (see :func:`content_terms`).
        n_words: words in the query.
        cues: which cues fired, for the decision's reasons.
        temporal: the query asks when something happened ("When did ...", "What year ...",
            "How long ago ...").
    """

    holistic: float
    specific: float
    smalltalk: bool
    general: float
    personal: bool
    proper_nouns: int
    terms: frozenset[str]
    n_words: int
    cues: tuple[str, ...] = ()
    temporal: bool = False

    @property
    def scope(self) -> float:
        """``holistic - specific``: > 0 leans holistic, < 0 leans specific."""
        return round(self.holistic - self.specific, 4)

    def as_dict(self) -> dict[str, float | int | bool]:
        """The numeric features (what the decision's ``scores`` and the learned policy use)."""
        return {"holistic": self.holistic, "specific": self.specific, "scope": self.scope,
                "smalltalk": self.smalltalk, "general": self.general, "personal": self.personal,
                "proper_nouns": self.proper_nouns, "n_words": self.n_words}


def _is_smalltalk(text: str, n_words: int) -> bool:
    if n_words == 0 or n_words > 12:
        return False
    leftover = _WORD.findall(_SMALLTALK_PHRASES.sub(" ", text))
    if not leftover:
        return True
    # One capitalised word left after a greeting is a name ("Hi Sam!"): still small talk.
    return len(leftover) == 1 and n_words >= 2 and leftover[0][:1].isupper()


@lru_cache(maxsize=4096)
def analyze_query(query: str) -> QueryFeatures:
    """Read a query's scope, small talk and general-knowledge cues (pure, cached).

    Args:
        query: the user's message.

    Returns:
        The :class:`QueryFeatures`.

    Example:
        >>> analyze_query("How has Tomas's running changed over the year?").scope > 0
        True
        >>> analyze_query("What is the capital of France?").general
        1.0
    """
    text = " ".join(query.split())
    n_words = len(_WORD.findall(text))
    holistic, h_hits = _score(HOLISTIC_CUES, text)
    specific, s_hits = _score(SPECIFIC_CUES, text)
    general, g_hits = _score(_GENERAL_CUES, text)
    # "How has X changed?" starts like a factoid question but asks about a trajectory:
    # the holistic cue outweighs the interrogative word.
    if holistic >= 1.0 and specific < 1.0:
        specific = round(specific * 0.5, 4)
    cues = tuple([f"holistic:{h}" for h in h_hits] + [f"specific:{s}" for s in s_hits]
                 + [f"general:{g}" for g in g_hits])
    return QueryFeatures(
        holistic=round(holistic, 4),
        specific=round(specific, 4),
        smalltalk=_is_smalltalk(text, n_words),
        general=round(general, 4),
        personal=_PERSONAL.search(text) is not None,
        proper_nouns=len(_PROPER.findall(text)),
        terms=content_terms(text),
        n_words=n_words,
        cues=cues,
        temporal=_TEMPORAL.search(text) is not None,
    )
