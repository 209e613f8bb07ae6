"""Bad input to the store: each case is handled correctly or refused with a clear error."""

from __future__ import annotations

import pytest

from langchain_ragtune.errors import ConfigError, InvalidInputError
from langchain_ragtune.store import Turn

NS = ("bad-input",)

# (description, callable taking the store, expected error type or None, message fragment)
REFUSED = [
    ("empty text", lambda s: s.add(NS, [""]), InvalidInputError, "empty or whitespace"),
    ("whitespace text", lambda s: s.add(NS, ["  \n\t "]), InvalidInputError, "empty or whitespace"),
    ("non-string text", lambda s: s.add(NS, [{"text": 42}]), InvalidInputError, "must be a string"),
    ("unknown item type", lambda s: s.add(NS, [3.14]), InvalidInputError, "cannot remember"),
    ("empty namespace", lambda s: s.add((), ["x"]), InvalidInputError, "non-empty tuple"),
    ("blank label", lambda s: s.add(("  ",), ["x"]), InvalidInputError, "empty label"),
    ("non-string label", lambda s: s.add((1,), ["x"]), InvalidInputError, "must be a string"),
    ("namespace too deep", lambda s: s.add(tuple("abcdefghij"), ["x"]), InvalidInputError, "at most"),
    ("k zero", lambda s: s.search(NS, "q", k=0), InvalidInputError, "1 <= k"),
    ("k negative", lambda s: s.search(NS, "q", k=-3), InvalidInputError, "1 <= k"),
    ("k huge", lambda s: s.search(NS, "q", k=10**9), InvalidInputError, "1 <= k"),
    ("k float", lambda s: s.search(NS, "q", k=2.5), InvalidInputError, "integer"),
    ("k bool", lambda s: s.search(NS, "q", k=True), InvalidInputError, "integer"),
    ("empty query", lambda s: s.search(NS, "   "), InvalidInputError, "query"),
    ("unknown mode", lambda s: s.search(NS, "q", mode="magic"), InvalidInputError, "search mode"),
    ("window huge", lambda s: s.search(NS, "q", window=500), InvalidInputError, "window"),
    ("bad time", lambda s: s.search(NS, "q", after="last tuesday"), InvalidInputError, "ISO-8601"),
    ("bad metadata", lambda s: s.add(NS, [{"text": "x", "metadata": {"f": object()}}]),
     InvalidInputError, "JSON"),
    ("NaN metadata", lambda s: s.add(NS, [{"text": "x", "metadata": {"f": float("nan")}}]),
     InvalidInputError, "JSON"),
    ("bad memory id", lambda s: s.delete(NS, ["not-a-uuid"]), InvalidInputError, "not a memory id"),
    ("empty message id", lambda s: s.add(NS, [{"text": "x", "message_id": " "}]), InvalidInputError,
     "message_id"),
    ("text over the limit", lambda s: s.add(NS, ["x" * 2_000_001]), InvalidInputError, "Split it"),
]


@pytest.mark.parametrize("what,call,error,fragment", REFUSED, ids=[c[0] for c in REFUSED])
def test_refused_with_a_clear_error(store, what, call, error, fragment):
    with pytest.raises(error, match=fragment):
        call(store)


ACCEPTED = [
    ("NUL bytes are dropped", "before\x00after", "beforeafter"),
    ("lone surrogate replaced", "bad \ud800 char", "bad ? char"),
    ("SQL metacharacters kept verbatim", "Robert'); DROP TABLE memories;--", None),
    ("percent and braces", "100% {schema} %(namespace)s", None),
    ("unicode", "Zoë ate crème brûlée in Kraków 🍰", None),
]


@pytest.mark.parametrize("what,text,stored", ACCEPTED, ids=[c[0] for c in ACCEPTED])
def test_accepted_and_stored_exactly(store, what, text, stored):
    ns = ("accepted", what)
    (mid,) = store.add(ns, [text])
    assert store.get(ns, mid).text == (stored if stored is not None else text)
    store.flush()
    assert store.search(ns, text.replace("\x00", ""), k=1)[0].id == mid


def test_one_megabyte_message_is_stored_and_found(store):
    ns = ("big",)
    big = ("lorem ipsum dolor sit amet " * 40_000)[:1_000_000] + " zanzibar"
    (mid,) = store.add(ns, [big])
    assert len(store.get(ns, mid).text) == len(big)
    assert store.search(ns, "zanzibar", k=1, mode="keyword")[0].id == mid


def test_hostile_namespaces_and_metadata_never_leak(store):
    evil = ("x'); DELETE FROM memories; --", "%(namespace)s")
    store.add(evil, [Turn(text="evil twin", metadata={"k'\"": "v'); DROP TABLE x;--"})])
    store.add(("victim",), ["victim's diary"])
    assert store.count(("victim",)) == 1
    assert [h.text for h in store.search(evil, "diary evil twin", k=5)] == ["evil twin"]
    hits = store.search(evil, "evil twin", k=1, metadata={"k'\"": "v'); DROP TABLE x;--"})
    assert [h.text for h in hits] == ["evil twin"]
    assert store.search(evil, "evil twin", k=1, metadata={"k'\"": "other"}) == []


@pytest.mark.parametrize("env,value,fragment", [
    ("RAGTUNE_POOL_SIZE", "many", "RAGTUNE_POOL_SIZE"),
    ("RAGTUNE_POOL_SIZE", "-1", "positive"),
    ("RAGTUNE_SCHEMA", "Robert'); DROP", "not a valid identifier"),
    ("RAGTUNE_PG_URI", "mysql://x", "not a PostgreSQL URI"),
    ("RAGTUNE_EF_SEARCH", "5000", "maximum of 1000"),
])
def test_malformed_environment_is_named(monkeypatch, env, value, fragment):
    from langchain_ragtune.config import StoreConfig

    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError, match=fragment):
        StoreConfig.from_env()
