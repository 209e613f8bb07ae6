"""``ragtune bench router``: what the router costs, and what each route costs.

Three measurements of the router:

1. **Decision overhead** (pure, no I/O): reading the query's cues, computing the signals
   from ``k`` search hits and :func:`~.decision.decide`, per query, on fresh query texts
   (the query-cue cache is bypassed). Target: p50 <= 1 ms.
2. **End-to-end latency per route at equal answer length**: the same questions answered
   through each route in turn, on the real served model (vLLM on this machine), every
   answer forced to exactly ``answer_tokens`` tokens (vLLM's ``min_tokens`` and
   ``ignore_eos``), so the routes differ only in their prompts and in adapter vs base
   model. Reported with ratios that separate the two effects: ``retrieval / parametric``
   (the issue's claim), ``hybrid / parametric`` (context cost on the adapter) and
   ``retrieval / none`` (context cost on the base model).
3. **Memory tokens added per query, per route**: the retrieved context measured with the
   base model's tokenizer, and the prompt tokens vLLM reports.

The end-to-end part needs vLLM and the train extra (it tunes the serving test's small fact
adapter once, cached); ``e2e=False`` runs only the pure part.

Example:
    >>> r = run_router_bench(queries=200, e2e=False, quiet=True)
    >>> r["decision_overhead_ms"]["p50"] < 5
    True
"""

from __future__ import annotations

import random
import statistics
import time
from typing import Any

from langchain_ragtune.bench._common import now_iso
from langchain_ragtune.config import RouterConfig
from langchain_ragtune.hardware import machine_info
from langchain_ragtune.router.decision import NamespaceState, Signals, decide
from langchain_ragtune.router.query import analyze_query

__all__ = ["ROUTE_ORDER", "measure_decision_overhead", "percentiles", "run_router_bench"]

ROUTE_ORDER = ("none", "parametric", "retrieval", "hybrid")

_EXTRA_QUERIES = (
    "Overall, what kind of person is {a}?", "How has {b} changed over the months?",
    "Summarize what {a} cares about.", "What are {b}'s habits?", "hi there!", "thanks, bye",
    "What is the capital of France?", "What did {a} tell me last week about the trip?",
    "Would {b} likely enjoy a cooking class?", "When did {a} move, and where to?",
)


def percentiles(values: list[float]) -> dict[str, float]:
    """p50, p95, p99 and mean of ``values`` (rounded to microseconds for ms values).

    Example:
        >>> percentiles([1.0, 2.0, 3.0])["p50"]
        2.0
    """
    if not values:
        return {"p50": None, "p95": None, "p99": None, "mean": None, "n": 0}
    xs = sorted(values)

    def q(p: float) -> float:
        i = min(len(xs) - 1, max(0, round(p * (len(xs) - 1))))
        return round(xs[i], 4)

    return {"p50": q(0.5), "p95": q(0.95), "p99": q(0.99),
            "mean": round(statistics.fmean(xs), 4), "n": len(xs)}


def _sample_queries_and_hits(k: int) -> tuple[list[str], list[Any]]:
    from langchain_ragtune.datasets.locomo import load_sample
    from langchain_ragtune.store.types import Memory, SearchResult

    conv = load_sample()[0]
    queries = [q.question for q in conv.qa]
    queries += [t.format(a=conv.speaker_a, b=conv.speaker_b) for t in _EXTRA_QUERIES]
    memories = [
        Memory(id=f"00000000-0000-0000-0000-{i:012d}", seq=i + 1, namespace=("bench",),
               text=t.memory_text(), speaker=t.speaker, role="human", message_id=t.dia_id,
               thread_id=f"s{t.session}", occurred_at=t.occurred_at, created_at=t.occurred_at,
               metadata={})
        for i, t in enumerate(conv.turns())
    ]
    rng = random.Random(0)
    hits = []
    for _ in range(64):
        picked = rng.sample(memories, k)
        hits.append([SearchResult(memory=m, score=1 / (60 + r), vector_score=rng.uniform(0.1, 0.8),
                                  keyword_score=rng.choice([None, 0.1, 0.3]))
                     for r, m in enumerate(picked, 1)])
    return queries, hits


