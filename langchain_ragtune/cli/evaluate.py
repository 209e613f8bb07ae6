"""``ragtune eval`` and ``ragtune bench``: measure the memory, write JSON, reports and plots.

Light at import: the store, models and plotting load inside the handlers.

Example:
    $ ragtune eval locomo --mode retrieval --k 10 --window 1 --json results/locomo.json
    $ ragtune eval locomo --sample --k 5 --json -          # the shipped sample, JSON on stdout
    $ ragtune eval locomo --mode all --conversations conv-26 --judge served --json r.json
    $ ragtune bench all --json results/bench.json
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from langchain_ragtune.errors import InvalidInputError
from langchain_ragtune.cli._common import write_json

__all__ = ["register"]

#: Modes ``ragtune eval locomo`` knows (``all`` selects every one).
EVAL_MODES = ("none", "full-context", "retrieval", "parametric", "hybrid", "routed")


def register(subparsers: Any) -> None:
    """Add ``eval`` and ``bench`` to the ``ragtune`` command."""
    ev = subparsers.add_parser("eval", help="evaluate memory modes on LoCoMo-format data")
    ev_sub = ev.add_subparsers(dest="eval_command", metavar="DATASET")
    loc = ev_sub.add_parser(
        "locomo", help="LoCoMo: evidence recall@k (retrieval), answer F1 (other modes)",
        description="Ingest each LoCoMo conversation into its own namespace and answer its "
                    "questions in each mode; report recall@k per category (overall = "
                    "categories 1, 2, 4), latency p50/p95, and per-question records.")
    loc.add_argument("--mode", default="retrieval",
                     help=f"comma-separated modes among {', '.join(EVAL_MODES)} "
                          "(default: retrieval)")
    loc.add_argument("--k", type=int, default=10, help="results per search (default 10)")
    loc.add_argument("--window", type=int, default=0,
                     help="turns of context on each side of a hit (default 0)")
    loc.add_argument("--search-mode", default="hybrid", choices=("hybrid", "vector", "keyword"))
    src = loc.add_mutually_exclusive_group()
    src.add_argument("--data", metavar="PATH",
                     help="a LoCoMo-format JSON file (default $RAGTUNE_LOCOMO_PATH, else "
                          "../shared/data/locomo/locomo10.json)")
    src.add_argument("--sample", action="store_true",
                     help="use the small synthetic conversation shipped with the package")
    loc.add_argument("--conversations", metavar="IDS", help="comma-separated sample ids")
    loc.add_argument("--categories", metavar="CATS", help="comma-separated categories 1-5")
    loc.add_argument("--max-questions", type=int, metavar="N",
                     help="only the first N questions of each conversation")
    loc.add_argument("--per-category", type=int, metavar="N",
                     help="only the first N questions of each category of each conversation "
                          "(a conversation's first questions are often all of one category)")
    loc.add_argument("--json", metavar="FILE", dest="json_out",
                     help="write the results JSON here ('-' for stdout)")
    loc.add_argument("--records", metavar="FILE",
                     help="per-question JSON lines (default: next to --json, *.questions.jsonl)")
    loc.add_argument("--resume", action="store_true",
                     help="continue a stopped run from its --records file")
    loc.add_argument("--report", metavar="DIR", help="write a Markdown report and PNG plots")
    loc.add_argument("--reuse-ingest", action="store_true",
                     help="skip ingesting conversations whose namespace already holds all their "
                          "turns (fast sweeps over --k/--window; stale if the store's "
                          "embedding changed since)")
    loc.add_argument("--schema", default="ragtune_eval",
                     help="PostgreSQL schema for evaluation data, kept apart from real "
                          "memories (default ragtune_eval)")
    loc.add_argument("--namespace-prefix", default="locomo-eval",
                     help="first namespace label; each conversation gets (prefix, sample_id)")
    loc.add_argument("--no-questions", action="store_true",
                     help="leave per-question records out of the JSON (they stay in --records)")
    ans = loc.add_argument_group(
        "answering modes", "every mode but a lone retrieval answers with one reader model; "
        "parametric, hybrid and routed train each conversation's adapter first")
    ans.add_argument("--answer", action="store_true",
                     help="let the retrieval mode answer too (it does whenever another mode "
                          "is asked for); without it a lone retrieval mode only retrieves")
    ans.add_argument("--reader", default="served",
                     help="who answers: served (vLLM at RAGTUNE_VLLM_URLS, else a server "
                          "started for the run), local (transformers + peft in process), or "
                          "an init_chat_model string such as openai:gpt-4o-mini (no adapters)")
    ans.add_argument("--answer-tokens", type=int, default=48, help="longest answer (48)")
    ans.add_argument("--context-tokens", type=int,
                     help="the reader's context window for full-context "
                          "(default RAGTUNE_MAX_MODEL_LEN, 2048)")
    ans.add_argument("--teacher", default=None,
                     help="distillation teacher: none (extractive only), local, or an "
                          "init_chat_model string (default: RAGTUNE_TEACHER, else none)")
    ans.add_argument("--epochs", type=float, help="training epochs (default RAGTUNE_EPOCHS, 6)")
    ans.add_argument("--max-steps", type=int, help="stop training after N steps")
    ans.add_argument("--max-examples", type=int, help="cap the distilled training examples")
    ans.add_argument("--heldout-questions", type=int,
                     help="held-out distilled questions the training run scores closed-book, "
                          "base vs adapter (default RAGTUNE_EVAL_MAX_QUESTIONS, 96)")
    ans.add_argument("--seeds", default="0",
                     help="comma-separated training seeds; parametric, hybrid and routed run "
                          "once per seed and report mean and spread (default 0)")
    ans.add_argument("--reuse-adapters", action="store_true",
                     help="with --reuse-ingest, keep a conversation's published adapter "
                          "instead of training again")
    ans.add_argument("--judge", default=None,
                     help="grade answers CORRECT/WRONG with an LLM judge: served, local, or an "
                          "init_chat_model string (categories 1-4)")
    ans.add_argument("--holistic-modes", metavar="MODES",
                     help="comma-separated modes compared on holistic questions (default: "
                          "every mode of the run; e.g. parametric,retrieval,routed)")
    ans.add_argument("--judge-tokens", type=int, default=96,
                     help="longest judge reply: a one-sentence reason and the label (96)")
    ans.add_argument("--holistic", type=int, default=0, metavar="N",
                     help="N holistic questions per conversation, compared pairwise between "
                          "modes by the judge (random A/B order)")
    loc.add_argument("--no-progress", action="store_true", help="no progress bars")
    loc.set_defaults(handler=_eval_locomo)
    ev.set_defaults(handler=lambda args: (ev.print_help(), 2)[1])

    rep = ev_sub.add_parser("report", help="Markdown report and plots from a results JSON")
    rep.add_argument("results", nargs="+", help="results JSON file(s) of `ragtune eval`")
    rep.add_argument("--report", metavar="DIR", required=True, help="output folder")
    rep.set_defaults(handler=_eval_report)



# -- ragtune eval locomo ---------------------------------------------------------------------

def _csv(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def _parse_modes(value: str) -> list[str]:
    modes = _csv(value) or ["retrieval"]
    if modes == ["all"]:
        return list(EVAL_MODES)
    unknown = [m for m in modes if m not in EVAL_MODES]
    if unknown:
        raise InvalidInputError(f"unknown mode(s) {unknown}; choose among "
                                f"{', '.join(EVAL_MODES)} (or all).")
    return list(dict.fromkeys(modes))


def _parse_seeds(value: str) -> list[int]:
    try:
        seeds = [int(v) for v in _csv(value)]
    except ValueError:
        raise InvalidInputError(f"--seeds {value!r} must be integers, e.g. 0,1,2.") from None
    if not seeds:
        raise InvalidInputError(f"--seeds {value!r} must name at least one seed, e.g. 0.")
    return seeds


def _parse_categories(value: str | None) -> list[int] | None:
    if not value:
        return None
    try:
        cats = sorted({int(c) for c in _csv(value)})
    except ValueError:
        raise InvalidInputError(
            f"--categories {value!r} must be numbers 1-5, e.g. 1,2,4.") from None
    if not cats or any(c not in range(1, 6) for c in cats):
        raise InvalidInputError(f"--categories {value!r} must be numbers 1-5, e.g. 1,2,4.")
    return cats


def _fmt(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def summary_lines(result: dict[str, Any]) -> list[str]:
    """A short human-readable summary of a results JSON (what the command prints)."""
    meta = result.get("metadata", {})
    lines = [f"LoCoMo: {meta.get('n_questions', '?')} questions, "
             f"{len(meta.get('conversations', []))} conversation(s), k={meta.get('k')}, "
             f"window={meta.get('window')}, embeddings={meta.get('embedding_model')}"]
    for name, entry in result.get("modes", {}).items():
        for key, label in (("recall_at_k", f"recall@{meta.get('k')}"), ("f1", "F1"),
                           ("judge", "judge")):
            if key in entry:
                vals = entry[key]
                cats = " ".join(f"{c}={_fmt(vals.get(c))}" for c in ("1", "2", "3", "4", "5")
                                if c in vals)
                lines.append(f"  {name:<10} {label:<10} overall(1,2,4)={_fmt(vals['overall'])} "
                             f"all={_fmt(vals['all'])}  {cats}")
        lat = entry.get("latency_ms", {})
        lines.append(f"  {name:<10} latency    p50={_fmt(lat.get('p50'), 1)} ms "
                     f"p95={_fmt(lat.get('p95'), 1)} ms")
        mix = (entry.get("router") or {}).get("mix")
        if mix:
            acc = entry["router"].get("accuracy_vs_oracle")
            lines.append(f"  {name:<10} routes     " + " ".join(
                f"{r}={share:.0%}" for r, share in mix.items())
                + f"  accuracy vs oracle={_fmt(acc)}")
        ex = entry.get("excluded")
        if ex:
            lines.append(f"  {name:<10} excluded   {ex['no_evidence']} without evidence, "
                         f"{ex['unmatched_evidence_only']} with only unmatched evidence "
                         f"({ex['unmatched_evidence_ids']} unmatched ids ignored)")
    for name, entry in (result.get("seeds") or {}).get("modes", {}).items():
        f1 = entry.get("f1_overall")
        if f1:
            lines.append(f"  {name:<10} F1 over seeds {result['seeds']['values']}: "
                         f"{f1['mean']:.3f} ± {f1['std']:.3f}")
    for pair, row in ((result.get("holistic") or {}).get("pairs") or {}).items():
        lines.append(f"  holistic   {pair}: {row.get('wins_a')}-{row.get('wins_b')} "
                     f"({row.get('ties')} ties), win rate {_fmt(row.get('win_rate_a'))}")
    return lines


def _eval_locomo(args: argparse.Namespace) -> int:
    from langchain_ragtune.eval.locomo import (
        SAMPLE_PATH,
        find_locomo_path,
        load_locomo,
        select_conversations,
    )
    from langchain_ragtune.eval.retrieval_eval import file_sha256, run_retrieval_eval

    modes = _parse_modes(args.mode)
    categories = _parse_categories(args.categories)
    if args.k <= 0 or args.window < 0:
        raise InvalidInputError(f"--k {args.k} must be >= 1 and --window {args.window} >= 0.")
    for flag, value in (("--max-questions", args.max_questions),
                        ("--per-category", args.per_category)):
        if value is not None and value <= 0:
            raise InvalidInputError(f"{flag} {value} must be >= 1 (leave it out for every "
                                    "question).")
    path = SAMPLE_PATH if args.sample else find_locomo_path(args.data)
    conversations = select_conversations(load_locomo(path), _csv(args.conversations))
    records = args.records
    if records is None and args.json_out and args.json_out != "-":
        out = Path(args.json_out)
        records = str(out.with_name(out.stem + ".questions.jsonl"))
    if args.resume and not records:
        raise InvalidInputError(
            "--resume needs a records file: pass --records FILE or --json FILE.")

    data = {"path": str(path), "sha256": file_sha256(path), "sample": bool(args.sample)}
    if args.answer or any(m != "retrieval" for m in modes):
        result = _eval_answers(args, modes, conversations, categories, records, data)
        return _report(args, result, records)

    from langchain_ragtune.store import MemoryStore

    with MemoryStore.from_env(schema=args.schema) as store:
        store.setup()
        result = run_retrieval_eval(
            store, conversations, k=args.k, window=args.window, search_mode=args.search_mode,
            categories=categories, namespace_prefix=(args.namespace_prefix,),
            reuse=args.reuse_ingest,
            records_path=records, resume=args.resume, progress=not args.no_progress,
            max_questions=args.max_questions, per_category=args.per_category,
            data=data, include_questions=not args.no_questions)
    return _report(args, result, records)


def _report(args: argparse.Namespace, result: dict[str, Any], records: str | None) -> int:
    result["metadata"]["options"] = {key: value for key, value in vars(args).items()
                                     if key != "handler" and not callable(value)}
    if args.json_out:
        write_json(result, args.json_out)
    if args.report:
        from langchain_ragtune.eval.report import write_report

        write_report([result], args.report)
    if args.json_out != "-":
        print("\n".join(summary_lines(result)))
        if args.json_out:
            print(f"results: {args.json_out}" + (f"  records: {records}" if records else ""))
        if args.report:
            print(f"report: {Path(args.report) / 'report.md'}")
    return 0


def _chat_model(spec: str, serve: Any, base: Any, max_tokens: int) -> Any:
    """A chat model from a ``--judge`` value: served, local, or an init_chat_model string."""
    if spec == "served":
        from langchain_ragtune.serving.chat import create_chat_model

        return create_chat_model(None, config=serve, max_tokens=max_tokens)
    if spec == "local":
        from langchain_ragtune.serving.chat import InProcessChatModel

        return InProcessChatModel(base_model=str(base), max_tokens=max_tokens)
    try:
        from langchain.chat_models import init_chat_model
    except ImportError as exc:
        raise InvalidInputError(f"--judge {spec!r} needs `pip install langchain` and the "
                                "provider's package; or use served / local.") from exc
    return init_chat_model(spec, temperature=0, max_tokens=max_tokens)


def _eval_answers(args: argparse.Namespace, modes: list[str], conversations: list[Any],
                  categories: list[int] | None, records: str | None,
                  data: dict[str, Any]) -> dict[str, Any]:
    """The answering modes: the store, a vLLM server when one is needed, reader, judge."""
    import contextlib
    import sys as _sys

    from langchain_ragtune.config import ModelConfig, ServeConfig
    from langchain_ragtune.eval.answer_eval import (
        SEED_MODES,
        make_reader,
        run_answer_eval,
        run_memory,
    )
    from langchain_ragtune.eval.modes import TuneSettings
    from langchain_ragtune.models import prepare_base_model
    from langchain_ragtune.store import MemoryStore

    for flag in ("answer_tokens", "context_tokens", "judge_tokens", "epochs", "max_steps",
                 "max_examples"):
        value = getattr(args, flag)
        if value is not None and value <= 0:
            raise InvalidInputError(f"--{flag.replace('_', '-')} {value} must be positive.")
    if args.heldout_questions is not None and args.heldout_questions < 0:
        raise InvalidInputError(f"--heldout-questions {args.heldout_questions} must be >= 0.")
    if args.holistic < 0 or (args.holistic and not args.judge):
        raise InvalidInputError(f"--holistic {args.holistic} needs --judge (the pairwise "
                                "comparison is the judge's) and must be >= 0.")
    seeds = _parse_seeds(args.seeds)
    distill: dict[str, Any] = {}
    if args.teacher is not None:
        distill["teacher"] = None if args.teacher == "none" else args.teacher
    if args.max_examples is not None:
        distill["max_examples"] = args.max_examples
    train: dict[str, Any] = {}
    if args.epochs is not None:
        train["epochs"] = args.epochs
    if args.max_steps is not None:
        train["max_steps"] = args.max_steps
    gate: dict[str, Any] = {"gate": False}  # the evaluation measures the adapter as trained
    if args.heldout_questions is not None:
        gate["eval_max_questions"] = args.heldout_questions
    tune = TuneSettings(distill=distill, train=train, gate=gate) \
        if any(m in SEED_MODES for m in modes) else None
    quiet = args.no_progress or args.json_out == "-"
    model_cfg = ModelConfig.from_env()
    with contextlib.ExitStack() as stack:
        store = stack.enter_context(MemoryStore.from_env(schema=args.schema))
        store.setup()
        base = prepare_base_model(model_cfg, quiet=True)
        memories = {}
        # Train every adapter first, while no vLLM server takes a core from the training (a
        # resumed run trains only what its remaining questions need, when they need it).
        if tune is not None and not args.resume:
            for i, seed in enumerate(seeds):
                memories[seed] = run_memory(
                    store, seed, first=i == 0, tune=tune, reuse=args.reuse_ingest,
                    reuse_adapters=args.reuse_adapters,
                    namespace_prefix=(args.namespace_prefix,), progress=not quiet)
                memories[seed].pretrain(conversations)
        serve = ServeConfig.from_env()
        publish = ensure_loaded = None
        if "served" in (args.reader, args.judge):
            if serve.vllm_urls:
                url = serve.vllm_urls[0].rstrip("/")
            else:
                from langchain_ragtune.serving.launcher import start_server

                if not quiet:
                    print("starting vLLM for the reader (about a minute)...", file=_sys.stderr)
                log_path = model_cfg.home / "logs" / "eval-vllm.log"
                url = stack.enter_context(start_server(serve, model_path=base, port=0,
                                                       log_path=log_path)).url
            serve = ServeConfig.from_env(vllm_urls=(url,))
            # vLLM holds a core now: one torch thread for embeddings and training beside it
            # (two fight it: searches went from ~15 ms to ~450 ms in the demo).
            if "torch" in _sys.modules:
                _sys.modules["torch"].set_num_threads(1)
        if args.reader == "served":
            from langchain_ragtune.serving.client import VLLMAdminClient
            from langchain_ragtune.serving.publisher import Publisher
            from langchain_ragtune.tuning.registry import AdapterRegistry

            publisher = Publisher(AdapterRegistry(store), endpoints=list(serve.vllm_urls),
                                  config=serve)
            publish = publisher.publish

            def ensure_loaded(rec: Any) -> None:  # a reused adapter on a fresh server
                with VLLMAdminClient(serve.vllm_urls[0]) as client:
                    if rec.name not in client.adapters():
                        client.load_adapter(rec.name, rec.path)

        reader = make_reader(args.reader, serve_config=serve, base_model=base,
                             answer_tokens=args.answer_tokens,
                             context_tokens=args.context_tokens, store=store)
        judge = _chat_model(args.judge, serve, base, args.judge_tokens) if args.judge else None
        return run_answer_eval(
            store, conversations, modes, reader, k=args.k, window=args.window,
            answer_tokens=args.answer_tokens, categories=categories,
            max_questions=args.max_questions, per_category=args.per_category, tune=tune,
            seeds=seeds,
            reuse=args.reuse_ingest, reuse_adapters=args.reuse_adapters, publish=publish,
            ensure_loaded=ensure_loaded, judge=judge, holistic=args.holistic,
            holistic_modes=_parse_modes(args.holistic_modes) if args.holistic_modes else None,
            namespace_prefix=(args.namespace_prefix,), records_path=records,
            resume=args.resume, progress=not quiet, data=data,
            include_questions=not args.no_questions, memories=memories)


def _eval_report(args: argparse.Namespace) -> int:
    from langchain_ragtune.eval.report import load_results, write_report

    path = write_report([load_results(p) for p in args.results], args.report)
    print(f"report: {path}")
    return 0
