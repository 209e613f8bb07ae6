"""The refresh pipeline: distill -> train -> validate -> publish -> hand over -> record.

:func:`refresh` is one plain function, callable from a test, the CLI (``ragtune refresh``),
APScheduler (:mod:`~langchain_ragtune.jobs.scheduler`) or a LangGraph cron. It is
idempotent: with nothing new since the current adapter's watermark it returns
``up_to_date`` at the cost of three small queries. A PostgreSQL advisory lock per namespace
makes two concurrent refreshes (two threads, processes or app replicas) safe: one runs, the
other returns ``busy`` (or raises :class:`~langchain_ragtune.errors.NamespaceBusyError`).

Statuses of a :class:`RefreshResult`:

* ``published``: a new version was trained, passed the gate and now serves;
* ``ready``: a new version passed the gate and is registered; no handover was requested;
* ``rejected``: the new version failed the gate; the previous version serves on;
* ``failed``: distillation, training, validation or the handover failed (``reason``);
  the previous version serves on;
* ``up_to_date``: nothing new since the watermark (and nothing forgotten);
* ``nothing_to_learn``: the namespace has no live memories (or none that teach anything);
* ``too_small``: the history holds fewer facts than ``DistillConfig.min_facts``: no adapter
  is trained, retrieval answers until more is known;
* ``busy``: another refresh of the namespace holds the lock.

Example:
    >>> from langchain_ragtune.jobs import refresh                          # doctest: +SKIP
    >>> result = refresh(("user-42",), store=store)                        # doctest: +SKIP
    >>> result.status, result.adapter_name                                 # doctest: +SKIP
    ('published', 'user-42-v1-3fa9c1')
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Sequence

from langchain_ragtune.errors import NamespaceBusyError, RagtuneError
from langchain_ragtune.store.types import namespace_str, validate_namespace

if TYPE_CHECKING:  # the real classes for type checkers; refresh() imports them when it runs
    from langchain_ragtune.config import ModelConfig, ServeConfig
    from langchain_ragtune.distill.pipeline import DistillConfig
    from langchain_ragtune.distill.teacher import Teacher
    from langchain_ragtune.store import MemoryStore
    from langchain_ragtune.tuning.gate import GateConfig
    from langchain_ragtune.tuning.registry import AdapterRecord
    from langchain_ragtune.tuning.train import TrainConfig

#: The handover a refresh ends with: given the new version that passed the gate.
PublishFn = Callable[["AdapterRecord"], Any]

__all__ = ["RefreshResult", "default_publisher", "refresh"]

log = logging.getLogger(__name__)

Status = Literal["published", "ready", "rejected", "failed", "up_to_date", "nothing_to_learn",
                 "too_small", "busy"]


@dataclass
class RefreshResult:
    """What one refresh did.

    Attributes:
        namespace: the namespace.
        status: see the module docstring.
        version, adapter_name, adapter_id: the new version (None when none was made).
        examples: training examples per kind in the new dataset.
        metrics: ``closed_book_before``, ``closed_book_after``, canary scores, training
            numbers.
        dataset_id: the dataset distilled for this refresh.
        watermark_seq: the newest memory the new version covers.
        mode: ``continue`` or ``retrain``.
        reason: why it was rejected, failed, busy or had nothing to learn.
        seconds: wall time per step (``distill``, ``train``, ``handover``, ``total``).
        current: the adapter serving the namespace after the refresh.
    """

    namespace: tuple[str, ...]
    status: Status
    version: int | None = None
    adapter_name: str | None = None
    adapter_id: int | None = None
    examples: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    dataset_id: int | None = None
    watermark_seq: int | None = None
    mode: str | None = None
    reason: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    current: str | None = None
    distill_stats: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether nothing went wrong (``failed`` and ``rejected`` are not ok)."""
        return self.status not in ("failed", "rejected")

    def as_dict(self) -> dict[str, Any]:
        """The JSON form printed by ``ragtune refresh --json``."""
        metrics = {"closed_book_before": self.metrics.get("closed_book_before"),
                   "closed_book_after": self.metrics.get("closed_book_after"),
                   **{k: v for k, v in self.metrics.items()
                      if k not in ("canaries", "heldout_sample")}}
        return {
            "namespace": list(self.namespace), "status": self.status, "version": self.version,
            "adapter_name": self.adapter_name, "adapter_id": self.adapter_id,
            "examples": self.examples, "metrics": metrics, "dataset_id": self.dataset_id,
            "watermark_seq": self.watermark_seq, "mode": self.mode, "reason": self.reason,
            "current": self.current, "seconds": self.seconds,
            "rejected": self.distill_stats.get("rejected", {}),
            "teacher": self.distill_stats.get("teacher", {}),
        }


