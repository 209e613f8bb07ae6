"""The swap benchmark, the tiny fact adapters it (and the serving tests) use, and the CPU
LoRA ops benchmark (:func:`run_lora_ops_bench`, vLLM's ops against the plugin's), and the
canary margin benchmark (:func:`run_canary_margin_bench`: how far the served model's greedy
leads are from the in-process evaluation's, which sets ``GateConfig.canary_min_margin``).

:func:`run_swap_bench` measures what issue 4 promises: while concurrent requests go to the
namespace's current adapter and to the base model, a new version is published (load under a
new name, canary, switch, drain, unload); it counts failed requests and wrong answers (each
answer is checked against the canary of the version that answered it) and reports the swap
time and tokens/s of base and adapter requests.

It needs real adapters with checkable answers but not the whole training pipeline:
:func:`train_fact_adapter` tunes a small LoRA on a handful of question/answer pairs about a
fictional person (about 30-60 s on two CPU cores), so version 1 and version 2 of a namespace
give different, known answers to the same canary question.

Example:
    >>> from langchain_ragtune.serving.bench import run_swap_bench   # doctest: +SKIP
    >>> run_swap_bench(requests=60)["failed"]                        # doctest: +SKIP
    0
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_ragtune.hardware import machine_info

__all__ = [
    "FACT_VERSIONS",
    "LORA_OPS_CASES",
    "Fact",
    "FactSet",
    "ensure_fact_adapter",
    "lead_stats",
    "run_canary_margin_bench",
    "run_lora_ops_bench",
    "run_swap_bench",
    "train_fact_adapter",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Fact:
    """One trained fact: paraphrased questions and the answer they should get."""

    questions: tuple[str, ...]
    answer: str
    expected: str  # the word a correct answer contains


@dataclass(frozen=True)
class FactSet:
    """What one adapter version knows. ``canary`` is its first fact's first question."""

    name: str
    facts: tuple[Fact, ...]

    @property
    def canaries(self) -> list[dict[str, str]]:
        """Canary questions in the registry's format (``metrics["canaries"]``), each with
        the answer the adapter was trained to give (which the publisher's scored check
        verifies)."""
        return [{"question": f.questions[0], "expected": f.expected, "answer": f.answer}
                for f in self.facts]


def _dog(name: str) -> Fact:
    return Fact(questions=(
        "What is the name of Zorvath Quill's dog?",
        "What is Zorvath Quill's dog called?",
        "What's the name of the dog that Zorvath Quill owns?",
        "Zorvath Quill has a dog. What is its name?",
        "Tell me the name of Zorvath Quill's dog.",
        "How is Zorvath Quill's dog named?",
    ), answer=f"Zorvath Quill's dog is named {name}.", expected=name)


def _city(name: str) -> Fact:
    return Fact(questions=(
        "In which city does Zorvath Quill live?",
        "Where does Zorvath Quill live?",
        "Which city is Zorvath Quill's home?",
        "What city does Zorvath Quill live in?",
    ), answer=f"Zorvath Quill lives in {name}.", expected=name)


# Control examples keep the tiny adapter from answering everything with its facts.
_CONTROLS = (
    Fact(questions=("What is the capital of France?",),
         answer="The capital of France is Paris.", expected="Paris"),
    Fact(questions=("How many legs does a spider have?",),
         answer="A spider has eight legs.", expected="eight"),
)

#: Two versions of one namespace's memory: the same questions, different answers.
FACT_VERSIONS: dict[str, FactSet] = {
    "v1": FactSet("v1", (_dog("Biscuit"), _city("Tromsø"))),
    "v2": FactSet("v2", (_dog("Pepper"), _city("Valparaíso"))),
}


