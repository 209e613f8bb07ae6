"""``ragtune router fit | decide`` and ``ragtune chat``: the router's CLI.

Light at import: the store, the models and LangGraph load inside the handlers.

Example:
    $ ragtune router fit --from-eval results/locomo.questions.jsonl --out ~/.ragtune/router.json
    $ ragtune router decide "What kind of person am I?" --namespace user-42 --json
    $ RAGTUNE_ROUTER_POLICY=learned RAGTUNE_ROUTER_POLICY_PATH=~/.ragtune/router.json \\
        ragtune chat --namespace user-42
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from langchain_ragtune.cli._common import (add_json_flag, add_namespace_arg, open_store,
                                           parse_namespace, print_json, stop_cleanly_on_sigterm)


__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add ``router`` and ``chat`` to the ``ragtune`` command."""
    router = subparsers.add_parser("router", help="fit or inspect the memory router")
    sub = router.add_subparsers(dest="router_command", metavar="ACTION")

    fit = sub.add_parser(
        "fit", help="fit a learned routing policy from labelled questions",
        description="Labels say which route answered each question best. Give them as JSON "
                    "lines ({\"question\", \"route\", \"signals\"?}) with --labels, or let them "
                    "be derived from `ragtune eval locomo` records (best-scoring mode per "
                    "question) with --from-eval. Use the policy with "
                    "RAGTUNE_ROUTER_POLICY=learned RAGTUNE_ROUTER_POLICY_PATH=OUT.")
    src = fit.add_mutually_exclusive_group(required=True)
    src.add_argument("--labels", metavar="FILE", help="labels as JSON lines")
    src.add_argument("--from-eval", metavar="FILE",
                     help="per-question records of `ragtune eval locomo` (*.questions.jsonl)")
    fit.add_argument("--out", metavar="PATH", required=True, help="where the policy is written")
    fit.add_argument("--method", choices=("logreg", "knn"), default="logreg")
    fit.add_argument("--k", type=int, default=5, help="neighbours that vote (knn)")
    fit.add_argument("--epochs", type=int, default=500, help="gradient steps (logreg)")
    fit.add_argument("--embeddings", choices=("default", "hash"), default="default",
                     help="query embeddings: the store's model (default) or the hashing fake")
    fit.add_argument("--margin", type=float, default=0.0,
                     help="--from-eval: a costlier route must win by more than this")
    add_json_flag(fit)
    fit.set_defaults(handler=_fit)

    dec = sub.add_parser("decide", help="show the route, reasons and scores for a query")
    dec.add_argument("query")
    add_namespace_arg(dec)
    add_json_flag(dec)
    dec.set_defaults(handler=_decide)
    router.set_defaults(handler=lambda args: (router.print_help(), 2)[1])

    chat = subparsers.add_parser(
        "chat", help="chat with a namespace's memory; the route is shown for every answer",
        description="An interactive chat through the memory graph (route -> retrieve -> "
                    "generate -> remember). Attaches to RAGTUNE_VLLM_URLS or the configured "
                    "server, starts one if none answers, or uses the in-process backend "
                    "with --local. Type /quit to leave, /why to toggle the scores.")
    add_namespace_arg(chat)
    chat.add_argument("--local", action="store_true",
                      help="answer with the in-process transformers backend (no vLLM)")
    chat.add_argument("--no-remember", action="store_true",
                      help="do not store this chat's turns")
    chat.add_argument("--thread", help="thread id (default: a new one)")
    chat.set_defaults(handler=_chat)


# -- fit ------------------------------------------------------------------------------------

def _embeddings(kind: str) -> Any:
    if kind == "hash":
        from langchain_ragtune.testing import HashEmbeddings

        return HashEmbeddings()
    from langchain_ragtune.config import StoreConfig
    from langchain_ragtune.embeddings import default_embeddings

    return default_embeddings(StoreConfig.from_env().embedding_model)


def _fit(args: argparse.Namespace) -> int:
    import json

    from langchain_ragtune.errors import DatasetError
    from langchain_ragtune.router.learned import fit_policy, labels_from_eval_records, read_labels

    if args.labels:
        labels = read_labels(args.labels)
    else:
        path = Path(args.from_eval)
        try:
            records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
                       if line.strip()]
        except (OSError, ValueError) as exc:
            raise DatasetError(f"cannot read evaluation records {str(path)!r}: {exc}") from None
        labels = labels_from_eval_records(records, margin=args.margin)
        if not labels:
            raise DatasetError(
                f"{str(path)!r} has no question answered in several modes; run `ragtune eval "
                "locomo --mode none,retrieval,parametric,hybrid` first.")
    t0 = time.perf_counter()
    policy = fit_policy(labels, _embeddings(args.embeddings), method=args.method, k=args.k,
                        epochs=args.epochs)
    out = policy.save(args.out)
    mix: dict[str, int] = {}
    for row in labels:
        mix[row["route"]] = mix.get(row["route"], 0) + 1
    result = {"out": str(out), "method": policy.method, "labels": len(labels), "mix": mix,
              "train_accuracy": policy.train_accuracy, "embedding_model": policy.embedding_model,
              "seconds": round(time.perf_counter() - t0, 2)}
    if args.json:
        print_json(result)
    else:
        print(f"fitted a {policy.method} router policy on {len(labels)} labels {mix} "
              f"(train accuracy {policy.train_accuracy:.2f}) -> {out}")
        print(f"use it: RAGTUNE_ROUTER_POLICY=learned RAGTUNE_ROUTER_POLICY_PATH={out}")
    return 0


