"""Isolation, property-based: whatever is stored as A is never seen or touched acting as B.

Hypothesis draws namespaces and contents (SQL metacharacters, quotes, unicode, look-alike
labels such as ("a", "b") vs ("a/b",) vs ("a", "b", "")) and checks every store and
retriever method.
"""

from __future__ import annotations

import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from langchain_ragtune.store import MemoryRetriever
from langchain_ragtune.store.langgraph import RagtuneStore

SQLISH = ["'", '"', ";", "--", "/*", "*/", "%s", "%(namespace)s", "{schema}", "\\", "$1",
          "') OR ('1'='1", "DROP TABLE memories", "*", "/", ".", "%", "_"]

label = st.one_of(
    st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=12)
    .filter(lambda s: s.strip()),
    st.sampled_from(SQLISH).map(lambda s: f"u{s}"),
)
namespace = st.lists(label, min_size=1, max_size=3).map(tuple)
content = st.one_of(
    st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=80)
    .filter(lambda s: s.strip()),
    st.sampled_from(SQLISH).map(lambda s: f"secret {s} payload"),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(a=namespace, b=namespace, texts=st.lists(content, min_size=1, max_size=4))
def test_nothing_crosses_namespaces(store, a, b, texts):
    if a == b:
        return
    # Unique per example so that examples do not see each other's rows.
    tag = uuid.uuid4().hex[:8]
    a = (*a, tag)
    b = (*b, tag)
    ids = store.add(a, [f"{t} {tag}" for t in texts])
    store.flush()
    query = f"{texts[0]} {tag}"

    # Read paths, acting as B.
    for mode in ("hybrid", "vector", "keyword"):
        assert store.search(b, query, k=20, mode=mode) == []
    assert store.list(b) == []
    assert store.count(b) == 0
    assert all(store.get(b, i) is None for i in ids)
    assert MemoryRetriever(store=store, namespace=b, k=5).invoke(query) == []
    assert store.list_namespaces(prefix=b, limit=10_000) == []
    if not any("." in x for x in b):  # LangGraph's own API refuses labels with periods
        lg = RagtuneStore(store)
        assert lg.search(b, query=query) == []
        assert lg.list_namespaces(prefix=b) == []

    # Write paths, acting as B.
    assert store.delete(b, ids) == 0
    assert all(store.update(b, i, text="overwritten") is False for i in ids)
    assert store.forget(b)["memories"] == 0

    # A is intact.
    assert store.count(a) == len(set(ids))
    assert {m.id for m in store.list(a)} == set(ids)
    hits = store.search(a, query, k=20, mode="keyword")
    assert {h.memory.namespace for h in hits} <= {a}
    assert (a, len(set(ids))) in store.list_namespaces(prefix=a, limit=10)
    store.forget(a)
