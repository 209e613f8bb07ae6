"""The adapter registry: every trained LoRA version of every namespace, and which one serves.

Two tables back it (see :mod:`langchain_ragtune.store.sql`): ``adapters`` holds one row per
published version (namespace, version, a never-reused name, folder, base model, watermark,
dataset, metrics, status), and ``current_adapter`` holds one pointer per namespace to the
version that serves. Switching the pointer is one short transaction, so every app replica
reading PostgreSQL sees either the old or the new version, never a mix.

Statuses, in the order a version usually walks through them:

* ``ready``: the folder is complete, validated and passed the evaluation gate;
* ``serving``: it is the namespace's current version (set by
  :meth:`AdapterRegistry.switch_current`);
* ``retired``: it served and was replaced by a newer version;
* ``rejected``: it failed the evaluation gate or validation (kept for the record);
* ``failed``: publishing to serving failed (``reason`` says why); the old version serves on.

Only complete adapters are ever registered: the trainer writes into a temporary folder,
renames it into place and registers it afterwards, so a crash leaves no row behind.

Example:
    >>> from langchain_ragtune.tuning.registry import AdapterRegistry     # doctest: +SKIP
    >>> registry = AdapterRegistry(store)                                 # doctest: +SKIP
    >>> rec = registry.register(("user-42",), 1, "user-42-v1-3fa9c1",  # doctest: +SKIP
    ...                         "/adapters/user-42/v1", "/models/smol", watermark_seq=120)
    >>> registry.switch_current(("user-42",), rec.id)                     # doctest: +SKIP
    >>> registry.current(("user-42",)).name                               # doctest: +SKIP
    'user-42-v1-3fa9c1'
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable, Mapping

from langchain_ragtune.errors import AdapterError, InvalidInputError
from langchain_ragtune.store.types import validate_metadata, validate_namespace

__all__ = [
    "ADAPTER_STATUSES",
    "AdapterRecord",
    "AdapterRegistry",
    "make_adapter_name",
]

#: Every status a registered adapter can have (see the module docstring).
ADAPTER_STATUSES = ("ready", "serving", "retired", "rejected", "failed")
# Versions that may become the current one.
_SWITCHABLE = ("ready", "serving", "retired")
_SLUG = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True, kw_only=True)
class AdapterRecord:
    """One registered adapter version.

    Attributes:
        id: the registry's id (a bigint).
        namespace: the namespace whose memories it was trained on.
        version: 1, 2, ... per namespace.
        name: the unique name it is served under (never reused, not even after ``forget``).
        path: the adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``).
        base_model: the base model folder or id it was trained on.
        watermark_seq: the newest memory ``seq`` its training data covered.
        dataset_id: the distilled dataset it was trained on (None once that is deleted).
        metrics: training and evaluation numbers, and its ``canaries`` (questions with known
            answers that the serving side checks after loading it).
        status: one of :data:`ADAPTER_STATUSES`.
        reason: why it was rejected or failed, if it was.
        created_at: when it was registered.
        switched_at: when it became current (only set on records read through ``current``).
    """

    id: int
    namespace: tuple[str, ...]
    version: int
    name: str
    path: str
    base_model: str
    watermark_seq: int
    dataset_id: int | None
    metrics: dict[str, Any] = field(default_factory=dict)
    status: str = "ready"
    reason: str | None = None
    created_at: datetime | None = None
    switched_at: datetime | None = None

    @property
    def canaries(self) -> list[dict[str, str]]:
        """Canary questions of this version: ``[{"question", "expected"}, ...]``."""
        return list(self.metrics.get("canaries") or [])

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form (what ``ragtune adapters --json`` prints)."""
        return {
            "id": self.id, "namespace": list(self.namespace), "version": self.version,
            "name": self.name, "path": self.path, "base_model": self.base_model,
            "watermark_seq": self.watermark_seq, "dataset_id": self.dataset_id,
            "metrics": self.metrics, "status": self.status, "reason": self.reason,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "switched_at": self.switched_at.isoformat() if self.switched_at else None,
        }