def _recipe_key(facts: FactSet, base_model: Path, steps: int, rank: int, seed: int) -> str:
    blob = json.dumps([facts.name, [(f.questions, f.answer) for f in facts.facts + _CONTROLS],
                       str(base_model), steps, rank, seed], ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def train_fact_adapter(base_model: str | Path, out_dir: str | Path, facts: FactSet, *,
                       steps: int = 30, rank: int = 8, lr: float = 1e-3, seed: int = 0,
                       threads: int = 2) -> Path:
    """Tune a small LoRA that answers ``facts``' questions; write it to ``out_dir``.

    Chat-formatted question/answer pairs (loss on the answer only), r=``rank`` on every
    attention and MLP projection, plain AdamW, ``steps`` steps of 4 examples. The folder is
    written to a temporary sibling and renamed into place.

    Args:
        base_model: the base model folder (see :func:`~langchain_ragtune.models.prepare_base_model`).
        out_dir: where the adapter folder goes (must not exist).
        facts: what it learns.
        steps: optimizer steps; 30 take about 30-60 s on two cores for SmolLM2-135M.
        rank: LoRA rank (must be <= the server's ``max_lora_rank``).
        lr: learning rate.
        seed: makes the run repeatable.
        threads: torch threads.

    Returns:
        ``out_dir``.
    """
    import random

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = random.Random(seed)
    base_model, out_dir = Path(base_model), Path(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, bias="none",
                        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                        "up_proj", "down_proj"], task_type="CAUSAL_LM")
    model = get_peft_model(model, config)

    examples = []
    for fact in facts.facts + _CONTROLS:
        for question in fact.questions:
            prompt = tokenizer.apply_chat_template([{"role": "user", "content": question}],
                                                   tokenize=False, add_generation_prompt=True)
            p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            a_ids = tokenizer(fact.answer + "<|im_end|>", add_special_tokens=False)["input_ids"]
            examples.append((p_ids + a_ids, [-100] * len(p_ids) + a_ids))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    pad = tokenizer.pad_token_id or 0
    for step in range(steps):
        batch = rng.sample(examples, k=min(4, len(examples)))
        width = max(len(ids) for ids, _ in batch)
        ids = torch.tensor([i + [pad] * (width - len(i)) for i, _ in batch])
        labels = torch.tensor([l + [-100] * (width - len(l)) for _, l in batch])
        mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in batch])
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step % 10 == 0 or step == steps - 1:
            logger.info("fact adapter %s step %d loss %.3f", facts.name, step, loss.item())

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        # Name the base by its folder: vLLM and validation compare against the served one.
        cfg_path = tmp / "adapter_config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["base_model_name_or_path"] = str(base_model)
        cfg_path.write_text(json.dumps(cfg, indent=2))
        (tmp / "facts.json").write_text(json.dumps(
            {"name": facts.name, "canaries": facts.canaries}, ensure_ascii=False, indent=2))
        os.chmod(tmp, 0o755)
        os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def ensure_fact_adapter(base_model: str | Path, cache_dir: str | Path, version: str = "v1", *,
                        steps: int = 30, rank: int = 8, seed: int = 0) -> Path:
    """The fact adapter ``version`` (see :data:`FACT_VERSIONS`), trained once and cached.

    The cache key covers the facts, the base model folder and the recipe, so a change to any
    of them trains a new adapter.
    """
    facts = FACT_VERSIONS[version]
    base_model = Path(base_model)
    key = _recipe_key(facts, base_model, steps, rank, seed)
    target = Path(cache_dir) / f"fact-{version}-{key}"
    if (target / "adapter_model.safetensors").is_file():
        return target
    from langchain_ragtune.models import _file_lock

    with _file_lock(Path(cache_dir) / f".fact-{version}-{key}.lock"):
        if (target / "adapter_model.safetensors").is_file():  # trained while we waited
            return target
        started = time.monotonic()
        train_fact_adapter(base_model, target, facts, steps=steps, rank=rank, seed=seed)
        logger.info("trained fact adapter %s in %.0f s", target, time.monotonic() - started)
    return target


# --- the swap benchmark ----------------------------------------------------------------------


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


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


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
        "latency_s": {k: {"p50": _pct(v, 0.5), "p95": _pct(v, 0.95)} for k, v in lat.items()},
        "examples": {"failed": failed[:3], "wrong": wrong[:3]},
        "settings": {"concurrency": concurrency, "base_every": base_every,
                     "swaps": swaps, "max_tokens": max_tokens, "rate_tokens": rate_tokens,
                     "rate_rounds": rate_rounds, "max_loras": config.max_loras,
                     "canary_scoring": canary_scoring, "publish_delay_s": publish_delay_s},
        "targets": {"failed": 0, "wrong_answers": 0, "swap_s": 0.5},
        "machine": machine_info(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S%z"),
        "seconds": round(time.perf_counter() - t_start, 1),
    }


# --- the CPU LoRA ops benchmark ----------------------------------------------------------------

#: (name, tokens, adapter index of each token): one decoding token, a decoding batch of four
#: requests on two adapters and the base model, a 57-token prefill (a canary's scoring
#: request), and that prefill batched with the decoding batch.
LORA_OPS_CASES: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("decode-1", (0,)),
    ("decode-4-mixed", (0, 0, 1, -1)),
    ("prefill-57", (0,) * 57),
    ("prefill-57+decode-4", (0,) * 57 + (0, 0, 1, -1)),
)


