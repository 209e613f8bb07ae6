"""The adapter registry on a real PostgreSQL: versions, statuses and the atomic pointer."""

from __future__ import annotations

import threading

import pytest

from langchain_ragtune.errors import AdapterError, InvalidInputError
from langchain_ragtune.tuning.registry import AdapterRegistry, make_adapter_name

NS = ("reg-user",)
OTHER = ("reg-other",)


@pytest.fixture(scope="module")
def registry(store):
    return AdapterRegistry(store)


def _register(registry, ns=NS, **kw):
    version = registry.next_version(ns)
    args = dict(name=make_adapter_name(ns, version), path=f"/tmp/adapters/{version}",
                base_model="/models/smol", watermark_seq=10 * version, dataset_id=None,
                metrics={"closed_book_after": 0.5,
                         "canaries": [{"question": "q", "expected": "a"}]},
                status="ready")
    args.update(kw)
    return registry.register(ns, version, **args)


def test_make_adapter_name_is_readable_and_unique():
    name = make_adapter_name(("User 42", "chat/x"), 2, suffix="aa11bb")
    assert name == "user-42-chat-x-v2-aa11bb"
    names = {make_adapter_name(("u",), 1) for _ in range(50)}
    assert len(names) == 50


def test_register_then_read_back(registry):
    assert registry.current(NS) is None
    assert registry.latest(NS) is None
    assert registry.next_version(NS) == 1
    rec = _register(registry)
    assert rec.version == 1 and rec.namespace == NS and rec.status == "ready"
    assert rec.metrics["closed_book_after"] == 0.5
    assert rec.canaries == [{"question": "q", "expected": "a"}]
    assert registry.get(rec.name) == rec
    assert registry.get_by_id(rec.id) == rec
    assert registry.next_version(NS) == 2
    assert registry.latest(NS) == rec
    assert registry.get("no-such-adapter") is None


def test_switch_current_moves_pointer_and_statuses(registry):
    first = registry.latest(NS)
    cur = registry.switch_current(NS, first.id)
    assert cur.id == first.id and cur.status == "serving" and cur.switched_at is not None
    second = _register(registry)
    assert registry.current(NS).id == first.id  # registering does not switch
    cur = registry.switch_current(NS, second.id)
    assert cur.id == second.id
    assert registry.get_by_id(first.id).status == "retired"
    assert [r.version for r in registry.list(NS)] == [1, 2]
    assert registry.latest(NS, statuses=["retired"]).id == first.id
    assert any(r.id == second.id for r in registry.currents())


def test_switch_refuses_foreign_rejected_and_missing(registry):
    other = _register(registry, ns=OTHER)
    with pytest.raises(AdapterError, match="belongs to namespace"):
        registry.switch_current(NS, other.id)
    bad = _register(registry, status="rejected", reason="gate: 0.2 < 0.5")
    with pytest.raises(AdapterError, match="rejected"):
        registry.switch_current(NS, bad.id)
    with pytest.raises(AdapterError, match="no adapter"):
        registry.switch_current(NS, 999_999_999)
    assert registry.current(NS).version == 2  # nothing changed


def test_register_rejects_duplicates_and_bad_input(registry):
    rec = registry.latest(NS)
    with pytest.raises(AdapterError, match="next_version"):
        registry.register(NS, rec.version, "fresh-name", "/p", "/m", 1)
    with pytest.raises(AdapterError):
        registry.register(NS, registry.next_version(NS), rec.name, "/p", "/m", 1)
    with pytest.raises(InvalidInputError, match="status"):
        registry.register(NS, 99, "x-99", "/p", "/m", 1, status="bogus")
    with pytest.raises(InvalidInputError, match="watermark_seq"):
        registry.register(NS, 99, "x-99", "/p", "/m", -1)


def test_set_status_and_metrics(registry):
    rec = _register(registry)
    failed = registry.set_status(rec.id, "failed", reason="vLLM returned 400")
    assert failed.status == "failed" and failed.reason == "vLLM returned 400"
    merged = registry.update_metrics(rec.id, {"serve_canary_ok": True})
    assert merged.metrics["serve_canary_ok"] is True and "closed_book_after" in merged.metrics
    with pytest.raises(AdapterError):
        registry.set_status(999_999_999, "ready")


def test_concurrent_switches_leave_exactly_one_serving(registry):
    ns = ("reg-race",)
    recs = [_register(registry, ns=ns) for _ in range(6)]
    errors = []

    def switch(r):
        try:
            registry.switch_current(ns, r.id)
        except Exception as exc:  # pragma: no cover - a failure shows in the assert below
            errors.append(exc)

    threads = [threading.Thread(target=switch, args=(r,)) for r in recs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    statuses = [r.status for r in registry.list(ns)]
    assert statuses.count("serving") == 1
    assert registry.current(ns).status == "serving"


def test_clear_current(registry):
    ns = ("reg-clear",)
    rec = _register(registry, ns=ns)
    registry.switch_current(ns, rec.id)
    registry.clear_current(ns)
    assert registry.current(ns) is None