def default_publisher(store: MemoryStore, serve_config: ServeConfig | None = None) -> PublishFn:
    """The handover used when ``refresh(publish=...)`` is not given.

    With a vLLM endpoint configured (``RAGTUNE_VLLM_URLS``) or a local ``ragtune serve``
    answering ``/health``, the serving :class:`~langchain_ragtune.serving.publisher.Publisher`
    loads the version under its new name, checks its canaries, switches the pointer, drains
    and unloads the old one. Without any server (a notebook, the in-process backend, a
    trainer host), the namespace's current-adapter pointer is switched in PostgreSQL: a
    ``ragtune serve`` started later loads it when it reconciles.
    """
    from langchain_ragtune.config import ServeConfig
    from langchain_ragtune.tuning.registry import AdapterRegistry

    config = serve_config or ServeConfig.from_env()
    registry = AdapterRegistry(store)

    def switch_pointer(record: Any) -> Any:
        return registry.switch_current(record.namespace, record.id)

    try:
        from langchain_ragtune.serving.publisher import Publisher
    except ImportError:  # the [serve] extra is not installed
        return switch_pointer
    if not config.vllm_urls and not _local_server_up(config):
        return switch_pointer

    def serving_publish(record: Any) -> Any:
        return Publisher(registry, config=config).publish(record)

    return serving_publish


def _local_server_up(config: ServeConfig) -> bool:
    import httpx

    try:
        url = f"http://{config.host}:{config.port}/health"
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def _say(msg: str) -> None:
    import sys

    print(f"ragtune refresh: {msg}", file=sys.stderr, flush=True)


def refresh(namespace: Sequence[str], *, store: MemoryStore | None = None,
            distill_config: DistillConfig | None = None,
            train_config: TrainConfig | None = None, gate_config: GateConfig | None = None,
            model_config: ModelConfig | None = None, serve_config: ServeConfig | None = None,
            mode: Literal["continue", "retrain"] | None = None,
            teacher: str | Teacher | None = ...,  # type: ignore[assignment]  # ... = config's
            publish: PublishFn | None = ...,  # type: ignore[assignment]  # ... = default
            trainer: Callable[..., Any] | None = None, evaluator: Any = None,
            callbacks: Sequence[Any] = (), adapters_dir: str | Path | None = None,
            force: bool = False, progress: bool = False,
            raise_busy: bool = False) -> RefreshResult:
    """Bring a namespace's adapter up to date with its memories.

    Args:
        namespace: the namespace, e.g. ``("user-42",)``.
        store: a memory store; ``None`` opens one from the environment (and closes it).
        distill_config: :class:`~langchain_ragtune.distill.pipeline.DistillConfig`.
        train_config: :class:`~langchain_ragtune.tuning.train.TrainConfig`.
        gate_config: :class:`~langchain_ragtune.tuning.gate.GateConfig`.
        model_config, serve_config: the base model / adapters folder, and the serving limits.
        mode: ``"continue"`` from the current adapter, ``"retrain"`` from scratch, or None
            (continue when possible; retrain when memories the adapter learned were
            forgotten, or the base model changed).
        teacher: overrides ``distill_config.teacher``.
        publish: the handover, called with the new :class:`AdapterRecord` once it passed the
            gate. Default: :func:`default_publisher`. ``None``: no handover (status ``ready``).
        trainer, evaluator, callbacks: replace the training function, the evaluator, or add
            ``TrainerCallback`` objects (tests, custom backends).
        adapters_dir: where adapter folders go (default ``model_config.adapters_dir``).
        force: run even when nothing is new.
        progress: progress bars on stderr.
        raise_busy: raise NamespaceBusyError instead of returning status ``busy``.

    Returns:
        A :class:`RefreshResult`. Expected failures (bad teacher, training crash, invalid
        adapter, failed handover) are reported as status ``failed`` with a reason; the
        previous version keeps serving.
    """
    ns = validate_namespace(namespace)
    own = store is None
    if own:
        from langchain_ragtune.store import MemoryStore

        store = MemoryStore.from_env()
        store.setup()
    started = time.monotonic()
    try:
        with store.namespace_lock(ns):
            result = _refresh_locked(
                ns, store, distill_config=distill_config, train_config=train_config,
                gate_config=gate_config, model_config=model_config, serve_config=serve_config,
                mode=mode, teacher=teacher, publish=publish, trainer=trainer,
                evaluator=evaluator, callbacks=callbacks, adapters_dir=adapters_dir, force=force,
                progress=progress)
    except NamespaceBusyError as exc:
        if raise_busy:
            raise
        result = RefreshResult(namespace=ns, status="busy", reason=str(exc))
    finally:
        if own:
            store.close()
    result.seconds["total"] = round(time.monotonic() - started, 2)
    log.info("refresh %s: %s %s", namespace_str(ns), result.status, result.adapter_name or "")
    return result


