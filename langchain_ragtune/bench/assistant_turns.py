"""Does retrieving what the assistant said help? LoCoMo recall and answers with and without.

A chatbot's memory holds the user's turns and the assistant's replies (role ``ai``). Replies
can carry the answer the user needs again, or a wrong answer that is then repeated, and they
compete with the user's own turns for the top-k. Measured on one LoCoMo conversation in a
throwaway schema, through the shipped memory graph and a real vLLM:

1. the conversation is remembered (the evidence turns);
2. ``questions`` LoCoMo questions are asked once through the memory graph, each in its own
   thread; the graph stores the question (role ``human``) and its reply (role ``ai``);
3. each question is asked again, retrieving (top ``k``) from: ``conversation`` (the turns of
   step 1 only, the baseline), ``with_assistant`` (everything, as the graph does by default)
   and ``without_assistant`` (every role but ``ai``). For each: LoCoMo evidence recall@k, how
   many results are chat turns, and the base model's answer F1 from that context.

Example:
    $ ragtune bench assistant_turns --json docs/results/bench-assistant-turns.json
"""

from __future__ import annotations

import sys
import time
import uuid
from typing import Any

from langchain_ragtune.bench._common import finish, now_iso
from langchain_ragtune.hardware import machine_info

__all__ = ["run_assistant_turns_bench"]

VARIANTS = {
    "conversation": {"metadata": {"source": {"$ne": "chat"}}},
    "with_assistant": {},
    "without_assistant": {"roles": ["human", "note"]},
}


def run_assistant_turns_bench(*, data: str | None = None, conversation: str = "conv-26",
                              questions: int = 60, categories: tuple[int, ...] = (1, 2, 4),
                              k: int = 10, max_tokens: int = 48, quiet: bool = False,
                              json_out: str | None = None) -> dict[str, Any]:
    """Run the benchmark (see the module); returns its JSON.

    Args:
        data: a LoCoMo-format file (default: the shared development set).
        conversation: the conversation's ``sample_id``.
        questions: questions asked (spread evenly over ``categories``).
        categories: LoCoMo categories asked.
        k: results retrieved per question.
        max_tokens: longest answer.
        quiet: no progress lines.
        json_out: also write the result here.
    """
    from langchain_ragtune.config import RouterConfig, ServeConfig, StoreConfig
    from langchain_ragtune.datasets.locomo import load_locomo
    from langchain_ragtune.eval.locomo import to_turns
    from langchain_ragtune.eval.metrics import evidence_recall_at_k, mean, score_answer
    from langchain_ragtune.router.memory import vllm_chat_model_factory
    from langchain_ragtune.router.nodes import create_memory_graph
    from langchain_ragtune.router.prompts import (
        RETRIEVAL_SYSTEM_PROMPT,
        format_context,
        user_prompt,
    )
    from langchain_ragtune.serving.launcher import serving_endpoints
    from langchain_ragtune.store import MemoryStore

    def say(msg: str) -> None:
        if not quiet:
            print(f"bench assistant_turns: {msg}", file=sys.stderr, flush=True)

    started = time.monotonic()
    conv = next((c for c in load_locomo(data) if c.sample_id == conversation), None)
    if conv is None:
        raise ValueError(f"conversation {conversation!r} is not in the LoCoMo file.")
    per = max(1, questions // len(categories))
    qs = [q for c in categories for q in [x for x in conv.qa if x.category == c][:per]]
    turns = to_turns(conv)
    known = {t.message_id for t in turns}
    store = MemoryStore(StoreConfig.from_env(schema=f"bench_asst_{uuid.uuid4().hex[:8]}"),
                        background_embedding=False)
    ns = (f"bench-{conversation}",)
    out: dict[str, Any] = {"bench": "assistant_turns", "date": now_iso(),
                           "machine": machine_info(), "conversation": conversation,
                           "questions": len(qs), "k": k, "categories": list(categories)}
    try:
        store.setup()
        store.add(ns, turns)
        store.flush()
        with serving_endpoints(ServeConfig.from_env(), port=0) as urls:
            serve = ServeConfig.from_env(vllm_urls=tuple(urls))
            graph = create_memory_graph(store, serve_config=serve, background_remember=False,
                                        config=RouterConfig.from_env(
                                            answer_max_tokens=max_tokens))
            say(f"asking {len(qs)} questions once through the memory graph")
            first = []
            for i, q in enumerate(qs):
                st = graph.invoke({"messages": [("user", q.question)]},
                                  {"configurable": {"namespace": list(ns),
                                                    "thread_id": f"chat-{i}"}})
                first.append(score_answer(st["messages"][-1].content, q.answer, q.category))
            store.flush()
            out["first_pass_f1"] = mean(first)
            out["chat_turns_stored"] = store.count(ns) - len(turns)
            reader = vllm_chat_model_factory(serve, max_tokens=max_tokens)(None)
            results: dict[str, dict[str, list[float]]] = {}
            for name, opts in VARIANTS.items():
                say(f"asking again, retrieving from: {name}")
                rec, f1, chat_share = [], [], []
                for q in qs:
                    hits = store.search(ns, q.question, k=k, **opts)
                    ids = [h.message_ids for h in hits]
                    r = evidence_recall_at_k(q.evidence, ids, k=k, known_ids=known)
                    if r.recall is not None:
                        rec.append(r.recall)
                    chat_share.append(sum((h.memory.metadata or {}).get("source") == "chat"
                                          for h in hits) / max(1, len(hits)))
                    context, _ = format_context(hits)
                    answer = reader.invoke([("system", RETRIEVAL_SYSTEM_PROMPT),
                                            ("human", user_prompt("retrieval", q.question,
                                                                  context))]).content
                    f1.append(score_answer(answer, q.answer, q.category))
                results[name] = {"recall": rec, "f1": f1, "chat_share": chat_share}
            out["variants"] = {name: {"recall_at_k": mean(v["recall"]), "f1": mean(v["f1"]),
                                      "chat_results_share": mean(v["chat_share"])}
                               for name, v in results.items()}
            out["by_category_f1"] = {
                name: {str(c): mean([f for f, q in zip(v["f1"], qs) if q.category == c])
                       for c in categories} for name, v in results.items()}
        say(f"done: {out['variants']}")
    finally:
        try:
            store.drop_schema()
        finally:
            store.close()
    return finish(out, started, json_out)