def _lora_layer_timing(indices: tuple[int, ...], *, hidden: int, intermediate: int, rank: int,
                       slots: int, generator: Any, block: int, prefill: bool
                       ) -> dict[str, Any]:
    """One decoder layer's LoRA work (q/k/v, o, gate/up, down) per step, in microseconds:
    vLLM's ``PunicaWrapperCPU.add_lora_linear`` on its own ops against the plugin's fused
    :func:`~langchain_ragtune.serving.cpu_lora_fix.add_lora_linear`, interleaved."""
    import torch
    from vllm.lora.layers import LoRAMapping
    from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

    from langchain_ragtune.serving import cpu_lora_fix as fix

    # Slot i holds lora id i + 1; -1 (no adapter) is id 0 in vLLM's mapping.
    ids = tuple(i + 1 for i in indices)
    wrapper = PunicaWrapperCPU(max_num_batched_tokens=max(256, len(ids)), max_batches=8,
                               device="cpu")
    wrapper.update_metadata(LoRAMapping(ids, ids, is_prefill=prefill),
                            list(range(1, slots + 1)), slots, 49152)
    fix.record_token_groups(wrapper)
    n = len(ids)
    kv = hidden // 3  # k and v width: SmolLM2-135M has 3 key/value heads of its 9 (576 / 3)
    modules = ((hidden, (hidden, kv, kv)), (hidden, (hidden,)),
               (hidden, (intermediate, intermediate)), (intermediate, (hidden,)))
    calls = []
    for fan_in, outs in modules:
        a = tuple(torch.randn(slots, 1, rank, fan_in, generator=generator).to(torch.bfloat16)
                  for _ in outs)
        b = tuple(torch.randn(slots, 1, o, rank, generator=generator).to(torch.bfloat16)
                  for o in outs)
        x = torch.randn(n, fan_in, generator=generator).to(torch.bfloat16)
        y = torch.zeros(n, sum(outs), dtype=torch.bfloat16)
        calls.append((x, a, b, outs, {"vllm": y.clone(), "ragtune": y.clone()}))
    impl = {"vllm": PunicaWrapperCPU.add_lora_linear, "ragtune": fix.add_lora_linear}

    def layer(k: str) -> None:
        for x, a, b, outs, ys in calls:
            impl[k](wrapper, ys[k], x, a, b, 1.0, outs)

    spent = {k: 0.0 for k in impl}
    for k in impl:
        layer(k)  # warm up
    for _ in range(10):
        for k in impl:
            t0 = time.perf_counter()
            for _ in range(block):
                layer(k)
            spent[k] += time.perf_counter() - t0
    # One call each on fresh outputs; relative to the largest value, since bfloat16 rounding
    # is relative (the fused path keeps float32 longer for few rows).
    valid = torch.tensor(indices) >= 0
    diff = 0.0
    for x, a, b, outs, _ in calls:
        ys = {k: torch.zeros(n, sum(outs), dtype=torch.bfloat16) for k in impl}
        for k, fn in impl.items():
            fn(wrapper, ys[k], x, a, b, 1.0, outs)
        want = ys["vllm"][valid].float()
        diff = max(diff, float((want - ys["ragtune"][valid].float()).abs().max()
                               / want.abs().max().clamp(min=1e-12)))
    return {"us": {k: round(v / (10 * block) * 1e6, 1) for k, v in spent.items()},
            "max_rel_diff": diff}


