"""Pure text helpers of distillation: words, grounding, near-duplicates, lengths, dates.

No model and no database: every function takes plain strings and returns plain values, so
the filters that decide what enters the training data are unit-testable and deterministic.

Example:
    >>> grounding("Caroline went to a support group.", "Caroline: I went to a support group.")
    1.0
    >>> near_duplicate("What did Ann say about kites?", "what did ann say about kites")
    True
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Iterable, Sequence

__all__ = [
    "STOPWORDS",
    "answer_recall",
    "content_words",
    "format_date",
    "grounding",
    "jaccard",
    "length_ok",
    "near_duplicate",
    "sentences",
    "words",
]

# A compact English stopword list: function words, pronouns, auxiliaries and chat filler
# that carry no fact ("yeah", "really"), so overlap measures are about content.
STOPWORDS = frozenset("""
a about above after again against all almost also am an and any are aren't as at be because
been before being below between both but by can can't cannot could couldn't did didn't do does
doesn't doing don't down during each either else even ever every few for from further get gets
got had hadn't has hasn't have haven't having he he'd he'll he's her here here's hers herself him
himself his how how's i i'd i'll i'm i've if in into is isn't it it's its itself just let's like
lot lots me more most much must mustn't my myself no nor not now of off on once one only or other
ought our ours ourselves out over own really same shan't she she'd she'll she's should shouldn't
so some such than that that's the their theirs them themselves then there there's these they
they'd they'll they're they've this those through to too under until up upon us very was wasn't
we we'd we'll we're we've were weren't what what's when when's where where's which while who
who's whom why why's will with won't would wouldn't yeah yes yet you you'd you'll you're you've
your yours yourself yourselves oh hey hi wow thanks thank okay ok well sure great awesome cool
gonna wanna gotta also still definitely totally pretty kind sort thing things stuff said say
says tell told know think feel felt really much many way going go went lol haha hmm ah um
called named
""".split())

_WORD = re.compile(r"[A-Za-z0-9]+(?:['’][A-Za-z]+)?")
_SENT = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'“(\[])")


def words(text: str) -> list[str]:
    """Lowercased word tokens (letters, digits, inner apostrophes)."""
    return [w.lower().replace("’", "'") for w in _WORD.findall(text or "")]


def _stem(word: str) -> str:
    # A light suffix strip so that "kites"/"kite" and "painted"/"painting" meet; enough for
    # overlap checks, and stable (no stemmer library at import time).
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def content_words(text: str) -> list[str]:
    """Stemmed content words of ``text`` in order (stopwords and 1-letter words dropped).

    Example:
        >>> content_words("I'm painting the sunrise again!")
        ['paint', 'sunrise']
    """
    out = []
    for w in words(text):
        if w in STOPWORDS or (len(w) < 2 and not w.isdigit()):
            continue
        if w.endswith("'s"):
            w = w[:-2]
        out.append(_stem(w))
    return out


def grounding(answer: str, context: str) -> float:
    """Share of the answer's content words that occur in the context (1.0 = fully grounded).

    An answer with no content words at all ("Yes.") scores 0: it cannot be checked against
    the context, so it teaches nothing verifiable.

    Example:
        >>> grounding("They adopted a puppy in Paris.", "We adopted a puppy last week.")
        0.6666666666666666
    """
    ans = set(content_words(answer))
    if not ans:
        return 0.0
    ctx = set(content_words(context))
    return len(ans & ctx) / len(ans)


def answer_recall(prediction: str, expected: str, *, ignore: str = "") -> float:
    """Share of ``expected``'s content words found in ``prediction``, minus words of ``ignore``.

    Pass the question as ``ignore`` so that echoing the question earns nothing: only the
    facts the question does not already give count. Returns 1.0 when nothing is left to
    find (the expected answer is entirely inside the question).

    Example:
        >>> answer_recall("She adopted Toby, a beagle.", "Her beagle is called Toby.",
        ...               ignore="What is her dog called?")
        1.0
        >>> answer_recall("A spider has 8 legs.", "eight")
        1.0
    """
    skip = set(_numbers(content_words(ignore)))
    want = {w for w in _numbers(content_words(expected)) if w not in skip}
    if not want:
        return 1.0
    got = set(_numbers(content_words(prediction)))
    return len(want & got) / len(want)


_NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen".split())}
_NUMBER_WORDS.update({w: str(10 * i) for i, w in enumerate(
    "twenty thirty forty fifty sixty seventy eighty ninety".split(), start=2)})


def _numbers(ws: list[str]) -> list[str]:
    """Number words as digits: "8 legs" and "eight legs" state the same fact."""
    return [_NUMBER_WORDS.get(w, w) for w in ws]


def jaccard(a: Iterable[str], b: Iterable[str]) -> float:
    """Jaccard similarity of two collections (as sets); 1.0 for two empty ones."""
    sa, sb = set(a), set(b)
    if not sa and not sb:
        return 1.0
    return len(sa & sb) / len(sa | sb)


def near_duplicate(a: str, b: str, *, threshold: float = 0.9) -> bool:
    """Whether two questions are near-duplicates: word-set Jaccard >= ``threshold``.

    All words count (not only content words), so paraphrases that reorder or swap a verb
    survive while copies differing in punctuation or case do not.
    """
    return jaccard(words(a), words(b)) >= threshold


def length_ok(text: str, *, min_chars: int, max_chars: int) -> bool:
    """Whether the stripped text's length is within ``[min_chars, max_chars]``."""
    n = len((text or "").strip())
    return min_chars <= n <= max_chars


def sentences(text: str) -> list[str]:
    """Split text into sentences (simple punctuation rule; keeps the punctuation)."""
    parts = [p.strip() for p in _SENT.split((text or "").strip())]
    return [p for p in parts if p]


def format_date(when: datetime | None) -> str:
    """A date as people write it in questions: ``8 May 2023`` (empty string for None).

    Example:
        >>> from datetime import datetime
        >>> format_date(datetime(2023, 5, 8, 13, 56))
        '8 May 2023'
    """
    if when is None:
        return ""
    return f"{when.day} {when.strftime('%B')} {when.year}"


def truncate(text: str, max_chars: int) -> str:
    """Cut ``text`` to at most ``max_chars`` at a word boundary, marking the cut with '...'."""
    text = (text or "").strip()
    if len(text) <= max_chars:
        return text
    cut = text[: max(0, max_chars - 3)].rsplit(" ", 1)[0].rstrip(",;: ")
    return cut + "..."


def dedupe_questions(questions: Sequence[str], *, threshold: float = 0.9) -> list[int]:
    """Indices of the questions to keep: the first of every near-duplicate group.

    Candidates are bucketed by their two alphabetically smallest content words: two
    questions with Jaccard >= 0.9 differ in about one word, so they share a bucket, and the
    check stays fast for the few thousand questions of one namespace.

    Example:
        >>> dedupe_questions(["Who is Ann?", "who is ann", "Where is Bob?"])
        [0, 2]
    """
    kept: list[int] = []
    buckets: dict[str, list[set[str]]] = {}
    for i, q in enumerate(questions):
        toks = set(words(q))
        keys = sorted(set(content_words(q)))[:2] or ["_"]
        if any(jaccard(toks, other) >= threshold for k in keys for other in buckets.get(k, ())):
            continue
        for k in keys:
            buckets.setdefault(k, []).append(toks)
        kept.append(i)
    return kept