def _refresh_locked(ns: tuple[str, ...], store: MemoryStore, *,
                    distill_config: DistillConfig | None, train_config: TrainConfig | None,
                    gate_config: GateConfig | None, model_config: ModelConfig | None,
                    serve_config: ServeConfig | None, mode: str | None,
                    teacher: str | Teacher | None, publish: PublishFn | None,
                    trainer: Callable[..., Any] | None, evaluator: Any,
                    callbacks: Sequence[Any], adapters_dir: str | Path | None, force: bool,
                    progress: bool) -> RefreshResult:
    from langchain_ragtune.config import ModelConfig, ServeConfig
    from langchain_ragtune.distill.dataset import get_dataset
    from langchain_ragtune.distill.pipeline import DistillConfig, distill
    from langchain_ragtune.tuning.registry import AdapterRegistry

    model_config = model_config or ModelConfig.from_env()
    serve_config = serve_config or ServeConfig.from_env()
    distill_config = distill_config or DistillConfig.from_env()
    registry = AdapterRegistry(store)
    prev = registry.current(ns)
    res = RefreshResult(namespace=ns, status="up_to_date", current=prev.name if prev else None)

    if store.count(ns) == 0:
        res.status, res.reason = "nothing_to_learn", (
            f"namespace {ns!r} has no live memories; add some with store.add() first.")
        return res
    newest = store.max_seq(ns)
    forgotten = 0
    if prev is not None:
        ds = get_dataset(store, prev.dataset_id) if prev.dataset_id else None
        since = ds.created_at if ds else prev.created_at
        forgotten = store.forgotten_since(ns, watermark=prev.watermark_seq, since=since)
        if newest <= prev.watermark_seq and not forgotten and not force:
            res.watermark_seq = prev.watermark_seq
            res.reason = f"nothing new since seq {prev.watermark_seq} ({prev.name})"
            return res
    if mode is None:
        mode = "retrain" if prev is None or forgotten else "continue"
        if forgotten:
            log.info("%d memories of %s were forgotten since %s was trained: retraining",
                     forgotten, namespace_str(ns), prev.name if prev else "-")
    res.mode = mode
    after_seq = prev.watermark_seq if (mode == "continue" and prev is not None) else 0

    say = _say if progress else (lambda msg: None)
    say(f"distilling {namespace_str(ns)} ({mode}, memories after seq {after_seq})")
    t0 = time.monotonic()
    try:
        dist = distill(ns, store=store, config=distill_config, teacher=teacher,
                       after_seq=after_seq, progress=progress, model_config=model_config)
    except RagtuneError as exc:
        res.status, res.reason = "failed", f"distillation failed: {exc}"
        return res
    res.seconds["distill"] = round(time.monotonic() - t0, 2)
    res.distill_stats = dist.stats
    res.examples = {k: v for k, v in dist.stats.get("examples", {}).items()}
    res.dataset_id = dist.dataset.id if dist.dataset else None
    if not dist.train or dist.dataset is None:
        res.status, res.reason = "nothing_to_learn", (
            "the new memories produced no training example (only small talk?); "
            f"rejections: {dist.stats.get('rejected')}")
        return res

    if dist.facts < distill_config.min_facts:
        res.status, res.reason = "too_small", (
            f"the history of {namespace_str(ns)} teaches {dist.facts} fact(s); an adapter is "
            f"trained from {distill_config.min_facts} on (DistillConfig.min_facts, "
            "RAGTUNE_MIN_FACTS). Retrieval answers until then.")
        return res

    from langchain_ragtune.tuning.gate import train_namespace

    say(f"distilled {sum(res.examples.values())} examples {res.examples} in "
        f"{res.seconds['distill']:.0f} s; training ({mode})")
    t0 = time.monotonic()
    try:
        outcome = train_namespace(ns, store=store, dataset_id=dist.dataset.id, mode=mode,
                                  train_config=train_config, gate_config=gate_config,
                                  model_config=model_config, serve_config=serve_config,
                                  trainer=trainer, evaluator=evaluator, callbacks=callbacks,
                                  adapters_dir=adapters_dir, progress=progress)
    except RagtuneError as exc:
        res.status, res.reason = "failed", f"{type(exc).__name__}: {exc}"
        res.seconds["train"] = round(time.monotonic() - t0, 2)
        return res
    res.seconds["train"] = round(time.monotonic() - t0, 2)
    rec = outcome.record
    res.version, res.adapter_name, res.adapter_id = rec.version, rec.name, rec.id
    res.watermark_seq, res.metrics = rec.watermark_seq, dict(outcome.metrics)
    if not outcome.passed:
        res.status, res.reason = "rejected", "; ".join(outcome.reasons)
        return res
    if publish is None:
        res.status = "ready"
        return res
    handover = default_publisher(store, serve_config) if publish is ... else publish
    say(f"trained {rec.name} in {res.seconds['train']:.0f} s (closed-book "
        f"{res.metrics.get('closed_book_before')} -> {res.metrics.get('closed_book_after')}); "
        f"handing over ({getattr(handover, '__name__', 'publish')})")
    t0 = time.monotonic()
    try:
        handover(rec)
    except Exception as exc:  # the old version keeps serving; record why
        reason = f"handover failed: {type(exc).__name__}: {exc}"
        log.warning("refresh %s: %s", namespace_str(ns), reason)
        registry.set_status(rec.id, "failed", reason=reason)
        res.status, res.reason = "failed", reason
    else:
        res.status = "published"
    res.seconds["handover"] = round(time.monotonic() - t0, 2)
    cur = registry.current(ns)
    res.current = cur.name if cur else None
    return res