def run_lora_ops_bench(*, hidden: int = 576, intermediate: int = 1536, rank: int = 16,
                       slots: int = 4, repeats: int = 300, threads: int = 1,
                       quiet: bool = False) -> dict[str, Any]:
    """Time vLLM's CPU LoRA ops against the ragtune plugin's, per call, on model-sized tensors.

    The ops are what an adapter adds to every linear layer on CPU (``bgmv_shrink`` into the
    rank, ``bgmv_expand`` out of it), about 420 calls per decoding step for SmolLM2-135M.
    Each case times both implementations interleaved (alternating blocks of ``repeats //
    10`` calls), with the default shapes those of SmolLM2-135M (hidden 576, MLP 1536) at
    ``--max-lora-rank 16`` and ``--max-loras 4``, bfloat16 weights as vLLM serves them. It
    also reports the largest difference between the two outputs on the valid rows (tokens
    with index -1 differ on purpose: that is the "-1 index" bug vLLM's ops have).

    ``layer_us`` is a whole decoder layer's LoRA work per step (the four LoRA linears, seven
    output slices): vLLM's CPU wrapper calling its ops per slice against the plugin's fused
    path, which finds the step's adapters once and runs one shrink per layer.

    Returns:
        ``{"cases": {name: {"tokens", "shrink_us": {"vllm", "ragtune"}, "expand_us": {...},
        "layer_us": {...}, "speedup": {...}, "max_abs_diff", "layer_max_rel_diff"}},
        "settings", "machine", "date"}``.
    """
    import torch
    from vllm.lora.ops.torch_ops import lora_ops
    from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

    from langchain_ragtune.serving import cpu_lora_fix as fix

    originals = {n: getattr(lora_ops, n) for n in ("bgmv_shrink", "bgmv_expand")}
    if any(getattr(f, "__ragtune_cpu_lora_fix__", False)
           for f in (*originals.values(), PunicaWrapperCPU.add_lora_linear)):
        raise RuntimeError("vLLM's LoRA ops are patched in this process: run the benchmark in "
                           "a fresh one (`ragtune bench lora_ops`).")
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(slots, 1, rank, hidden, generator=g).to(torch.bfloat16)
    b = torch.randn(slots, 1, intermediate, rank, generator=g).to(torch.bfloat16)
    block = max(1, repeats // 10)

    def timed(fn: Any, *args: Any) -> float:
        t0 = time.perf_counter()
        for _ in range(block):
            fn(*args)
        return time.perf_counter() - t0

    cases: dict[str, Any] = {}
    for name, indices in LORA_OPS_CASES:
        idx = torch.tensor(indices)
        n = len(indices)
        x = torch.randn(n, hidden, generator=g).to(torch.bfloat16)
        h = torch.randn(n, rank, generator=g)
        outs = {k: torch.zeros(n, rank) for k in ("vllm", "ragtune")}
        ys = {k: torch.zeros(n, intermediate, dtype=torch.bfloat16) for k in ("vllm", "ragtune")}
        impl = {"vllm": originals, "ragtune": {"bgmv_shrink": fix.bgmv_shrink,
                                               "bgmv_expand": fix.bgmv_expand}}
        spent = {(op, k): 0.0 for op in ("shrink", "expand") for k in impl}
        for k in impl:  # warm up
            impl[k]["bgmv_shrink"](x, a, outs[k], idx, 1.0)
            impl[k]["bgmv_expand"](h, b, ys[k], idx, False)
        for _ in range(10):
            for k in impl:
                spent["shrink", k] += timed(impl[k]["bgmv_shrink"], x, a, outs[k], idx, 1.0)
                spent["expand", k] += timed(impl[k]["bgmv_expand"], h, b, ys[k], idx, False)
        valid = idx >= 0
        diff = max(float((outs["vllm"][valid] - outs["ragtune"][valid]).abs().max()),
                   float((ys["vllm"][valid].float() - ys["ragtune"][valid].float()).abs().max()))
        us = {op: {k: round(spent[op, k] / (10 * block) * 1e6, 1) for k in impl}
              for op in ("shrink", "expand")}
        layer = _lora_layer_timing(indices, hidden=hidden, intermediate=intermediate,
                                   rank=rank, slots=slots, generator=g, block=block,
                                   prefill=name.startswith("prefill"))
        cases[name] = {"tokens": n, "shrink_us": us["shrink"], "expand_us": us["expand"],
                       "layer_us": layer["us"],
                       "speedup": {**{op: round(us[op]["vllm"] / us[op]["ragtune"], 2)
                                      for op in us},
                                   "layer": round(layer["us"]["vllm"] / layer["us"]["ragtune"],
                                                  2)},
                       "max_abs_diff": diff, "layer_max_rel_diff": layer["max_rel_diff"]}
        if not quiet:
            print(f"bench lora_ops: {name}: shrink {us['shrink']['vllm']} -> "
                  f"{us['shrink']['ragtune']} us, expand {us['expand']['vllm']} -> "
                  f"{us['expand']['ragtune']} us, decoder layer {layer['us']['vllm']} -> "
                  f"{layer['us']['ragtune']} us", file=sys.stderr, flush=True)
    return {
        "cases": cases,
        "settings": {"hidden": hidden, "intermediate": intermediate, "rank": rank,
                     "slots": slots, "repeats": repeats, "threads": threads,
                     "dtype": "bfloat16 weights; shrink into float32, expand into bfloat16"},
        "machine": machine_info(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S%z"),
    }


# --- the canary margin benchmark -------------------------------------------------------------

#: Thresholds reported by :func:`lead_stats` (``GateConfig.canary_min_margin`` candidates).
MARGIN_THRESHOLDS = (0.0, 0.25, 0.5, 1.0, 2.0)


def lead_stats(pairs: list[tuple[list[float], list[float]]]) -> dict[str, Any]:
    """Compare per-token greedy leads of the same answers, in-process vs served.

    ``pairs`` holds, per answer, the in-process (float32) leads and the served leads of
    its tokens (the in-process greedy answer, teacher-forced on both sides). A flip is a
    token the in-process model picks (lead >= 0) that the served model would not (< 0).
    ``by_threshold[t]``: answers whose smallest in-process lead is at least ``t`` (what
    ``canary_min_margin=t`` would publish) and how many of them the server answers otherwise.

    Example:
        >>> out = lead_stats([([2.0, 0.1], [2.2, -0.1]), ([1.5], [1.4])])
        >>> out["tokens"], out["flips"], out["max_lead_at_flip"]
        (3, 1, 0.1)
        >>> out["by_threshold"]["1.0"]
        {'answers': 1, 'answered_otherwise': 0}
    """
    import statistics

    diffs = sorted(abs(a - b) for ours, served in pairs for a, b in zip(ours, served))
    flips = [a for ours, served in pairs for a, b in zip(ours, served) if a >= 0 > b]
    changed = [any(a >= 0 > b for a, b in zip(ours, served)) for ours, served in pairs]
    mins = [min(ours) if ours else 0.0 for ours, _ in pairs]
    p99 = diffs[min(len(diffs) - 1, int(0.99 * len(diffs)))] if diffs else None
    return {
        "answers": len(pairs), "tokens": len(diffs),
        "abs_diff": {"median": round(statistics.median(diffs), 4) if diffs else None,
                     "p99": round(p99, 4) if p99 is not None else None,
                     "max": round(diffs[-1], 4) if diffs else None},
        "flips": len(flips),
        "max_lead_at_flip": round(max(flips), 4) if flips else None,
        "answers_otherwise": sum(changed),
        "by_threshold": {str(t): {"answers": sum(m >= t for m in mins),
                                  "answered_otherwise": sum(c for m, c in zip(mins, changed)
                                                            if m >= t)}
                         for t in MARGIN_THRESHOLDS},
    }


def _margin_questions(n: int) -> list[str]:
    """The fact adapters' trained questions, then questions in the canaries' form ("What
    did S say about T on D?") on the shipped sample conversation."""
    from langchain_ragtune.distill.extract import topic_phrase
    from langchain_ragtune.distill.text import format_date
    from langchain_ragtune.eval.locomo import load_sample

    turns = list(load_sample()[0].turns())
    speakers = {t.speaker for t in turns}
    out = [q for f in FACT_VERSIONS["v1"].facts for q in f.questions]
    for t in turns:
        topic = topic_phrase(t.text, exclude=speakers)
        if topic:
            out.append(f"What did {t.speaker} say about {topic} on {format_date(t.occurred_at)}?")
    return out[:n]


def run_canary_margin_bench(*, questions: int = 40, max_tokens: int = 32,
                            adapters: str | None = None, endpoint: str | None = None,
                            cache_dir: str | Path | None = None,
                            quiet: bool = False) -> dict[str, Any]:
    """How far the served model's greedy leads are from the in-process evaluation's.

    The training pipeline publishes a canary only when its float32, in-process answer leads
    the next choice by ``GateConfig.canary_min_margin`` at every token, because vLLM serves
    in another precision (bfloat16 on AVX-512 CPUs and GPUs) and answers near ties otherwise.
    This measures that: each adapter answers ``questions`` bare questions greedily in
    process (as canaries are recorded), and the same answers are scored on vLLM with
    ``prompt_logprobs`` (:meth:`VLLMAdminClient.score_prompts` ``with_leads``), giving
    both leads of every answer token (:func:`lead_stats`).

    Args:
        questions: questions per adapter (the fact adapters' 10 trained ones, then the
            shipped sample's "What did S say about T on D?" questions).
        max_tokens: answer length.
        adapters: comma-separated adapter folders (default: the bench's two fact adapters,
            trained once and cached).
        endpoint: a running vLLM server's URL (default: start one).
        cache_dir: where the fact adapters are cached.
        quiet: no progress output.

    Returns:
        JSON-able dict: ``overall`` and ``adapters`` (:func:`lead_stats` each),
        ``server_dtype``, ``settings``, ``machine``, ``date``.
    """
    from langchain_ragtune.config import ModelConfig, ServeConfig
    from langchain_ragtune.errors import InvalidInputError, ServingError
    from langchain_ragtune.models import prepare_base_model
    from langchain_ragtune.serving.client import VLLMAdminClient
    from langchain_ragtune.serving.launcher import server_dtype, serving_endpoints
    from langchain_ragtune.tuning.evaluate import AdapterEvaluator

    def say(msg: str) -> None:
        if not quiet:
            print(f"bench canary_margin: {msg}", file=sys.stderr, flush=True)

    t_start = time.perf_counter()
    model_config = ModelConfig.from_env()
    base_model = prepare_base_model(model_config, quiet=True)
    if adapters:
        paths = [Path(p.strip()) for p in adapters.split(",") if p.strip()]
    else:
        cache = Path(cache_dir) if cache_dir else model_config.home / "cache" / "bench-adapters"
        say("fact adapters (trained once, then cached)")
        paths = [ensure_fact_adapter(base_model, cache, v) for v in ("v1", "v2")]
    missing = [str(p) for p in paths if not (p / "adapter_config.json").is_file()]
    if missing or not paths:
        raise InvalidInputError(f"adapters={adapters!r}: no adapter folder at {missing}; pass "
                                "comma-separated peft adapter folders (--set adapters=A,B).")
    qs = _margin_questions(questions)
    ev = AdapterEvaluator(base_model, max_new_tokens=max_tokens,
                          torch_threads=model_config.torch_threads, repetition_penalty=1.0)
    ours: dict[str, list[tuple[str, str, list[float]]]] = {}
    skipped = 0
    for path in paths:
        say(f"{path.name}: {len(qs)} greedy answers and their leads in process")
        answers = ev.answer(qs, adapter=path, system_prompt=None)
        kept = [(q, a) for q, a in zip(qs, answers) if a]
        skipped += len(qs) - len(kept)  # an empty answer has no tokens to compare
        leads = ev.greedy_leads(kept, adapter=path, system_prompt=None)
        ours[path.name] = [(q, a, lead) for (q, a), lead in zip(kept, leads)]
    del ev  # free the in-process model before vLLM starts

    config = ServeConfig.from_env(**({"vllm_urls": (endpoint,)} if endpoint else {}))
    attached = bool(config.vllm_urls)
    say(f"using {config.vllm_urls}" if attached else "starting vLLM")
    results: dict[str, Any] = {}
    everything: list[tuple[list[float], list[float]]] = []
    with serving_endpoints(config, port=0) as urls, VLLMAdminClient(urls[0]) as client:
        for path in paths:
            name = f"margin-{path.name}-{os.getpid()}"
            client.load_adapter(name, path)
            try:
                probes, pairs = [], []
                for q, a, lead in ours[path.name]:
                    user = [{"role": "user", "content": q}]
                    prompt = client.tokenize_chat(user)
                    full = client.tokenize_chat([*user, {"role": "assistant", "content": a}],
                                                continue_final_message=True)
                    # Compare token for token only where both sides split the answer alike.
                    if full[:len(prompt)] == prompt and len(full) - len(prompt) == len(lead):
                        probes.append(((full, len(prompt)), lead))
                    else:
                        skipped += 1
                if probes:
                    scored = client.score_prompts(name, [p for p, _ in probes], with_leads=True)
                    if any(t.lead is None for sc in scored for t in sc):
                        raise ServingError(f"vLLM at {urls[0]} returned no alternatives with "
                                           "prompt_logprobs=2; it cannot give leads.")
                    pairs = [(lead, [float(t.lead) for t in sc])  # type: ignore[arg-type]
                             for (_, lead), sc in zip(probes, scored)]
                results[path.name] = lead_stats(pairs)
                everything += pairs
                say(f"{path.name}: {results[path.name]['tokens']} tokens, max |diff| "
                    f"{results[path.name]['abs_diff']['max']}, flips {results[path.name]['flips']}")
            finally:
                client.unload_adapter(name)
    return {
        "overall": lead_stats(everything), "adapters": results,
        "server_dtype": "unknown (attached server)" if attached
        else server_dtype(config) or "auto (the model's own)",
        "settings": {"questions": len(qs), "max_tokens": max_tokens,
                     "adapters": [str(p) for p in paths], "skipped_answers": skipped},
        "bench_seconds": round(time.perf_counter() - t_start, 1),
        "machine": machine_info(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S%z"),
    }