def make_adapter_name(namespace: Iterable[str], version: int, *, suffix: str | None = None) -> str:
    """A readable, never-reused adapter name: ``<namespace slug>-v<version>-<6 hex>``.

    vLLM refuses to load a name twice and an in-place reload under load corrupts answers,
    so every version gets a fresh name; the random suffix keeps names unique even after a
    namespace is forgotten and its versions start again at 1.

    Example:
        >>> make_adapter_name(("User 42", "chat"), 3, suffix="abc123")
        'user-42-chat-v3-abc123'
    """
    slug = _SLUG.sub("-", "-".join(namespace).lower()).strip("-")[:40] or "ns"
    return f"{slug}-v{int(version)}-{suffix or secrets.token_hex(3)}"


def row_to_record(row: Mapping[str, Any]) -> AdapterRecord:
    """Build an :class:`AdapterRecord` from a row selected with the registry's columns."""
    return AdapterRecord(
        id=row["id"], namespace=tuple(row["namespace"]), version=row["version"],
        name=row["name"], path=row["path"], base_model=row["base_model"],
        watermark_seq=row["watermark_seq"], dataset_id=row["dataset_id"],
        metrics=dict(row["metrics"] or {}), status=row["status"], reason=row["reason"],
        created_at=row["created_at"], switched_at=row.get("switched_at"),
    )


def _check_status(status: Any) -> str:
    if status not in ADAPTER_STATUSES:
        raise InvalidInputError(f"adapter status {status!r} is unknown; use one of "
                                f"{', '.join(ADAPTER_STATUSES)}.")
    return status