def measure_decision_overhead(queries: int = 2000, k: int = 6, config: RouterConfig | None = None
                              ) -> dict[str, Any]:
    """Time query analysis + signals from ``k`` hits + :func:`decide`, per call (pure).

    Each call gets a query text the cue cache has not seen (a numbered variant), so the
    cost measured is the cold one a new user message pays.
    """
    config = config or RouterConfig()
    texts, hit_sets = _sample_queries_and_hits(k)
    states = [NamespaceState(namespace=("bench",)),
              NamespaceState(namespace=("bench",), adapter="bench-v1-000000", watermark_seq=30),
              NamespaceState(namespace=("bench",), adapter="bench-v1-000000", watermark_seq=70)]
    raw = analyze_query.__wrapped__  # bypass the lru_cache: measure a fresh query
    times: list[float] = []
    routes: dict[str, int] = {}
    for i in range(queries):
        q = f"{texts[i % len(texts)]} ({i})" if i >= len(texts) else texts[i]
        hits = hit_sets[i % len(hit_sets)]
        state = states[i % len(states)]
        t0 = time.perf_counter()
        feats = raw(q)
        signals = Signals.from_results(feats, hits, config=config)
        d = decide(feats, state, signals, config)
        times.append((time.perf_counter() - t0) * 1000)
        routes[d.route] = routes.get(d.route, 0) + 1
    return {"decision_overhead_ms": percentiles(times), "decision_routes": routes,
            "decision_queries": queries, "k": k}


# -- end to end -------------------------------------------------------------------------------

def _forced(router: Any, result: Any, route: str, adapter: str) -> Any:
    """``result`` answered through ``route`` on vLLM (whatever the router chose)."""
    out = router.force(result, route, adapter=adapter, reason="forced by the benchmark")
    out.backend = "vllm"
    return out


def run_e2e(*, questions: int = 8, answer_tokens: int = 32, k: int = 6, rounds: int = 2,
            quiet: bool = False) -> dict[str, Any]:
    """End-to-end latency and memory tokens per route on vLLM (see the module docstring)."""
    import contextlib

    from tqdm import tqdm

    from langchain_ragtune.config import ModelConfig, ServeConfig, StoreConfig
    from langchain_ragtune.eval.locomo import load_sample, to_turns
    from langchain_ragtune.models import prepare_base_model
    from langchain_ragtune.router.memory import MemoryRouter, vllm_chat_model_factory
    from langchain_ragtune.router.prompts import context_block
    from langchain_ragtune.serving.launcher import start_server
    from langchain_ragtune.serving.publisher import Publisher
    from langchain_ragtune.store import MemoryStore
    from langchain_ragtune.testing.adapters import ensure_fact_adapter
    from langchain_ragtune.tuning.registry import AdapterRegistry, make_adapter_name

    out: dict[str, Any] = {}
    base = prepare_base_model(ModelConfig.from_env(), quiet=True)
    cache = ModelConfig.from_env().home / "cache" / "bench-adapters"
    t0 = time.perf_counter()
    adapter_path = ensure_fact_adapter(base, cache, "v1")
    out["adapter_prepare_s"] = round(time.perf_counter() - t0, 1)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    conv = load_sample()[0]
    ns = ("bench-router", conv.sample_id)
    schema = f"ragtune_bench_router_{int(time.time())}"
    serve = ServeConfig.from_env()
    with contextlib.ExitStack() as stack:
        store = stack.enter_context(MemoryStore(StoreConfig.from_env(schema=schema),
                                                background_embedding=False))
        stack.callback(store.drop_schema)
        store.setup()
        store.add(ns, to_turns(conv))
        store.flush()
        registry = AdapterRegistry(store)
        rec = registry.register(ns, 1, make_adapter_name(ns, 1), str(adapter_path), str(base),
                                watermark_seq=store.max_seq(ns))
        if serve.vllm_urls:
            url = serve.vllm_urls[0].rstrip("/")
        else:
            t0 = time.perf_counter()
            server = stack.enter_context(start_server(serve, model_path=base, port=0))
            out["vllm_start_s"] = round(time.perf_counter() - t0, 1)
            url = server.url
        serve = ServeConfig.from_env(vllm_urls=(url,))
        # vLLM holds a core here: the query embedder on two torch threads would fight it
        # (measured: a search took ~480 ms instead of ~13 ms); one thread is as fast alone.
        import sys

        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(1)
            out["torch_threads"] = 1
        Publisher(registry, endpoints=[url], config=serve).publish(rec)
        stack.callback(lambda: _unload(url, rec.name))
        factory = vllm_chat_model_factory(
            serve, max_tokens=answer_tokens,
            extra_body={"min_tokens": answer_tokens, "ignore_eos": True})
        router = MemoryRouter(store, config=RouterConfig(k=k), serve_config=serve,
                              chat_model_factory=factory)
        qs = [q.question for q in conv.qa if q.category in (1, 2, 4)][:questions]
        lat: dict[str, list[float]] = {r: [] for r in ROUTE_ORDER}
        gen: dict[str, list[float]] = {r: [] for r in ROUTE_ORDER}
        prompt_tokens: dict[str, list[int]] = {r: [] for r in ROUTE_ORDER}
        answer_lens: dict[str, list[int]] = {r: [] for r in ROUTE_ORDER}
        mem_tokens: dict[str, list[int]] = {r: [] for r in ROUTE_ORDER}
        route_ms: list[float] = []
        overhead_ms: list[float] = []
        chosen: dict[str, int] = {}
        for route in ROUTE_ORDER:  # warm each model and prompt shape once
            res = _forced(router, router.route(qs[0], ns), route, rec.name)
            router.generate(res)
        jobs = [(q, r) for _ in range(rounds) for q in qs for r in ROUTE_ORDER]
        rng = random.Random(0)
        rng.shuffle(jobs)  # no route always runs first (caches, thermal, neighbours)
        for q, route in tqdm(jobs, desc="router e2e", disable=quiet, unit="answer"):
            t0 = time.perf_counter()
            result = router.route(q, ns)
            t_route = (time.perf_counter() - t0) * 1000
            route_ms.append(t_route)
            tm = result.timings_ms
            overhead_ms.append(tm.get("state", 0.0) + tm.get("decide", 0.0))
            if route == ROUTE_ORDER[0]:
                chosen[result.route] = chosen.get(result.route, 0) + 1
            forced = _forced(router, result, route, rec.name)
            t1 = time.perf_counter()
            answer, _ = router.generate(forced)
            t_gen = (time.perf_counter() - t1) * 1000
            lat[route].append(t_route + t_gen)
            gen[route].append(t_gen)
            usage = getattr(answer, "usage_metadata", None) or {}
            prompt_tokens[route].append(int(usage.get("input_tokens") or 0))
            answer_lens[route].append(int(usage.get("output_tokens") or 0))
            mem_tokens[route].append(len(tokenizer(context_block(forced.context))["input_ids"])
                                     if forced.context else 0)
    per_route = {}
    for r in ROUTE_ORDER:
        per_route[r] = {
            "latency_ms": percentiles(lat[r]), "generate_ms": percentiles(gen[r]),
            "prompt_tokens_mean": round(statistics.fmean(prompt_tokens[r]), 1),
            "memory_tokens_mean": round(statistics.fmean(mem_tokens[r]), 1),
            "answer_tokens_mean": round(statistics.fmean(answer_lens[r]), 1),
        }

    def ratio(a: str, b: str) -> float:
        return round(per_route[a]["latency_ms"]["p50"] / per_route[b]["latency_ms"]["p50"], 3)

    def gen_ratio(a: str, b: str) -> float:
        return round(per_route[a]["generate_ms"]["p50"] / per_route[b]["generate_ms"]["p50"], 3)

    out.update({
        "routes": per_route,
        "generate_ratios_p50": {"retrieval_over_parametric": gen_ratio("retrieval", "parametric"),
                                "hybrid_over_parametric": gen_ratio("hybrid", "parametric"),
                                "retrieval_over_none": gen_ratio("retrieval", "none"),
                                "parametric_over_none": gen_ratio("parametric", "none")},
        "ratios_p50": {"retrieval_over_parametric": ratio("retrieval", "parametric"),
                       "hybrid_over_parametric": ratio("hybrid", "parametric"),
                       "retrieval_over_none": ratio("retrieval", "none"),
                       "parametric_over_none": ratio("parametric", "none")},
        "route_call_ms": percentiles(route_ms),
        "route_overhead_ms": percentiles(overhead_ms),
        "router_choices": chosen, "questions": len(qs), "rounds": rounds,
        "answer_tokens": answer_tokens, "adapter": rec.name, "endpoint": url,
    })
    return out


