"""Answer LoCoMo questions in every memory mode with one reader, over one or more seeds.

:func:`run_answer_eval` is what ``ragtune eval locomo --mode none,retrieval,parametric,...``
runs: it builds the modes of :mod:`.modes` on a shared :class:`~.modes.ConversationMemory`,
answers and scores every question (:func:`~.harness.run_modes`, resumable), optionally
grades the answers with an LLM judge (:mod:`.judge`) and compares the modes pairwise on
holistic questions (:mod:`.holistic`), and returns the results JSON::

    {"modes": {<mode>: {"f1": {"overall", "all", "1".."5"}, "exact_match": {...},
                        "judge": {...}, "recall_at_k": {...}, "latency_ms": {"p50", "p95"},
                        "memory_tokens": {"mean"}, "prepare": {...}}},
     "router": {"accuracy_vs_oracle", "mix": {<route>: share}},
     "seeds": {"values": [...], "modes": {<mode>: {"f1_overall": {"mean", "std", ...}}}},
     "holistic": {"pairs": {"<a> vs <b>": {...}}, ...},
     "questions": [...], "metadata": {...}}

Only the modes whose answers depend on training (``parametric``, ``hybrid``, ``routed``) are
run again for every further seed (answers are greedy, so the others would repeat
themselves); ``"seeds"`` reports their mean and spread.

Example:
    >>> reader = make_reader("served", serve_config=serve)                     # doctest: +SKIP
    >>> result = run_answer_eval(store, convs, ["none", "retrieval"], reader)  # doctest: +SKIP
    >>> result["modes"]["retrieval"]["f1"]["overall"]                          # doctest: +SKIP
    0.21
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from langchain_ragtune.errors import InvalidInputError
from langchain_ragtune.eval.harness import RecordsFile, now_iso, run_metadata, run_modes, summarize
from langchain_ragtune.eval.locomo import LocomoConversation
from langchain_ragtune.eval.modes import (
    ConversationMemory,
    Reader,
    TuneSettings,
    build_modes,
)

__all__ = ["SEED_MODES", "make_reader", "run_answer_eval", "run_memory", "seed_spread"]

#: Modes whose answers change with the training seed.
SEED_MODES = ("parametric", "hybrid", "routed")


def make_reader(spec: str | Any = "served", *, serve_config: Any = None,
                base_model: str | os.PathLike[str] | None = None, answer_tokens: int = 48,
                context_tokens: int | None = None, store: Any = None) -> Reader:
    """The reader every mode answers with.

    Args:
        spec: ``"served"`` (vLLM at ``serve_config.vllm_urls``, adapters by name), ``"local"``
            (transformers + peft in this process, adapters from their folders; needs
            ``store`` for the registry), an ``init_chat_model`` string
            (``"openai:gpt-4o-mini"``) or a LangChain chat model (no adapters).
        serve_config: where vLLM is (``"served"``).
        base_model: the base model folder (tokenizer for context budgets, ``"local"``).
        answer_tokens: longest answer.
        context_tokens: the reader's context window; default ``serve_config.max_model_len``.
        store: the memory store (``"local"`` reads adapter folders from its registry).
    """
    from langchain_ragtune.config import ServeConfig

    serve = serve_config or ServeConfig.from_env()
    window = context_tokens or serve.max_model_len
    count = _token_counter(base_model) if base_model else None
    if spec == "served":
        from langchain_ragtune.router.memory import vllm_chat_model_factory

        url = (serve.vllm_urls or (f"http://{serve.host}:{serve.port}",))[0]
        return Reader(name=f"vllm:{serve.served_model_name}@{url}",
                      factory=vllm_chat_model_factory(serve, max_tokens=answer_tokens),
                      adapters=True, context_tokens=window, count_tokens=count,
                      serve_config=serve)
    if spec == "local":
        if store is None:
            raise InvalidInputError("the local reader needs the store (for adapter folders).")
        return Reader(name="local:transformers", factory=_local_factory(store, base_model,
                                                                        answer_tokens),
                      adapters=True, context_tokens=window, count_tokens=count,
                      serve_config=serve)
    model = spec
    if isinstance(spec, str):
        try:
            from langchain.chat_models import init_chat_model
        except ImportError as exc:
            raise InvalidInputError(
                f"--reader {spec!r} needs `pip install langchain` (init_chat_model) and the "
                "provider's package; or use --reader served / local.") from exc
        model = init_chat_model(spec, temperature=0, max_tokens=answer_tokens)
    from langchain_ragtune.eval.judge import describe_model

    def factory(adapter: str | None) -> Any:
        if adapter is not None:
            raise InvalidInputError(f"the reader {describe_model(model)} cannot serve adapter "
                                    f"{adapter!r}; use --reader served or local.")
        return model

    return Reader(name=describe_model(model), factory=factory, adapters=False,
                  context_tokens=window, count_tokens=count, serve_config=serve)


def _token_counter(base_model: str | os.PathLike[str]) -> Callable[[str], int] | None:
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(base_model))
    except Exception:  # no transformers, or no tokenizer in the folder: estimate instead
        return None
    return lambda text: len(tok(text, add_special_tokens=False)["input_ids"])


def _local_factory(store: Any, base_model: Any, answer_tokens: int) -> Callable[[str | None], Any]:
    from langchain_ragtune.serving.chat import InProcessChatModel
    from langchain_ragtune.tuning.registry import AdapterRegistry

    registry = AdapterRegistry(store)
    cache: dict[str | None, Any] = {}

    def factory(adapter: str | None) -> Any:
        if adapter not in cache:
            path = registry.get(adapter).path if adapter else None
            cache[adapter] = InProcessChatModel(adapter_path=path, max_tokens=answer_tokens,
                                                base_model=str(base_model) if base_model
                                                else None)
        return cache[adapter]

    return factory


def seed_spread(per_seed: dict[int, dict[str, Any]], modes: Iterable[str]) -> dict[str, Any]:
    """Mean and spread over seeds of each mode's overall F1 (and judge accuracy).

    Example:
        >>> s = seed_spread({0: {"modes": {"p": {"f1": {"overall": 0.1}}}},
        ...                  1: {"modes": {"p": {"f1": {"overall": 0.3}}}}}, ["p"])
        >>> s["modes"]["p"]["f1_overall"]["mean"], s["modes"]["p"]["f1_overall"]["std"]
        (0.2, 0.1414)
    """
    out: dict[str, Any] = {"values": sorted(per_seed), "modes": {}}
    for mode in modes:
        entry: dict[str, Any] = {}
        for key in ("f1", "judge"):
            vals = [s["modes"][mode][key]["overall"] for s in per_seed.values()
                    if mode in s["modes"] and (s["modes"][mode].get(key) or {}).get("overall")
                    is not None]
            if vals:
                entry[f"{key}_overall"] = {
                    "mean": round(statistics.fmean(vals), 4),
                    "std": round(statistics.stdev(vals), 4) if len(vals) > 1 else 0.0,
                    "min": round(min(vals), 4), "max": round(max(vals), 4),
                    "per_seed": [round(v, 4) for v in vals]}
        if entry:
            out["modes"][mode] = entry
    acc = [s["router"]["accuracy_vs_oracle"] for s in per_seed.values()
           if (s.get("router") or {}).get("accuracy_vs_oracle") is not None]
    if acc:
        out["router_accuracy_vs_oracle"] = {
            "mean": round(statistics.fmean(acc), 4),
            "std": round(statistics.stdev(acc), 4) if len(acc) > 1 else 0.0,
            "per_seed": [round(v, 4) for v in acc]}
    return out


def _records_path(base: str | os.PathLike[str] | None, seed: int, first: bool) -> Path | None:
    if base is None:
        return None
    p = Path(base)
    return p if first else p.with_name(f"{p.stem}.seed{seed}{p.suffix}")


def run_memory(store: Any, seed: int, *, first: bool = True, tune: TuneSettings | None = None,
               reuse: bool = False, reuse_adapters: bool = False,
               namespace_prefix: Sequence[str] = ("locomo-eval",), progress: bool = True,
               refresh_options: dict[str, Any] | None = None) -> ConversationMemory:
    """The :class:`~.modes.ConversationMemory` of one seed of a run.

    Seeds after the first reuse the first one's ingestion (same turns, same vectors) and
    always train their own adapter.
    """
    return ConversationMemory(
        store, namespace_prefix=namespace_prefix, reuse=reuse or not first,
        reuse_adapter=reuse_adapters and first,
        tune=dataclasses.replace(tune, seed=seed) if tune is not None else None,
        progress=progress, refresh_options=refresh_options)


def run_answer_eval(store: Any, conversations: Sequence[LocomoConversation],
                    modes: Sequence[str], reader: Reader, *, k: int = 10, window: int = 0,
                    answer_tokens: int = 48, categories: Iterable[int] | None = None,
                    max_questions: int | None = None, per_category: int | None = None,
                    tune: TuneSettings | None = None,
                    seeds: Sequence[int] = (0,), reuse: bool = False,
                    reuse_adapters: bool = False,
                    publish: Callable[[Any], Any] | None = None,
                    ensure_loaded: Callable[[Any], Any] | None = None,
                    judge: Any = None, holistic: int = 0,
                    holistic_modes: Sequence[str] | None = None,
                    namespace_prefix: Sequence[str] = ("locomo-eval",),
                    records_path: str | os.PathLike[str] | None = None, resume: bool = False,
                    progress: bool = True, data: dict[str, Any] | None = None,
                    include_questions: bool = True,
                    refresh_options: dict[str, Any] | None = None,
                    memories: dict[int, ConversationMemory] | None = None) -> dict[str, Any]:
    """Answer every question in every mode; return the results JSON (module docstring).

    Args:
        store: a set-up memory store (its own schema: conversations are forgotten and
            ingested again unless ``reuse``).
        conversations: LoCoMo conversations.
        modes: mode names (:data:`~.modes.ANSWER_MODES`).
        reader: the model that answers (:func:`make_reader`).
        k, window: retrieval settings (the router's and the recall's k).
        answer_tokens: longest answer.
        categories, max_questions, per_category: which questions (see
            :func:`~.harness.select_questions`).
        tune: how adapters are trained (needed by parametric, hybrid, routed).
        seeds: training seeds; seed-dependent modes run once per seed.
        reuse: keep namespaces that already hold a conversation.
        reuse_adapters: also keep their published adapters (first seed only).
        publish, ensure_loaded: see :class:`~.modes.ConversationMemory`.
        judge: a chat model grading answers CORRECT/WRONG (categories 1-4), or ``None``.
        holistic: holistic questions per conversation compared pairwise by ``judge``.
        holistic_modes: the modes compared there (default: every mode of the run).
        namespace_prefix: first labels of the conversations' namespaces.
        records_path: per-question JSON lines (resumable); seeds after the first write
            ``<stem>.seed<N>.jsonl`` next to it.
        resume: continue a stopped run from its records.
        progress: progress bars.
        data: what the data was (path, sha256), for the metadata.
        include_questions: keep every per-question record in the result.
        refresh_options: see :class:`~.modes.ConversationMemory`.
        memories: per seed, a memory made by :func:`run_memory` (and perhaps pretrained:
            adapters trained before a server started); made here when absent.
    """
    seeds = list(dict.fromkeys(int(s) for s in seeds)) or [0]
    needs_adapter = any(m in SEED_MODES for m in modes)
    if needs_adapter and tune is None:
        tune = TuneSettings()
    if holistic and judge is None:
        raise InvalidInputError("--holistic compares modes with a judge: pass --judge too.")
    stray = [m for m in holistic_modes or () if m not in modes]
    if stray or (holistic_modes is not None and len(holistic_modes) < 2):
        raise InvalidInputError(f"--holistic-modes {list(holistic_modes or ())} must name at "
                                f"least two modes of this run ({', '.join(modes)}).")
    cats = sorted({int(c) for c in categories}) if categories is not None else None
    started = now_iso()
    t0 = time.perf_counter()
    per_seed: dict[int, dict[str, Any]] = {}
    all_rows: list[dict[str, Any]] = []
    seed_rows: dict[int, list[dict[str, Any]]] = {}
    judge_counts: dict[str, int] = {}
    holistic_out: dict[str, Any] | None = None
    mode_settings: dict[str, Any] = {}
    for i, seed in enumerate(seeds):
        first = i == 0
        names = list(modes) if first else [m for m in modes if m in SEED_MODES]
        if not names:
            break
        memory = (memories or {}).get(seed) or run_memory(
            store, seed, first=first, tune=tune if needs_adapter else None, reuse=reuse,
            reuse_adapters=reuse_adapters, namespace_prefix=namespace_prefix,
            progress=progress, refresh_options=refresh_options)
        memory.publish = memory.publish or publish
        memory.ensure_loaded = memory.ensure_loaded or ensure_loaded
        built = build_modes(names, memory, reader, k=k, window=window,
                            answer_tokens=answer_tokens)
        settings = {"modes": {m.name: m.describe() for m in built}, "seed": seed,
                    "conversations": [c.sample_id for c in conversations],
                    "categories": cats, "max_questions": max_questions,
                    "per_category": per_category,
                    "data_sha256": (data or {}).get("sha256")}
        if first:
            mode_settings = settings["modes"]
        path = _records_path(records_path, seed, first)
        records = RecordsFile(path, settings, resume=resume) if path else None
        try:
            rows = run_modes(conversations, built, categories=cats, k=k, records=records,
                             progress=progress, max_questions=max_questions,
                             per_category=per_category)
        finally:
            if records:
                records.close()
        for r in rows:
            r["seed"] = seed
        if judge is not None:
            from langchain_ragtune.eval.judge import judge_records

            counts = judge_records([r for r in rows if r.get("kind") == "question"], judge,
                                   progress=progress)
            for key, n in counts.items():
                judge_counts[key] = judge_counts.get(key, 0) + n
        seed_rows[seed] = rows
        if first and holistic:
            compared = [m for m in built if holistic_modes is None or m.name in holistic_modes]
            holistic_out = _holistic(conversations, compared, judge, holistic, seed=seed,
                                     progress=progress)
        all_rows += rows
    # Each seed's summary: its own seed-dependent modes, the first seed's other modes.
    first_rows = seed_rows[seeds[0]]
    for seed, rows in seed_rows.items():
        fixed = [r for r in first_rows if r.get("mode") not in SEED_MODES] if seed != seeds[0] \
            else []
        per_seed[seed] = summarize(fixed + rows, include_questions=False)
    result = summarize(first_rows, include_questions=False)
    if len(per_seed) > 1:
        result["seeds"] = seed_spread(per_seed, [m for m in modes if m in SEED_MODES])
    if holistic_out is not None:
        result["holistic"] = holistic_out
    metadata = run_metadata(
        store, conversations, started=started, seconds=time.perf_counter() - t0, data=data,
        categories=cats, records_path=records_path, modes=list(modes),
        mode_settings=mode_settings, reader=reader.name, k=k, window=window,
        answer_tokens=answer_tokens, seeds=seeds, tune=tune.describe() if tune else None,
        # distinct questions, not question-mode answers (each question has a row per mode)
        n_questions=len({r.get("qid") for r in first_rows if r.get("kind") == "question"}))
    embeddings = getattr(store, "embeddings", None)
    if embeddings is not None:
        from langchain_ragtune.eval.retrieval_eval import describe_embeddings

        metadata["embedding_model"] = describe_embeddings(embeddings)
    if judge is not None:
        from langchain_ragtune.eval.judge import JUDGE_PROMPT, JUDGE_PROTOCOL, describe_model

        metadata["judge"] = {"model": describe_model(judge), "protocol": JUDGE_PROTOCOL,
                             "prompt": JUDGE_PROMPT, "categories": [1, 2, 3, 4],
                             "counts": judge_counts}
    result["metadata"] = metadata
    if include_questions:
        result["questions"] = [r for r in all_rows if r.get("kind") == "question"]
    return result


def _holistic(conversations: Sequence[LocomoConversation], built: Sequence[Any], judge: Any,
              n: int, *, seed: int, progress: bool) -> dict[str, Any]:
    """Every mode answers ``n`` holistic questions per conversation; the judge compares
    each pair of modes on each question (random A/B order)."""
    from langchain_ragtune.eval.holistic import (
        PAIRWISE_PROMPT,
        compare_modes,
        holistic_questions,
        pairwise_summary,
    )
    from langchain_ragtune.eval.judge import describe_model

    records: list[dict[str, Any]] = []
    comparisons: list[dict[str, Any]] = []
    for pos, conv in enumerate(conversations):
        # One conversation at a time: the judge sees the plain question, and a mode that
        # gave no answer is left out of its comparisons (not compared as an empty one).
        answers: dict[str, dict[str, str]] = {}
        for mode in built:
            for q in holistic_questions(conv, n):
                a = mode.answer(conv, q)
                if a.prediction:
                    answers.setdefault(mode.name, {})[q.question] = a.prediction
                records.append({"kind": "holistic", "mode": mode.name,
                                "conversation": conv.sample_id, "question": q.question,
                                "prediction": a.prediction, "route": a.route,
                                "latency_ms": round(a.latency_ms, 1)})
        for c in compare_modes(answers, judge, seed=seed * 1000 + pos, progress=progress):
            comparisons.append({**c, "conversation": conv.sample_id})
    return {"questions_per_conversation": n, "judge": describe_model(judge),
            "prompt": PAIRWISE_PROMPT, "pairs": pairwise_summary(comparisons),
            "answers": records, "comparisons": comparisons}