def _check_int(value: Any, what: str, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidInputError(f"{what}={value!r} must be an int >= {minimum}.")
    return value


class AdapterRegistry:
    """Registered LoRA versions per namespace, and the atomic "current version" pointer.

    What a registered version means (statuses, which may serve, names) lives here; the
    queries are the store's (:class:`~langchain_ragtune.store.records.AdapterQueries`), so
    any :class:`~langchain_ragtune.store.MemoryStore` holds a registry. The store's
    ``setup()`` creates the tables.

    Args:
        store: the memory store whose PostgreSQL holds the registry.

    Example:
        >>> registry = AdapterRegistry(store)                      # doctest: +SKIP
        >>> [r.version for r in registry.list(("user-42",))]       # doctest: +SKIP
        [1, 2]
    """

    def __init__(self, store: Any) -> None:
        self.store = store

    @staticmethod
    def _record(row: Mapping[str, Any] | None) -> AdapterRecord | None:
        return row_to_record(row) if row else None

    # -- writes ----------------------------------------------------------------------------

    def next_version(self, namespace: Any) -> int:
        """The version number the next adapter of ``namespace`` gets (1 for the first)."""
        return self.store.next_adapter_version(validate_namespace(namespace))

    def register(self, namespace: Any, version: int, name: str, path: str, base_model: str,
                 watermark_seq: int, dataset_id: int | None = None,
                 metrics: Mapping[str, Any] | None = None, status: str = "ready",
                 reason: str | None = None) -> AdapterRecord:
        """Record a complete adapter folder as a version of ``namespace``.

        Call it only after the folder is fully written (renamed into place): a registered
        row promises a loadable adapter.

        Raises:
            AdapterError: the name or the (namespace, version) pair is already taken.
            InvalidInputError: a malformed argument (unknown status, negative watermark...).
        """
        ns = validate_namespace(namespace)
        _check_int(version, "version", minimum=1)
        _check_int(watermark_seq, "watermark_seq")
        if dataset_id is not None:
            _check_int(dataset_id, "dataset_id", minimum=1)
        for what, value in (("name", name), ("path", path), ("base_model", base_model)):
            if not isinstance(value, str) or not value.strip():
                raise InvalidInputError(f"{what}={value!r} must be a non-empty string.")
        return row_to_record(self.store.insert_adapter({
            "namespace": list(ns), "version": version, "name": name, "path": str(path),
            "base_model": str(base_model), "watermark_seq": watermark_seq,
            "dataset_id": dataset_id, "metrics": validate_metadata(dict(metrics or {})),
            "status": _check_status(status), "reason": reason,
        }))

    def set_status(self, adapter_id: int, status: str, reason: str | None = None) -> AdapterRecord:
        """Change a version's status (and why); returns the updated record.

        Raises:
            AdapterError: no adapter has this id.
        """
        _check_int(adapter_id, "adapter_id", minimum=1)
        rec = self._record(self.store.set_adapter_status(adapter_id, _check_status(status),
                                                         reason))
        if rec is None:
            raise AdapterError(f"no adapter with id {adapter_id} is registered; list them "
                               "with registry.list(namespace).")
        return rec

    def update_metrics(self, adapter_id: int, metrics: Mapping[str, Any]) -> AdapterRecord:
        """Merge ``metrics`` into a version's metrics (e.g. serving-side canary results)."""
        _check_int(adapter_id, "adapter_id", minimum=1)
        rec = self._record(self.store.update_adapter_metrics(
            adapter_id, validate_metadata(dict(metrics))))
        if rec is None:
            raise AdapterError(f"no adapter with id {adapter_id} is registered.")
        return rec

    def switch_current(self, namespace: Any, adapter_id: int) -> AdapterRecord:
        """Make ``adapter_id`` the current version of ``namespace``, atomically.

        In one transaction: the pointer moves, the new version becomes ``serving`` and the
        one it replaces becomes ``retired``. Readers see the old or the new pointer, never
        a state in between; concurrent switches of one namespace are serialised.

        Returns:
            The new current record.

        Raises:
            AdapterError: the adapter does not exist, belongs to another namespace, or is
                ``rejected``/``failed``.
        """
        ns = validate_namespace(namespace)
        _check_int(adapter_id, "adapter_id", minimum=1)

        def check(row: Mapping[str, Any] | None) -> None:
            if row is None:
                raise AdapterError(f"no adapter with id {adapter_id} is registered; nothing "
                                   f"to switch {ns!r} to.")
            target = row_to_record(row)
            if target.namespace != ns:
                raise AdapterError(
                    f"adapter {target.name!r} belongs to namespace {target.namespace!r}, not "
                    f"{ns!r}: one namespace's adapter never serves another's.")
            if target.status not in _SWITCHABLE:
                raise AdapterError(
                    f"adapter {target.name!r} is {target.status!r}"
                    f"{' (' + target.reason + ')' if target.reason else ''}; only a ready "
                    "version can become current. Train and publish a new version.")

        return row_to_record(self.store.switch_current_adapter(ns, adapter_id, check))

    def clear_current(self, namespace: Any) -> None:
        """Remove ``namespace``'s pointer: it has no current adapter afterwards."""
        self.store.clear_current_adapter(validate_namespace(namespace))

    # -- reads -----------------------------------------------------------------------------

    def current(self, namespace: Any) -> AdapterRecord | None:
        """The version that serves ``namespace`` now, or None if it has none."""
        return self._record(self.store.current_adapter(validate_namespace(namespace)))

    def currents(self) -> list[AdapterRecord]:
        """Every namespace's current version, most recently switched first (for reconcile)."""
        return [row_to_record(r) for r in self.store.current_adapters()]

    def get(self, name: str) -> AdapterRecord | None:
        """The version registered under ``name``, or None."""
        if not isinstance(name, str) or not name:
            raise InvalidInputError(f"adapter name {name!r} must be a non-empty string.")
        return self._record(self.store.adapter_by_name(name))

    def get_by_id(self, adapter_id: int) -> AdapterRecord | None:
        """The version with this registry id, or None."""
        _check_int(adapter_id, "adapter_id", minimum=1)
        return self._record(self.store.adapter_by_id(adapter_id))

    def list(self, namespace: Any) -> list[AdapterRecord]:
        """Every version of ``namespace``, oldest first."""
        return [row_to_record(r) for r in self.store.list_adapters(validate_namespace(namespace))]

    def latest(self, namespace: Any, *, statuses: Iterable[str] | None = None
               ) -> AdapterRecord | None:
        """The newest version of ``namespace`` (optionally only among ``statuses``), or None."""
        ns = validate_namespace(namespace)
        st = None if statuses is None else [_check_status(s) for s in statuses]
        return self._record(self.store.latest_adapter(ns, st))
