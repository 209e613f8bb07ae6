"""Train, validate, evaluate and publish one namespace's next adapter version, crash-safely.

:func:`train_namespace` is what ``ragtune train --namespace NS`` runs, on this host or on a
GPU host that reaches the same PostgreSQL:

1. read the dataset (the namespace's newest, or a given id) from PostgreSQL;
2. train into a temporary folder next to the final one (continuing the current adapter, or
   a fresh LoRA);
3. validate the folder against vLLM's limits;
4. evaluate closed-book before (current version, or the base model) and after, on the
   held-out questions and the canaries, and apply the gate;
5. rename the folder into place (atomic on one filesystem) and register the version:
   ``ready`` when the gate passed, ``rejected`` (with the reason) when it did not.

A crash before step 5 leaves a temporary folder, removed by the next run; a crash between
the rename and the registration leaves an unregistered folder, also removed by the next run.
The registry never points at a half-written adapter and the current version never changes
here: switching is the serving side's job (or :func:`~langchain_ragtune.jobs.refresh.refresh`'s).

Example:
    >>> from langchain_ragtune.tuning.gate import train_namespace     # doctest: +SKIP
    >>> outcome = train_namespace(("user-42",), store=store)              # doctest: +SKIP
    >>> outcome.record.status, outcome.metrics["closed_book_after"]       # doctest: +SKIP
    ('ready', 0.62)
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Sequence

from langchain_ragtune.config import ModelConfig, ServeConfig, _from_env
from langchain_ragtune.errors import ConfigError, DatasetError, TrainingError
from langchain_ragtune.store.types import namespace_str, validate_namespace
from langchain_ragtune.tuning.canaries import published_canaries, steady_canaries
from langchain_ragtune.tuning.registry import AdapterRecord, AdapterRegistry, make_adapter_name
from langchain_ragtune.tuning.replay import general_replay_examples

__all__ = ["GateConfig", "TrainOutcome", "adapter_home", "cleanup_orphans", "continued_replay",
           "describe_knowledge", "train_namespace"]

log = logging.getLogger(__name__)
_TMP_PREFIX = ".tmp-"
#: Answer length of the published canaries' check (below the serving side's 48 tokens, so
#: the expected span is inside what vLLM generates).
SERVED_CANARY_TOKENS = 40
Mode = Literal["continue", "retrain"]


@dataclass(kw_only=True)
class GateConfig:
    """The evaluation gate (every field also reads ``RAGTUNE_<FIELD>``).

    Attributes:
        gate_tolerance: how far below the previous version a score may fall.
        eval_max_questions: held-out questions evaluated (a fixed sample; canaries always).
        eval_max_facts: trained facts asked (each fact's probe; all of them up to this many).
            A ~400-turn conversation has 100-230 facts, and a sample misleads: on LoCoMo
            conv-26, 48 evenly spaced probes of 115 read 0.875 where all 115 read 0.765.
        eval_max_new_tokens: the longest evaluated answer.
        gate: apply the gate (False records the scores but always publishes).
        canary_min_margin: the lead, in nats, a published canary's answer must hold over the
            next choice at every token (``AdapterEvaluator.greedy_margins``). vLLM serves in
            bfloat16 where the CPU has AVX-512 (and on GPUs) while this evaluation runs in
            float32: over 4,731 answer tokens of five adapters (``ragtune bench
            canary_margin``, docs/benchmarks.md), vLLM's leads differed from float32's by up
            to 0.83 nats, and greedy choices flipped only where the float32 lead was below
            0.25. A canary answered right by a closer lead is not published (it is listed in
            the metrics' ``canaries_unsteady``): vLLM may answer it otherwise, and the
            publisher would reject a good adapter.
        min_fact_recall: the least share of its trained facts (one question each, the form
            unique to the fact) an adapter must state closed-book to be served. Below half,
            the parametric route would answer most questions about trained facts wrongly,
            while retrieval answers them from the same history: such a version is recorded
            ``rejected`` and the previous one (or retrieval) keeps answering.
        general_min_kept: the least share of the general questions the base model answers
            right (``datasets/general_questions.json``) that the adapter must still answer.
    """

    gate_tolerance: float = 0.05
    eval_max_questions: int = 96
    eval_max_facts: int = 256
    eval_max_new_tokens: int = 32
    gate: bool = True
    canary_min_margin: float = 1.0
    min_fact_recall: float = 0.5
    general_min_kept: float = 0.9

    def __post_init__(self) -> None:
        if not 0 <= self.gate_tolerance <= 1:
            raise ConfigError(f"GateConfig.gate_tolerance={self.gate_tolerance!r} must be in "
                              "[0, 1] (RAGTUNE_GATE_TOLERANCE).")
        for name in ("min_fact_recall", "general_min_kept"):
            v = getattr(self, name)
            if not 0 <= v <= 1:
                raise ConfigError(f"GateConfig.{name}={v!r} must be in [0, 1] "
                                  f"(RAGTUNE_{name.upper()}).")
        if self.canary_min_margin < 0:
            raise ConfigError(f"GateConfig.canary_min_margin={self.canary_min_margin!r} must "
                              "be >= 0 nats (RAGTUNE_CANARY_MIN_MARGIN); 1.0 is the default.")
        if (self.eval_max_questions < 0 or self.eval_max_facts < 0
                or self.eval_max_new_tokens <= 0):
            raise ConfigError(f"GateConfig.eval_max_questions={self.eval_max_questions!r} and "
                              f"eval_max_facts={self.eval_max_facts!r} must be >= 0 "
                              "(RAGTUNE_EVAL_MAX_QUESTIONS, RAGTUNE_EVAL_MAX_FACTS), "
                              f"eval_max_new_tokens={self.eval_max_new_tokens!r} > 0.")

    @classmethod
    def from_env(cls, **overrides: Any) -> "GateConfig":
        """Read ``RAGTUNE_*`` variables; keyword arguments win."""
        return _from_env(cls, overrides)


@dataclass
class TrainOutcome:
    """The result of :func:`train_namespace`.

    Attributes:
        record: the registered version (status ``ready`` or ``rejected``).
        metrics: what was measured (also stored in the record).
        passed: whether the gate passed.
        reasons: why the gate failed.
    """

    record: AdapterRecord
    metrics: dict[str, Any]
    passed: bool
    reasons: list[str] = field(default_factory=list)


def describe_knowledge(metrics: Mapping[str, Any]) -> str:
    """What a version knows, in one line for command output.

    Example:
        >>> describe_knowledge({"trained_fact_recall": 0.9, "trained_fact_questions": 48,
        ...                     "paraphrase_recall_before": 0.0, "paraphrase_recall": 0.7,
        ...                     "general_kept": 1.0, "train_tokens": 70000,
        ...                     "train_tokens_per_s": 190.2})
        'facts 0.9 of 48 asked, paraphrases 0.0 -> 0.7, general kept 1.0, 70000 tokens at 190.2/s'
    """
    return (f"facts {metrics.get('trained_fact_recall')} of "
            f"{metrics.get('trained_fact_questions')} asked, paraphrases "
            f"{metrics.get('paraphrase_recall_before')} -> {metrics.get('paraphrase_recall')}, "
            f"general kept {metrics.get('general_kept')}, {metrics.get('train_tokens')} tokens "
            f"at {metrics.get('train_tokens_per_s')}/s")


def adapter_home(model_config: ModelConfig, namespace: Sequence[str], *,
                 adapters_dir: str | Path | None = None) -> Path:
    """The folder holding a namespace's adapter versions (under ``ModelConfig.adapters_dir``).

    Example:
        >>> adapter_home(ModelConfig(home="/srv/rt"), ("org", "user 42"))
        PosixPath('/srv/rt/adapters/org_user_42')
    """
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", namespace_str(namespace))[:80].strip("._") or "ns"
    return Path(adapters_dir or model_config.adapters_dir) / slug


def cleanup_orphans(folder: Path, registered_paths: set[str]) -> list[Path]:
    """Remove temporary and unregistered adapter folders left by crashed runs.

    Call it only while holding the namespace's lock (a concurrent run's temporary folder
    would look orphaned).
    """
    removed = []
    if not folder.is_dir():
        return removed
    keep = {str(Path(p).resolve()) for p in registered_paths}
    for child in folder.iterdir():
        if child.is_dir() and (child.name.startswith(_TMP_PREFIX)
                               or str(child.resolve()) not in keep):
            shutil.rmtree(child, ignore_errors=True)
            removed.append(child)
    return removed


def _sample(items: Sequence[Any], n: int) -> list[Any]:
    if n <= 0 or len(items) <= n:
        return list(items)
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]


def continued_replay(general_replay: int, n_train: int, prev_metrics: Mapping[str, Any]) -> int:
    """General prompts a continued refresh replays: the share of the training set the
    previous version's run replayed, at most ``general_replay``.

    A continued refresh trains the new facts and one probe of each earlier fact, a fraction
    of a full refresh's examples; the full replay would then be most of its tokens, and
    forgetting is already held off in the adapter it starts from. Without the previous
    run's numbers (or when it replayed nothing), ``general_replay``.

    Example:
        >>> continued_replay(200, 180, {"examples": 740, "general_replay": 200})
        67
    """
    prev_replay = int(prev_metrics.get("general_replay") or 0)
    prev_train = int(prev_metrics.get("examples") or 0) - prev_replay
    if general_replay <= 0 or prev_replay <= 0 or prev_train <= 0:
        return general_replay
    return min(general_replay, max(1, math.ceil(prev_replay * n_train / prev_train)))


def _adapter_mb(folder: Any) -> float | None:
    """Size of the adapter's weights file in MiB (what storage and vLLM's loads move)."""
    try:
        return round((Path(folder) / "adapter_model.safetensors").stat().st_size / 2**20, 2)
    except (OSError, TypeError):
        return None


def train_namespace(namespace: Any, *, store: Any, dataset_id: int | None = None,
                    mode: Mode | None = None, train_config: Any = None,
                    gate_config: GateConfig | None = None,
                    model_config: ModelConfig | None = None,
                    serve_config: ServeConfig | None = None,
                    trainer: Callable[..., Any] | None = None,
                    evaluator: Any = None, callbacks: Sequence[Any] = (),
                    adapters_dir: str | Path | None = None,
                    progress: bool = True) -> TrainOutcome:
    """Train, validate, evaluate and register the namespace's next adapter version.

    Args:
        namespace: the namespace.
        store: a set-up memory store (its PostgreSQL holds datasets and the registry).
        dataset_id: the dataset to train on (default: the namespace's newest).
        mode: ``"continue"`` from the current adapter (default when there is one trained on
            the same base model) or ``"retrain"`` a fresh LoRA.
        train_config: :class:`~langchain_ragtune.tuning.train.TrainConfig`.
        gate_config: the evaluation gate.
        model_config: the base model and the adapters folder.
        serve_config: for the rank limit the adapter must respect.
        trainer: replaces :func:`~langchain_ragtune.tuning.train.train_adapter` (tests).
        evaluator: replaces the :class:`~langchain_ragtune.tuning.evaluate.AdapterEvaluator`
            (``score``; without ``greedy_margins`` every answered canary is published).
        callbacks: extra ``TrainerCallback`` objects.
        adapters_dir: where adapter folders go (default ``model_config.adapters_dir``): a
            path every serving host can read (a shared volume) when training elsewhere.
        progress: progress bars.

    Returns:
        A :class:`TrainOutcome` with the registered record.

    Raises:
        DatasetError: no dataset, or it has no training examples.
        TrainingError: training failed; nothing was registered.
        AdapterValidationError: the trained folder would not load in vLLM; nothing registered.
    """
    from langchain_ragtune.distill.dataset import get_dataset, latest_dataset, load_examples
    from langchain_ragtune.models import resolve_base_model
    from langchain_ragtune.tuning.evaluate import check_canary, gate
    from langchain_ragtune.tuning.train import TrainConfig
    from langchain_ragtune.tuning.validate import validate_adapter_dir

    ns = validate_namespace(namespace)
    model_config = model_config or ModelConfig.from_env()
    serve_config = serve_config or ServeConfig.from_env()
    gate_config = gate_config or GateConfig.from_env()
    train_config = train_config or TrainConfig.from_env(torch_threads=model_config.torch_threads)
    if not progress:  # quiet callers (--no-progress, --quiet) mean the trainer's bar too
        train_config = replace(train_config, progress=False)
    registry = AdapterRegistry(store)
    base = resolve_base_model(model_config)

    ds = get_dataset(store, dataset_id) if dataset_id is not None else latest_dataset(store, ns)
    if ds is None or ds.namespace != ns:
        raise DatasetError(f"no dataset {'with id ' + str(dataset_id) if dataset_id else ''} for "
                           f"namespace {ns!r}; run `ragtune distill --namespace "
                           f"{namespace_str(ns)}` first.")
    examples = load_examples(store, ds.id)
    train = [e for e in examples if e.split == "train"]
    if not train:
        raise DatasetError(f"dataset {ds.id} of {ns!r} has no training examples.")
    heldout = _sample([(e.question, e.expected) for e in examples if e.split == "heldout"],
                      gate_config.eval_max_questions)
    probes_all = [(e.question, e.expected) for e in train if e.meta.get("probe")]
    probes = _sample(probes_all, gate_config.eval_max_facts)
    canaries = [(e.question, e.expected) for e in train if e.meta.get("canary")]

    prev = registry.current(ns)
    if mode is None:
        mode = "continue" if prev is not None else "retrain"
    if mode not in ("continue", "retrain"):
        raise ConfigError(f"mode={mode!r}: use 'continue' or 'retrain'.")
    init = None
    if mode == "continue" and prev is not None:
        if Path(prev.path).is_dir() and prev.base_model == str(base):
            init = prev.path
        else:
            log.warning("cannot continue from %s (missing folder or another base model); "
                        "training a fresh adapter", prev.name)
            mode = "retrain"

    home = adapter_home(model_config, ns, adapters_dir=adapters_dir)
    home.mkdir(parents=True, exist_ok=True)
    cleanup_orphans(home, {r.path for r in registry.list(ns)})
    version = registry.next_version(ns)
    name = make_adapter_name(ns, version)
    final = home / name
    tmp = home / f"{_TMP_PREFIX}{name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)

    if trainer is None:
        from langchain_ragtune.tuning.train import train_adapter as trainer
    if evaluator is None:
        from langchain_ragtune.tuning.evaluate import AdapterEvaluator

        evaluator = AdapterEvaluator(base, system_prompt=train[0].system,
                                     max_new_tokens=gate_config.eval_max_new_tokens,
                                     torch_threads=model_config.torch_threads)
    cache_dir = model_config.home / "cache"
    n_replay = train_config.general_replay
    if init is not None:
        n_replay = continued_replay(n_replay, len(train), prev.metrics)
    replay = general_replay_examples(evaluator, n_replay, seed=train_config.seed,
                                     cache_dir=cache_dir)
    try:
        result = trainer(train + replay, base, tmp, train_config, init_adapter=init,
                         callbacks=callbacks,
                         metadata={"namespace": list(ns), "dataset_id": ds.id,
                                   "version": version, "name": name, "mode": mode,
                                   "general_replay": len(replay)})
        validate_adapter_dir(tmp, max_rank=serve_config.max_lora_rank, base_model=base)
        t0 = time.monotonic()
        before_ref = prev.path if prev is not None and Path(prev.path).is_dir() else None
        cb_before, _ = evaluator.score(heldout, adapter=before_ref, progress=progress)
        can_before, _ = evaluator.score(canaries, adapter=before_ref)
        cb_after, answers = evaluator.score(heldout, adapter=tmp, progress=progress)
        can_after, can_answers = evaluator.score(canaries, adapter=tmp)
        facts_before, _ = evaluator.score(probes, adapter=before_ref)
        facts_after, fact_answers = evaluator.score(probes, adapter=tmp)
        general: dict[str, Any] = {"general_kept": None}
        if hasattr(evaluator, "general_knowledge"):
            general = evaluator.general_knowledge(tmp, cache_dir=cache_dir)
        # The serving side asks canaries the way a bare client does (question only, short
        # answer, plain greedy): publish only canaries the adapter passes that way too. The
        # answers are recorded with the canaries, and the publisher checks the new version
        # reproduces them token for token in one forward pass, so no repetition penalty here:
        # with the evaluator's 1.1 the recorded answer is not what a temperature-0 client
        # (vLLM's canary check) generates, and the expected span may not be in that either.
        # And only canaries answered by a clear lead at every token: a near tie answered
        # right here in float32 was answered otherwise by vLLM in bfloat16 (a CI run's demo
        # on 2026-12-02), and the publisher then rejected a good adapter.
        _, served = evaluator.score(canaries, adapter=tmp, system_prompt=None,
                                    max_new_tokens=SERVED_CANARY_TOKENS, repetition_penalty=1.0)
        published, unsteady = steady_canaries(published_canaries(canaries, served), evaluator,
                                               tmp, gate_config.canary_min_margin)
        eval_secs = time.monotonic() - t0
    except OSError as exc:  # a full disk, a lost mount: a failed refresh, not a crash
        shutil.rmtree(tmp, ignore_errors=True)
        raise TrainingError(
            f"writing the adapter into {home} failed: {exc}. Free space there (or point "
            "RAGTUNE_HOME / adapters_dir at a larger disk) and refresh again; the current "
            "version keeps serving.") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    before = {"closed_book": cb_before, "canary": can_before}
    after = {"closed_book": cb_after, "canary": can_after, "trained_fact_recall": facts_after,
             "general_kept": general["general_kept"]}
    passed, reasons = gate(before, after, tolerance=gate_config.gate_tolerance,
                           floors={"trained_fact_recall": gate_config.min_fact_recall,
                                   "general_kept": gate_config.general_min_kept})
    if not gate_config.gate:
        passed, reasons = True, []
    metrics = {
        "trained_fact_recall": facts_after, "trained_fact_recall_before": facts_before,
        "trained_fact_questions": len(probes),
        "paraphrase_recall": cb_after, "paraphrase_recall_before": cb_before,
        **general,
        "train_tokens": result.train_tokens, "train_tokens_per_s": result.tokens_per_s,
        "general_replay": len(replay),
        "focus_missed": list(result.focus_missed),
        "focus_kept": result.focus_kept,
        "answer_tokens": result.answer_tokens,
        "tokens_per_fact": round(result.train_tokens / len(probes_all), 1) if probes_all else None,
        "facts": len(probes_all),
        "closed_book_before": cb_before, "closed_book_after": cb_after,
        "canary_before": can_before, "canary_after": can_after,
        "heldout_questions": len(heldout), "before_reference": prev.name if before_ref else "base",
        "train_loss": round(result.train_loss, 4), "train_seconds": result.seconds,
        "eval_seconds": round(eval_secs, 2), "steps": result.steps, "examples": result.examples,
        "tokens": result.tokens, "device": result.device, "mode": mode,
        "adapter_mb": _adapter_mb(result.path),
        "continued_from": prev.name if init else None, "gate_passed": passed,
        "canaries": published,
        "canaries_unsteady": unsteady,
        "canaries_missed": [q for (q, e), a in zip(canaries, can_answers)
                            if not check_canary(a, {"question": q, "expected": e})],
        "system_prompt": train[0].system,
        "heldout_sample": [{"question": q, "expected": e, "answer": a}
                           for (q, e), a in list(zip(heldout, answers))[:5]],
        "trained_fact_sample": [{"question": q, "expected": e, "answer": a}
                                for (q, e), a in list(zip(probes, fact_answers))[:5]],
    }
    try:
        os.rename(tmp, final)  # atomic: the folder appears complete or not at all
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise TrainingError(f"cannot move the trained adapter into {final}: {exc}") from exc
    try:
        record = registry.register(ns, version, name, str(final), str(base),
                                   watermark_seq=ds.watermark_seq, dataset_id=ds.id,
                                   metrics=metrics, status="ready" if passed else "rejected",
                                   reason="; ".join(reasons) or None)
    except BaseException:
        shutil.rmtree(final, ignore_errors=True)
        raise
    try:
        from langchain_ragtune.distill.dataset import update_dataset_stats

        update_dataset_stats(store, ds.id, {"trained": {
            "adapter": name, "status": record.status, "train_seconds": result.seconds}})
    except Exception:  # bookkeeping only
        log.exception("could not record the training result on dataset %s", ds.id)
    return TrainOutcome(record=record, metrics=metrics, passed=passed, reasons=reasons)