# -- decide ---------------------------------------------------------------------------------

def _decide(args: argparse.Namespace) -> int:
    from langchain_ragtune.router.memory import MemoryRouter

    ns = parse_namespace(args.namespace)
    with open_store() as store:
        result = MemoryRouter(store).route(args.query, ns)
    d = result.decision_dict()
    d["context"] = result.context
    if args.json:
        print_json(d)
        return 0
    print(f"route: {result.route}  (model {result.model})")
    for reason in result.decision.reasons:
        print(f"  - {reason}")
    if result.decision.fallbacks:
        print(f"  fallbacks: {', '.join(result.decision.fallbacks)}")
    keys = ("scope", "holistic", "specific", "top_vector", "lexical", "hits", "fresh_hits",
            "watermark_seq", "forgotten")
    print("  " + "  ".join(f"{k}={d['scores'].get(k)}" for k in keys))
    return 0


# -- chat -----------------------------------------------------------------------------------

def _server_up(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/health", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def _local_factory(registry: Any) -> Any:
    from langchain_ragtune.serving.chat import InProcessChatModel

    models: dict[str | None, Any] = {}

    def factory(adapter: str | None) -> Any:
        if adapter not in models:
            rec = registry.get(adapter) if adapter else None
            models[adapter] = InProcessChatModel(adapter_path=rec.path if rec else None,
                                                 max_tokens=160)
        return models[adapter]

    return factory


def _chat(args: argparse.Namespace) -> int:
    import contextlib

    from langchain_core.messages import HumanMessage
    from langgraph.checkpoint.memory import InMemorySaver

    from langchain_ragtune.config import ServeConfig, StoreConfig
    from langchain_ragtune.router.nodes import create_memory_graph
    from langchain_ragtune.serving.chat import endpoint_for
    from langchain_ragtune.store import MemoryStore
    from langchain_ragtune.tuning.registry import AdapterRegistry


    ns = parse_namespace(args.namespace)
    serve = ServeConfig.from_env()
    with stop_cleanly_on_sigterm(), contextlib.ExitStack() as stack:
        store = stack.enter_context(MemoryStore(StoreConfig.from_env()))
        store.setup()
        registry = AdapterRegistry(store)
        factory = None
        where = "in-process (transformers)"
        if args.local:
            factory = _local_factory(registry)
        else:
            url = endpoint_for(serve, ns)
            if not _server_up(url):
                from langchain_ragtune.serving.launcher import start_server

                print(f"no vLLM answers at {url}; starting one (about a minute)...",
                      file=sys.stderr)
                server = stack.enter_context(start_server(serve))
                url = server.url
                serve = ServeConfig.from_env(vllm_urls=(url,))
            from langchain_ragtune.serving.publisher import Publisher

            with contextlib.suppress(Exception):  # a missing adapter falls back by itself
                Publisher(registry, endpoints=[url], config=serve).ensure_loaded(ns)
            where = f"vLLM at {url}"
        graph = create_memory_graph(store, chat_model_factory=factory, serve_config=serve,
                                    checkpointer=InMemorySaver())
        remember = graph.remember_node
        stack.callback(remember.stop)
        current = registry.current(ns)
        print(f"chatting with namespace {'/'.join(ns)} via {where}; adapter: "
              f"{current.name if current else 'none yet'}. /quit to leave, /why for scores.")
        cfg = {"configurable": {"namespace": ns, "thread_id": args.thread or uuid.uuid4().hex}}
        why = False
        while True:
            try:
                line = input("you> ").strip()
            except EOFError:
                print()
                break
            if not line:
                continue
            if line in ("/quit", "/exit", ":q"):
                break
            if line == "/why":
                why = not why
                print(f"(scores {'on' if why else 'off'})")
                continue
            t0 = time.perf_counter()
            state = {"messages": [HumanMessage(line)]}
            if args.no_remember:
                out = _answer_only(graph, state, cfg)
            else:
                out = graph.invoke(state, cfg)
            ms = (time.perf_counter() - t0) * 1000
            d = out.get("memory_decision") or {}
            reason = (d.get("reasons") or [""])[0]
            fb = f" fallbacks={','.join(d['fallbacks'])}" if d.get("fallbacks") else ""
            print(f"[{out.get('memory_route')} · {out.get('memory_model')} · {ms:.0f} ms] "
                  f"{reason}{fb}")
            if why:
                s = d.get("scores") or {}
                print("  " + "  ".join(f"{k}={s.get(k)}" for k in (
                    "scope", "top_vector", "lexical", "fresh_hits", "watermark_seq", "forgotten")))
            print(f"ai> {out['messages'][-1].content}\n")
    return 0


def _answer_only(graph: Any, state: dict, cfg: dict) -> dict:
    """Run the graph but stop before the remember node."""
    out = graph.invoke(state, cfg, interrupt_before=["remember"])
    return out
