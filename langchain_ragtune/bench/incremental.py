"""The incremental-refresh benchmark: a full refresh, then 20 new turns learned on top.

A user's history grows a few turns at a time; retraining on all of it at every refresh would
cost the full training time again. Measured on one LoCoMo conversation (``conv-26`` by
default), in a throwaway schema and folder, with the production :func:`refresh`:

1. all turns but the last ``new_turns`` are remembered and refreshed from nothing (``full``);
2. the last ``new_turns`` arrive and a second refresh runs: it distills only them plus a
   replay of older memories and continues training the first adapter (``incremental``);
3. closed-book, in process: the new facts' probe questions on the second adapter
   (``new_fact_recall``), and the first adapter's probe questions on both adapters
   (``old_fact_recall_before`` / ``_after``, ``points_lost``).

Targets (2 CPU cores): incremental <= 1/5 of the full refresh's wall time, new facts >= 0.9,
<= 5 points lost on the old ones.

Heavy (a full refresh and more): run it alone.

Example:
    $ ragtune bench incremental --json docs/results/bench-incremental.json
"""

from __future__ import annotations

import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from langchain_ragtune.bench._common import discard, finish, now_iso
from langchain_ragtune.hardware import machine_info

__all__ = ["run_incremental_bench"]


def _say(quiet: bool, msg: str) -> None:
    if not quiet:
        print(f"bench incremental: {msg}", file=sys.stderr, flush=True)


def _probes(store: Any, dataset_id: int) -> dict[str, tuple[str, str]]:
    """fact -> (question, expected) of a dataset's probe questions (one per fact)."""
    from langchain_ragtune.distill.dataset import load_examples

    return {e.meta["fact"]: (e.question, e.expected)
            for e in load_examples(store, dataset_id, split="train")
            if e.meta.get("probe") and e.meta.get("fact")}


def run_incremental_bench(*, data: str | None = None, conversation: str = "conv-26",
                          new_turns: int = 20, sample: bool = False, quiet: bool = False,
                          json_out: str | None = None) -> dict[str, Any]:
    """Full refresh, then an incremental one over ``new_turns`` new turns; see the module.

    Args:
        data: a LoCoMo-format file (default: the shared development set).
        conversation: the conversation's ``sample_id``.
        new_turns: turns held back for the incremental refresh.
        sample: use the small conversation shipped with the package instead.
        quiet: no progress output.
        json_out: also write the result here.
    """
    from langchain_ragtune.config import ModelConfig, StoreConfig
    from langchain_ragtune.datasets.locomo import load_locomo, load_sample
    from langchain_ragtune.eval.locomo import to_turns
    from langchain_ragtune.jobs.refresh import refresh
    from langchain_ragtune.models import resolve_base_model
    from langchain_ragtune.store import MemoryStore
    from langchain_ragtune.testing import HashEmbeddings
    from langchain_ragtune.tuning.evaluate import AdapterEvaluator
    from langchain_ragtune.tuning.gate import GateConfig
    from langchain_ragtune.tuning.registry import AdapterRegistry

    started = time.monotonic()
    convs = load_sample() if sample else [c for c in load_locomo(data)
                                          if c.sample_id == conversation]
    if not convs:
        raise ValueError(f"conversation {conversation!r} is not in the LoCoMo file.")
    conv = convs[0]
    turns = to_turns(conv)
    if not 0 < new_turns < len(turns) // 2:
        raise ValueError(f"new_turns={new_turns} must be between 1 and half the "
                         f"conversation's {len(turns)} turns.")
    model_cfg = ModelConfig.from_env()
    home = Path(tempfile.mkdtemp(prefix="ragtune-bench-incr-"))
    run_cfg = ModelConfig(base_model=str(resolve_base_model(model_cfg)), home=home,
                          torch_threads=model_cfg.torch_threads)
    schema = f"bench_incr_{uuid.uuid4().hex[:8]}"
    store = MemoryStore(StoreConfig.from_env(schema=schema), embeddings=HashEmbeddings(),
                        background_embedding=False)
    ns = (f"bench-{conv.sample_id}",)
    out: dict[str, Any] = {"bench": "incremental", "date": now_iso(), "machine": machine_info(),
                           "conversation": conv.sample_id, "turns": len(turns),
                           "new_turns": new_turns}
    gate = GateConfig.from_env(gate=False)  # measure the adapters, whatever the gate says

    def publish(rec: Any) -> None:  # make it current, as a handover would
        AdapterRegistry(store).switch_current(rec.namespace, rec.id)

    def run(label: str) -> Any:
        t0 = time.monotonic()
        res = refresh(ns, store=store, publish=publish, gate_config=gate,
                      model_config=run_cfg, progress=not quiet)
        secs = round(time.monotonic() - t0, 1)
        if res.status != "published":
            raise RuntimeError(f"{label} refresh ended {res.status}: {res.reason}")
        m = res.metrics
        out[label] = {"seconds": secs, "mode": res.mode, "examples": res.examples,
                      "train_seconds": m.get("train_seconds"), "steps": m.get("steps"),
                      "train_tokens": m.get("train_tokens"),
                      "train_tokens_per_s": m.get("train_tokens_per_s"),
                      "facts": m.get("facts"), "trained_fact_recall": m.get("trained_fact_recall"),
                      "paraphrase_recall": m.get("paraphrase_recall"),
                      "general_kept": m.get("general_kept"), "adapter": res.adapter_name}
        _say(quiet, f"{label}: {secs} s, {out[label]}")
        return AdapterRegistry(store).get_by_id(res.adapter_id)

    try:
        store.setup()
        store.add(ns, turns[:-new_turns])
        _say(quiet, f"full refresh of {len(turns) - new_turns} turns of {conv.sample_id}")
        first = run("full")
        store.add(ns, turns[-new_turns:])
        _say(quiet, f"{new_turns} new turns; incremental refresh")
        second = run("incremental")

        old = _probes(store, first.dataset_id)
        new = {f: qa for f, qa in _probes(store, second.dataset_id).items() if f not in old}
        ev = AdapterEvaluator(run_cfg.base_model, max_new_tokens=32,
                              torch_threads=model_cfg.torch_threads)
        before, _ = ev.score(list(old.values()), adapter=first.path)
        after, _ = ev.score(list(old.values()), adapter=second.path)
        learned, answers = ev.score(list(new.values()), adapter=second.path)
        out["old_facts"] = len(old)
        out["new_facts"] = len(new)
        out["old_fact_recall_before"] = before
        out["old_fact_recall_after"] = after
        out["points_lost"] = round((before - after) * 100, 1)
        out["new_fact_recall"] = learned
        out["new_fact_sample"] = [{"question": q, "expected": e, "answer": a}
                                  for (q, e), a in list(zip(new.values(), answers))[:5]]
        out["time_ratio"] = round(out["incremental"]["seconds"] / out["full"]["seconds"], 3)
        out["targets"] = {"time_ratio <= 0.2": out["time_ratio"] <= 0.2,
                          "new_fact_recall >= 0.9": learned is not None and learned >= 0.9,
                          "points_lost <= 5": out["points_lost"] <= 5}
    finally:
        discard(store, home)
    return finish(out, started, json_out)