def _unload(url: str, name: str) -> None:
    from langchain_ragtune.serving.client import VLLMAdminClient

    try:
        with VLLMAdminClient(url) as client:
            client.unload_adapter(name)
    except Exception:  # the server may already be gone
        pass


def run_router_bench(*, queries: int = 2000, k: int = 6, e2e: bool = True, questions: int = 8,
                     answer_tokens: int = 32, rounds: int = 2, quiet: bool = False
                     ) -> dict[str, Any]:
    """The router benchmark; returns its JSON (see the module docstring).

    Args:
        queries: decisions timed for the overhead measurement.
        k: search hits per query.
        e2e: also measure end-to-end latency per route on vLLM (minutes; needs vLLM).
        questions: questions of the shipped sample conversation answered per route.
        answer_tokens: the exact length of every answer in the end-to-end part.
        rounds: times each question is answered per route.
        quiet: no progress bars.
    """
    started = time.perf_counter()
    out: dict[str, Any] = {
        "date": now_iso(),
        "machine": machine_info(),
        "target_p50_ms": 1.0,
    }
    out.update(measure_decision_overhead(queries, k))
    p50 = out["decision_overhead_ms"]["p50"]
    out["target_met"] = p50 is not None and p50 <= 1.0
    if e2e:
        out["e2e"] = run_e2e(questions=questions, answer_tokens=answer_tokens, k=k,
                             rounds=rounds, quiet=quiet)
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out
