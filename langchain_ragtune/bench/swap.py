"""``ragtune bench swap``: publish a new adapter version under load and count what went wrong.

:func:`run_swap_bench` measures the serving promise: while concurrent requests go to the
namespace's current adapter and to the base model, a new version is published (load under a
new name, canary, switch, drain, unload); it counts failed requests and wrong answers (each
answer is checked against the canary of the version that answered it) and reports the swap
time and tokens/s of base and adapter requests. Its adapters are the fact adapters of
:mod:`langchain_ragtune.testing.adapters`.

Example:
    >>> from langchain_ragtune.bench.swap import run_swap_bench   # doctest: +SKIP
    >>> run_swap_bench(requests=60)["failed"]                     # doctest: +SKIP
    0
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from langchain_ragtune.bench._common import now_iso, pct
from langchain_ragtune.hardware import machine_info
from langchain_ragtune.testing.adapters import FACT_VERSIONS, ensure_fact_adapter

__all__ = ["run_swap_bench"]

def _tokens_per_s(client: Any, model: str, question: str, *, rounds: int,
                  max_tokens: int) -> float:
    """Sequential completions of exactly ``max_tokens`` tokens; tokens / wall seconds."""
    tokens, seconds = 0, 0.0
    extra = {"ignore_eos": True, "min_tokens": max_tokens}  # fixed length: comparable rates
    client.chat(model, [{"role": "user", "content": question}], max_tokens=4)  # warm
    for _ in range(rounds):
        t0 = time.perf_counter()
        answer = client.chat(model, [{"role": "user", "content": question}],
                             max_tokens=max_tokens, extra=extra)
        seconds += time.perf_counter() - t0
        tokens += answer.completion_tokens
    return tokens / seconds if seconds else 0.0


def run_swap_bench(*, requests: int = 120, concurrency: int = 4, base_every: int = 4,
                   swaps: int = 3, max_tokens: int = 16, rate_rounds: int = 5,
                   rate_tokens: int = 32,
                   endpoint: str | None = None, schema: str = "ragtune_bench_swap",
                   cache_dir: str | Path | None = None, canary_scoring: bool = True,
                   publish_delay_s: float = 0.0, quiet: bool = False) -> dict[str, Any]:
    """Publish a new adapter version while concurrent requests run; count what went wrong.

    1. Prepare the base model and two fact adapters (v1: the dog is Biscuit, v2: Pepper;
       trained once and cached), start vLLM on a free port unless ``endpoint`` or
       ``RAGTUNE_VLLM_URLS`` names one, and publish v1 for a fresh namespace through the real
       registry (PostgreSQL, schema ``schema``).
    2. Measure tokens/s of the base model and of the adapter: ``rate_rounds`` sequential
       completions of exactly ``rate_tokens`` tokens each.
    3. Send ``requests`` requests from ``concurrency`` threads (every ``base_every``-th to the
       base model, the others through ``create_chat_model(namespace)``) and publish
       ``swaps`` new versions meanwhile, evenly spread (v2, v1, v2, ... each under a new
       name), each after the previous one drained. Every answer is checked: an adapter answer
       must carry the fact of the version that answered it (its ``model_name``), a base
       answer neither fact.

    ``swap_s`` is the median over the swaps (each one is in ``swaps``, with its phases).

    Args:
        requests: requests in the concurrent phase.
        concurrency: client threads.
        base_every: every n-th request goes to the base model.
        swaps: versions published during the concurrent phase.
        max_tokens: answer length in the concurrent phase.
        rate_rounds: completions per tokens/s measurement.
        rate_tokens: tokens per completion in the tokens/s measurement.
        endpoint: an existing vLLM endpoint (started with runtime LoRA updating).
        schema: PostgreSQL schema for the bench's registry rows (``RAGTUNE_PG_URI`` or the
            embedded server).
        cache_dir: where fact adapters are cached (default ``<home>/cache/bench-adapters``).
        canary_scoring: check each new version's canaries in one forward pass (the
            publisher's default); ``False`` generates their answers, to compare the two.
        publish_delay_s: publish each version this long (uniformly drawn from 0 to this,
            the same draws every run) after its share of requests completed. 0 publishes
            the moment an answer comes back, which is when that thread sends its next
            request, whose prefill then shares vLLM's steps with the load and the canaries:
            the swap's worst moment. A delay decouples the publish from the request stream,
            as a scheduled refresh is.
        quiet: no progress output.

    Returns:
        JSON-able dict with ``requests``, ``failed``, ``wrong_answers``, ``swap_s``,
        ``base_tokens_per_s``, ``adapter_tokens_per_s`` and details.
    """
    import concurrent.futures as cf
    import random
    import statistics
    import threading
    import uuid

    from langchain_ragtune.config import ModelConfig, ServeConfig, StoreConfig
    from langchain_ragtune.errors import InvalidInputError
    from langchain_ragtune.models import prepare_base_model
    from langchain_ragtune.serving.chat import create_chat_model
    from langchain_ragtune.serving.client import VLLMAdminClient
    from langchain_ragtune.serving.launcher import serving_endpoints
    from langchain_ragtune.serving.publisher import Publisher, answer_matches
    from langchain_ragtune.store import MemoryStore
    from langchain_ragtune.testing.fakes import HashEmbeddings
    from langchain_ragtune.tuning.registry import AdapterRegistry, make_adapter_name

    def say(msg: str) -> None:
        if not quiet:
            print(f"bench swap: {msg}", file=sys.stderr, flush=True)

    if not publish_delay_s >= 0:
        raise InvalidInputError(f"publish_delay_s={publish_delay_s!r} must be 0 or more seconds "
                                "(e.g. --set publish_delay_s=0.5).")
    t_start = time.perf_counter()
    model_config = ModelConfig.from_env()
    base_model = prepare_base_model(model_config, quiet=True)
    cache = Path(cache_dir) if cache_dir else model_config.home / "cache" / "bench-adapters"
    say("fact adapters (trained once, then cached)")
    adapters = {v: ensure_fact_adapter(base_model, cache, v) for v in ("v1", "v2")}
    config = ServeConfig.from_env(**({"vllm_urls": (endpoint,)} if endpoint else {}))
    dog_q = FACT_VERSIONS["v1"].facts[0].questions[0]
    dogs = {v: FACT_VERSIONS[v].facts[0].expected for v in ("v1", "v2")}

    store = MemoryStore(StoreConfig.from_env(schema=schema), embeddings=HashEmbeddings(384),
                        background_embedding=False)
    say("starting vLLM" if not config.vllm_urls else f"using {config.vllm_urls}")
    try:
        store.setup()
        registry = AdapterRegistry(store)
        ns = ("bench-swap", uuid.uuid4().hex[:8])
        with serving_endpoints(config, port=0) as urls:
            url = urls[0]
            publisher = Publisher(registry, endpoints=[url], config=config,
                                  base_model_path=base_model, canary_scoring=canary_scoring)
            # Publish order: v1 before the load, then v2, v1, v2, ... each a new version.
            facts_of = ["v1"] + [("v2", "v1")[k % 2] for k in range(swaps)]
            recs = []
            for v in facts_of:
                n = registry.next_version(ns)
                recs.append(registry.register(
                    ns, n, make_adapter_name(ns, n), str(adapters[v]), str(base_model),
                    watermark_seq=n, metrics={"canaries": FACT_VERSIONS[v].canaries}))
            first = publisher.publish(recs[0])  # before any load: the idle reference

            say("tokens/s of the base model and of the adapter")
            with VLLMAdminClient(url) as client:
                base_tps = _tokens_per_s(client, config.served_model_name, dog_q,
                                         rounds=rate_rounds, max_tokens=rate_tokens)
                adapter_tps = _tokens_per_s(client, recs[0].name, dog_q,
                                            rounds=rate_rounds, max_tokens=rate_tokens)

            say(f"{requests} requests from {concurrency} threads, publishing {swaps} "
                "versions meanwhile")
            server_config = ServeConfig.from_env(vllm_urls=(url,))
            adapter_llm = create_chat_model(ns, registry=registry, config=server_config,
                                            refresh_s=0.5, max_tokens=max_tokens)
            base_llm = create_chat_model(config=server_config, max_tokens=max_tokens)
            version_of = {rec.name: v for rec, v in zip(recs, facts_of)}
            counter = iter(range(requests))
            lock = threading.Condition()
            records: list[dict[str, Any]] = []

            def worker() -> None:
                while True:
                    with lock:
                        i = next(counter, None)
                    if i is None:
                        return
                    kind = "base" if i % base_every == 0 else "adapter"
                    llm = base_llm if kind == "base" else adapter_llm
                    t0 = time.perf_counter()
                    item: dict[str, Any] = {"kind": kind}
                    try:
                        msg = llm.invoke(dog_q)
                        item["model"] = msg.response_metadata.get("model_name")
                        item["text"] = msg.content
                        if kind == "base":
                            item["ok"] = not any(answer_matches(msg.content, d)
                                                 for d in dogs.values())
                        else:
                            v = version_of.get(item["model"] or "")
                            item["ok"] = v is not None and answer_matches(msg.content, dogs[v])
                    except Exception as exc:  # noqa: BLE001 - counted as failed
                        item["error"] = f"{type(exc).__name__}: {exc}"
                    item["latency_s"] = time.perf_counter() - t0
                    with lock:
                        records.append(item)
                        lock.notify_all()

            results = []
            delays = random.Random(0)
            with cf.ThreadPoolExecutor(concurrency) as pool:
                futures = [pool.submit(worker) for _ in range(concurrency)]
                for k, rec in enumerate(recs[1:], start=1):
                    with lock:
                        lock.wait_for(lambda k=k: len(records) >= requests * k // (swaps + 1)
                                      or all(f.done() for f in futures), timeout=600)
                    if publish_delay_s > 0:
                        time.sleep(delays.uniform(0.0, publish_delay_s))
                    results.append(publisher.publish(rec))
                for f in futures:
                    f.result()
            with VLLMAdminClient(url) as client:
                loaded_after = sorted(client.adapters())
    finally:
        store.close()

    failed = [r for r in records if "error" in r]
    wrong = [r for r in records if "error" not in r and not r["ok"]]
    lat = {k: [r["latency_s"] for r in records if r["kind"] == k and "error" not in r]
           for k in ("base", "adapter")}
    served = {f"{rec.version}:{v}": sum(1 for r in records if r.get("model") == rec.name)
              for rec, v in zip(recs, facts_of)}
    phases = ("swap_s", "load_s", "canary_s", "switch_s", "drain_s")
    each = [{"to": f"{rec.version}:{v}", **{k: round(getattr(res, k), 3) for k in phases},
             "canary_methods": sorted(c.method for c in res.canaries)}
            for res, rec, v in zip(results, recs[1:], facts_of[1:])]
    swap_times = [e["swap_s"] for e in each]
    return {
        "requests": len(records),
        "failed": len(failed),
        "wrong_answers": len(wrong),
        "swap_s": round(statistics.median(swap_times), 3) if swap_times else None,
        "base_tokens_per_s": round(base_tps, 1),
        "adapter_tokens_per_s": round(adapter_tps, 1),
        "swap": {"median": {k: round(statistics.median(e[k] for e in each), 3)
                            for k in phases} if each else {},
                 "max_swap_s": max(swap_times, default=None),
                 "canaries": sum(len(r.canaries) for r in results),
                 "old_unloaded": all(r.unloaded_previous for r in results)
                 and not any(rec.name in loaded_after for rec in recs[:-1])},
        "swaps": each,
        "idle_first_publish": {k: round(getattr(first, k), 3)
                               for k in ("swap_s", "load_s", "canary_s", "switch_s")},
        "answers_by_version": served,
        "latency_s": {k: {"p50": pct(v, 50), "p95": pct(v, 95)} for k, v in lat.items()},
        "examples": {"failed": failed[:3], "wrong": wrong[:3]},
        "settings": {"concurrency": concurrency, "base_every": base_every,
                     "swaps": swaps, "max_tokens": max_tokens, "rate_tokens": rate_tokens,
                     "rate_rounds": rate_rounds, "max_loras": config.max_loras,
                     "canary_scoring": canary_scoring, "publish_delay_s": publish_delay_s},
        "targets": {"failed": 0, "wrong_answers": 0, "swap_s": 0.5},
        "machine": machine_info(),
        "date": now_iso(),
        "seconds": round(time.perf_counter() - t_start, 1),
    }
