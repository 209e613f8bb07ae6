"""The parametric-memory benchmark: distill and tune one LoCoMo conversation, measure it.

Measured on one conversation (``conv-26`` by default), in a throwaway schema:

* distillation: facts, examples per kind, examples per minute, rejection rates per reason;
* training: steps, seconds, tokens, tokens per second and per fact, loss;
* what the adapter knows (``knowledge``): trained-fact recall, held-out paraphrase recall
  (base model vs adapter), general knowledge kept;
* LoCoMo token F1 of the parametric route alone (no retrieval), base model vs adapter, per
  category (the official scoring from :mod:`langchain_ragtune.eval.metrics`).

Heavy (minutes): run it under ``flock /tmp/ragtune-heavy.lock`` on a shared machine.

Example:
    $ flock /tmp/ragtune-heavy.lock ragtune bench parametric --json out.json
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

__all__ = ["run_parametric_bench"]


def _say(quiet: bool, msg: str) -> None:
    if not quiet:
        print(f"bench parametric: {msg}", file=sys.stderr, flush=True)


def _locomo_f1(evaluator: Any, conv: Any, adapter: Any, categories: tuple[int, ...],
               max_questions: int | None) -> dict[str, Any]:
    from langchain_ragtune.eval.metrics import score_answer

    qs = [q for q in conv.qa if q.category in categories]
    if max_questions:
        qs = qs[:max_questions]
    t0 = time.monotonic()
    answers = evaluator.answer([q.question for q in qs], adapter=adapter)
    secs = time.monotonic() - t0
    per: dict[str, list[float]] = {}
    for q, a in zip(qs, answers):
        gold = q.answer if q.category != 5 else (q.adversarial_answer or "")
        per.setdefault(q.category_name, []).append(score_answer(a, gold, q.category))
    allv = [v for vs in per.values() for v in vs]
    return {"f1": round(sum(allv) / len(allv), 4) if allv else None,
            "per_category": {k: {"f1": round(sum(v) / len(v), 4), "n": len(v)}
                             for k, v in sorted(per.items())},
            "questions": len(qs), "seconds": round(secs, 1),
            "sample": [{"question": q.question, "gold": q.answer, "answer": a}
                       for q, a in list(zip(qs, answers))[:5]]}


def run_parametric_bench(*, data: str | None = None, conversation: str = "conv-26",
                         teacher: str | None = None, teacher_max_chunks: int = 12,
                         max_examples: int = 0, epochs: float | None = None,
                         max_steps: int = 0, batch_size: int | None = None,
                         eval_questions: int = 48,
                         locomo_questions: int | None = None,
                         categories: tuple[int, ...] = (1, 2, 3, 4),
                         sessions: int | None = None, train: bool = True, quiet: bool = False,
                         json_out: str | None = None) -> dict[str, Any]:
    """Distill, train and evaluate parametric memory for one LoCoMo conversation.

    Args:
        data: a LoCoMo-format file (default: the shared development set).
        conversation: the conversation's ``sample_id``.
        teacher: ``None``/``"none"`` (the default recipe), ``"local"``, or a chat model string.
        teacher_max_chunks: chunks the teacher sees (bounds its time).
        max_examples: training examples kept (stratified sample; 0 keeps all).
        epochs, max_steps, batch_size: training length (``TrainConfig``'s defaults when None).
        eval_questions: held-out distilled questions evaluated closed-book.
        locomo_questions: LoCoMo questions asked (None = all of ``categories``).
        categories: LoCoMo categories asked (1-4 by default; 5 is adversarial).
        sessions: only the first N sessions (and the questions whose evidence lies in them),
            for a run that fits a few minutes of CPU training.
        train: train and evaluate (False: distillation numbers only).
        quiet: no progress output.
        json_out: also write the result here.

    Returns:
        The measurements as a JSON-able dict.
    """
    from langchain_ragtune.config import ModelConfig, ServeConfig, StoreConfig
    from langchain_ragtune.distill.pipeline import DistillConfig, distill
    from langchain_ragtune.eval.locomo import load_locomo, to_turns
    from langchain_ragtune.store import MemoryStore
    from langchain_ragtune.testing import HashEmbeddings

    started = time.monotonic()
    convs = [c for c in load_locomo(data) if c.sample_id == conversation]
    if not convs:
        raise ValueError(f"conversation {conversation!r} is not in the LoCoMo file.")
    conv = convs[0]
    if sessions:
        import dataclasses
        import re

        keep = conv.sessions[:sessions]
        last = max(x.index for x in keep)

        def inside(q: Any) -> bool:
            nums = [int(m.group(1)) for e in q.evidence for m in [re.match(r"D(\d+):", e)] if m]
            return bool(nums) and max(nums) <= last

        conv = dataclasses.replace(conv, sessions=keep, qa=[q for q in conv.qa if inside(q)])
    model_cfg = ModelConfig.from_env()
    home = Path(tempfile.mkdtemp(prefix="ragtune-bench-param-"))
    schema = f"bench_param_{uuid.uuid4().hex[:8]}"
    # Only listing is used: the fake embeddings keep the benchmark off the embedding model.
    store = MemoryStore(StoreConfig.from_env(schema=schema), embeddings=HashEmbeddings(),
                        background_embedding=False)
    out: dict[str, Any] = {
        "bench": "parametric", "date": now_iso(),
        "machine": machine_info(),
        "conversation": conversation, "turns": conv.n_turns, "sessions": len(conv.sessions),
        "questions": len(conv.qa),
        "settings": {"teacher": teacher, "teacher_max_chunks": teacher_max_chunks,
                     "max_examples": max_examples, "epochs": epochs, "max_steps": max_steps,
                     "batch_size": batch_size, "eval_questions": eval_questions},
    }
    ns = (f"bench-{conversation}",)
    try:
        store.setup()
        store.add(ns, to_turns(conv))
        _say(quiet, f"distilling {conv.n_turns} turns of {conversation} (teacher {teacher})")
        cfg = DistillConfig(teacher=teacher, teacher_max_chunks=teacher_max_chunks,
                            max_examples=max_examples)
        t0 = time.monotonic()
        dist = distill(ns, store=store, config=cfg, model_config=model_cfg, progress=not quiet)
        secs = time.monotonic() - t0
        stats = dist.stats
        drafts = sum(stats["drafts"].values())
        out["distill"] = {
            "seconds": round(secs, 1), "examples": stats["examples"],
            "train": stats["train"], "heldout": stats["heldout"],
            "examples_per_minute": round(len(dist.examples) / secs * 60, 1) if secs else None,
            "drafts": stats["drafts"], "drafts_by_origin": stats["drafts_by_origin"],
            "rejected": stats["rejected"], "rejection_rate": stats["rejection_rate"],
            "rejection_rate_by_reason": {k: round(v / drafts, 4)
                                         for k, v in stats["rejected"].items()} if drafts else {},
            "teacher": stats["teacher"], "input": stats["input"],
            "sample": [{"kind": s["kind"], "question": s["messages"][1]["content"],
                        "answer": s["messages"][2]["content"][:300]} for s in stats["sample"]],
        }
        _say(quiet, f"distilled {len(dist.examples)} examples in {secs:.0f} s: {stats['examples']}")
        if train and dist.dataset is not None:
            from langchain_ragtune.tuning.evaluate import AdapterEvaluator
            from langchain_ragtune.tuning.gate import GateConfig, train_namespace
            from langchain_ragtune.tuning.train import TrainConfig

            base = model_cfg.base_model
            run_cfg = ModelConfig(base_model=base, home=home, torch_threads=model_cfg.torch_threads)
            if base is None:
                from langchain_ragtune.models import resolve_base_model

                run_cfg = ModelConfig(base_model=str(resolve_base_model(model_cfg)), home=home,
                                      torch_threads=model_cfg.torch_threads)
            overrides = {k: v for k, v in (("epochs", epochs), ("batch_size", batch_size))
                         if v is not None}
            tcfg = TrainConfig(max_steps=max_steps, torch_threads=model_cfg.torch_threads,
                               progress=not quiet, **overrides)
            _say(quiet, f"training on {dist.stats['train']} examples")
            outcome = train_namespace(ns, store=store, dataset_id=dist.dataset.id,
                                      mode="retrain", train_config=tcfg,
                                      gate_config=GateConfig(eval_max_questions=eval_questions,
                                                             gate=False),
                                      model_config=run_cfg, serve_config=ServeConfig.from_env(),
                                      progress=not quiet)
            m = outcome.metrics
            out["train"] = {"steps": m["steps"], "seconds": m["train_seconds"],
                            "seconds_per_step": round(m["train_seconds"] / max(1, m["steps"]), 2),
                            "examples": m["examples"], "tokens": m["tokens"],
                            "train_tokens": m["train_tokens"],
                            "train_tokens_per_s": m["train_tokens_per_s"],
                            "tokens_per_fact": m["tokens_per_fact"],
                            "loss": m["train_loss"], "device": m["device"],
                            "epochs": tcfg.epochs, "learning_rate": tcfg.learning_rate,
                            "pack_pairs": tcfg.pack_pairs}
            out["knowledge"] = {k: m.get(k) for k in (
                "facts", "trained_fact_questions", "trained_fact_recall_before",
                "trained_fact_recall", "paraphrase_recall_before", "paraphrase_recall",
                "general_kept", "general_base_right", "general_questions", "general_lost",
                "trained_fact_sample")}
            out["closed_book"] = {"heldout_questions": m["heldout_questions"],
                                  "before": m["closed_book_before"],
                                  "after": m["closed_book_after"],
                                  "canary_before": m["canary_before"],
                                  "canary_after": m["canary_after"],
                                  "eval_seconds": m["eval_seconds"],
                                  "sample": m["heldout_sample"]}
            _say(quiet, f"closed-book held-out {m['closed_book_before']} -> "
                        f"{m['closed_book_after']}; LoCoMo questions next")
            ev = AdapterEvaluator(run_cfg.base_model, max_new_tokens=32,
                                  torch_threads=model_cfg.torch_threads)
            out["locomo_parametric"] = {
                "before": _locomo_f1(ev, conv, None, categories, locomo_questions),
                "after": _locomo_f1(ev, conv, outcome.record.path, categories, locomo_questions),
                "categories": list(categories)}
            out["refresh_seconds"] = round(secs + m["train_seconds"] + m["eval_seconds"], 1)
    finally:
        discard(store, home)
    return finish(out, started, json_out)
