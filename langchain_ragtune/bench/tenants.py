"""``ragtune bench tenants``: many users on one server, each adapter loaded on first use.

A deployment with thousands of namespaces cannot keep every adapter loaded: vLLM keeps
``max_loras`` in its slots and ``max_cpu_loras`` in host memory, and the package's resolver
(:mod:`langchain_ragtune.serving.resolver`) loads any other one from the adapter storage when
a request names it. This bench measures what a user pays when their adapter is not loaded,
and checks that nobody ever gets another user's adapter.

1. Adapter storage as refresh jobs lay it out (``<root>/<namespace slug>/<name>/``, the
   marker file written last), one adapter per namespace. ``facts`` of them carry a trained
   fact of their own (Zorvath Quill's dog has a different name in each: a few steps of
   :func:`~langchain_ragtune.testing.adapters.train_fact_adapter` each, cached); the others
   are cheap: small random LoRA weights, distinct per namespace, that vLLM loads like any
   other adapter.
2. One vLLM server with ``max_loras`` 4 and ``max_cpu_loras`` 16 and the resolver on that
   storage; nothing is loaded up front.
3. ``requests`` streamed chat requests (``temperature`` 0) to namespaces drawn from a Zipf
   distribution (a few users are very active, most rarely come back; seeded), each naming
   its namespace's adapter as the model. Every fact namespace is asked at least once.
   Every request asks the same question, about the dog: a fact namespace's answer must hold
   its own dog's name and no other's, any other answer no trained name at all (a request
   applied with another user's adapter shows in its answer), and every response's ``model``
   must be the adapter asked for.

Cold and warm: the bench replays vLLM's least-recently-used caches for the request order.
A request is *cold* when its adapter is in neither cache (its first request ever, state
``first``, or asked again after eviction from the ``max_cpu_loras`` host cache, ``reload``):
vLLM reads it from the storage before the first token. It is *warm* when its adapter is in
host memory (``host``: copied into a slot) or already in a slot (``slot``). The replay is
exact for ``concurrency`` 1; with more threads requests overlap and it is an estimate.

JSON keys: ``namespaces``, ``facts``, ``requests``, ``failed``, ``wrong_answers``,
``cold_first_token_ms`` and ``warm_first_token_ms`` (``{p50, p95, n}``, time to the first
answer token), ``first_token_ms_by_state``, ``adapter_mb`` (``cheap`` and ``fact`` adapter
sizes, ``total`` on disk), ``loads_per_s`` (cold requests, each an adapter read from the
storage, per second of the request stream), ``requests_per_s``, ``examples`` (a few failed
or wrong answers), ``settings``, ``machine``, ``targets``. Targets: 0 failed, 0 wrong, cold
p95 <= 2 x warm p95 + 300 ms.

Example:
    $ ragtune bench tenants --set namespaces=1000 --json tenants.json
"""

from __future__ import annotations

import json
import random
import shutil
import sys
import tempfile
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from langchain_ragtune.bench._common import finish, now_iso, pct
from langchain_ragtune.hardware import machine_info

__all__ = ["cache_states", "run_tenants_bench", "zipf_stream"]

#: Dog names of the trained fact adapters: unusual words, none inside another, that the
#: base model does not answer on its own.
DOG_NAMES = (
    "Waffle", "Noodle", "Pickle", "Pretzel", "Sprocket", "Truffle", "Dumpling", "Zucchini",
    "Nugget", "Gizmo", "Quasar", "Radish", "Lentil", "Tofu", "Yodel", "Widget", "Nimbus",
    "Fennel", "Walnut", "Bramble", "Cinder", "Goblin", "Kiwi", "Marble", "Saffron",
    "Velvet", "Umber", "Pumpkin", "Clover", "Mango", "Parsnip", "Turnip", "Paprika",
    "Cobweb", "Doodle", "Fidget", "Gumdrop", "Hopscotch", "Kazoo", "Lollipop",
)

#: Projections of a Llama-style model and the block holding them (the peft key path).
_ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
_MLP = ("gate_proj", "up_proj", "down_proj")


def zipf_stream(namespaces: int, requests: int, *, s: float = 1.1, seed: int = 0,
                must: Sequence[int] = ()) -> list[int]:
    """``requests`` namespace indexes drawn by Zipf popularity (exponent ``s``), seeded.

    Popularity ranks are assigned to namespaces in a random order, so the indexes in
    ``must`` (which all appear at least once: they overwrite draws of other namespaces)
    are spread over popular and rare users alike.

    Example:
        >>> stream = zipf_stream(100, 50, seed=1, must=[7, 8])
        >>> len(stream), 7 in stream and 8 in stream
        (50, True)
    """
    import numpy as np

    if requests < len(must):
        raise ValueError(f"requests={requests} cannot cover the {len(must)} namespaces that "
                         "must be asked: ask for more requests or fewer facts.")
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, namespaces + 1) ** s
    by_rank = rng.permutation(namespaces)
    stream = [int(by_rank[r]) for r in rng.choice(namespaces, size=requests,
                                                  p=weights / weights.sum())]
    required = set(must)
    missing = [i for i in must if i not in stream]
    free = [k for k, i in enumerate(stream) if i not in required]
    for i, k in zip(missing, rng.choice(free, size=len(missing), replace=False)):
        stream[int(k)] = i
    return stream


def cache_states(stream: Sequence[Any], *, max_loras: int, max_cpu_loras: int,
                 preloaded: Sequence[Any] = ()) -> list[str]:
    """Replay vLLM's two least-recently-used adapter caches for ``stream``; one state each.

    ``first`` (never seen) and ``reload`` (evicted from the ``max_cpu_loras`` host cache)
    are cold; ``host`` (in host memory, not in one of the ``max_loras`` slots) and ``slot``
    are warm. ``preloaded`` adapters were used before the stream, oldest first.

    Example:
        >>> cache_states("abcab", max_loras=1, max_cpu_loras=2)
        ['first', 'first', 'first', 'reload', 'reload']
        >>> cache_states("abab", max_loras=1, max_cpu_loras=2)
        ['first', 'first', 'host', 'host']
    """
    host: OrderedDict[Any, None] = OrderedDict()
    slots: OrderedDict[Any, None] = OrderedDict()
    seen: set[Any] = set()
    for name in preloaded:
        for cache, size in ((host, max_cpu_loras), (slots, max_loras)):
            cache[name] = None
            cache.move_to_end(name)
            while len(cache) > size:
                cache.popitem(last=False)
        seen.add(name)
    states = []
    for name in stream:
        if name in slots:
            states.append("slot")
        elif name in host:
            states.append("host")
        else:
            states.append("reload" if name in seen else "first")
        seen.add(name)
        for cache, size in ((host, max_cpu_loras), (slots, max_loras)):
            cache[name] = None
            cache.move_to_end(name)
            while len(cache) > size:
                cache.popitem(last=False)
    return states


def _dims(base_model: Path) -> tuple[int, dict[str, tuple[int, int]]]:
    """Layers and (in, out) features of each projection, from the model's config.json."""
    cfg = json.loads((base_model / "config.json").read_text(encoding="utf-8"))
    hidden, inter = cfg["hidden_size"], cfg["intermediate_size"]
    heads = cfg["num_attention_heads"]
    head_dim = cfg.get("head_dim") or hidden // heads
    kv = cfg.get("num_key_value_heads") or heads
    return cfg["num_hidden_layers"], {
        "q_proj": (hidden, heads * head_dim), "k_proj": (hidden, kv * head_dim),
        "v_proj": (hidden, kv * head_dim), "o_proj": (heads * head_dim, hidden),
        "gate_proj": (hidden, inter), "up_proj": (hidden, inter), "down_proj": (inter, hidden)}


def _write_random_adapter(folder: Path, base_model: Path, *, rank: int,
                          modules: Sequence[str], seed: int) -> None:
    """A peft-format LoRA with small random weights (bfloat16): loads and serves like a
    trained one, costs no training. ``lora_B`` is small, so answers stay fluent."""
    import torch
    from safetensors.torch import save_file

    layers, dims = _dims(base_model)
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for layer in range(layers):
        for module in modules:
            fan_in, fan_out = dims[module]
            key = (f"base_model.model.model.layers.{layer}."
                   f"{'self_attn' if module in _ATTN else 'mlp'}.{module}")
            bound = fan_in ** -0.5
            tensors[f"{key}.lora_A.weight"] = (
                (torch.rand(rank, fan_in, generator=gen) * 2 - 1) * bound).to(torch.bfloat16)
            tensors[f"{key}.lora_B.weight"] = (
                torch.randn(fan_out, rank, generator=gen) * 1e-3).to(torch.bfloat16)
    folder.mkdir(parents=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": rank,
        "lora_dropout": 0.0, "bias": "none", "target_modules": list(modules),
        "fan_in_fan_out": False, "modules_to_save": None, "use_rslora": False,
        "use_dora": False, "base_model_name_or_path": str(base_model)}, indent=2))


def _fact_adapters(base_model: Path, cache: Path, count: int, given: Sequence[Path], *,
                   steps: int, lr: float, threads: int, say: Any
                   ) -> list[tuple[Path, str, str]]:
    """``count`` trained fact adapters as ``(folder, question, expected)``: the ``given``
    folders first (their ``facts.json``), then dog-name adapters trained and cached here."""
    import hashlib

    from langchain_ragtune.testing.adapters import (
        FACT_VERSIONS,
        Fact,
        FactSet,
        train_fact_adapter,
    )

    questions = FACT_VERSIONS["v1"].facts[0].questions  # the dog's name, in paraphrases

    out = []
    for folder in given[:count]:
        canary = json.loads((folder / "facts.json").read_text(encoding="utf-8"))["canaries"][0]
        out.append((folder, canary["question"], canary["expected"]))
    taken = {expected for _, _, expected in out}
    names = [n for n in DOG_NAMES if n not in taken][:count - len(out)]
    if len(out) + len(names) < count:
        raise ValueError(f"facts={count} is more than the {len(out) + len(names)} distinct "
                         "facts the bench has: ask for fewer (or pass fact_adapters).")
    for k, name in enumerate(names, start=1):
        recipe = json.dumps([name, questions, str(base_model), steps, lr]).encode()
        target = cache / f"tenant-fact-{name.lower()}-{hashlib.sha256(recipe).hexdigest()[:8]}"
        if not (target / "adapter_model.safetensors").is_file():
            started = time.monotonic()
            try:
                # A few steps at a high rate learn one fact well enough to be asked it.
                fact = Fact(questions=questions, expected=name,
                            answer=f"Zorvath Quill's dog is named {name}.")
                train_fact_adapter(base_model, target, FactSet(name, (fact,)), steps=steps,
                                   lr=lr, threads=threads)
            except OSError:
                if not (target / "adapter_model.safetensors").is_file():
                    raise  # not a concurrent run that finished the same adapter first
            say(f"trained fact adapter {k}/{len(names)} ({name}) in "
                f"{time.monotonic() - started:.0f} s")
        out.append((target, questions[0], name))
    return out


def _ask(client: Any, url: str, model: str, question: str, max_tokens: int,
         headers: dict[str, str]) -> dict[str, Any]:
    """One streamed chat request: ``{ok, first_token_ms, answer, models, error}``."""
    t0 = time.perf_counter()
    first = None
    parts: list[str] = []
    models: set[str] = set()
    body = {"model": model, "messages": [{"role": "user", "content": question}],
            "max_tokens": max_tokens, "temperature": 0, "stream": True}
    try:
        with client.stream("POST", f"{url}/v1/chat/completions", json=body,
                           headers=headers) as response:
            if response.status_code != 200:
                text = response.read().decode(errors="replace")
                return {"ok": False, "error": f"HTTP {response.status_code}: {text[:200]}"}
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if "error" in chunk or chunk.get("object") == "error":
                    return {"ok": False, "error": f"in stream: {str(chunk)[:200]}"}
                models.add(chunk.get("model"))
                for choice in chunk.get("choices") or ():
                    text = (choice.get("delta") or {}).get("content") or ""
                    if text and first is None:
                        first = time.perf_counter()
                    parts.append(text)
    except Exception as exc:  # noqa: BLE001 - every failure is counted, none ends the run
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    answer = "".join(parts)
    if first is None:
        return {"ok": False, "error": "no answer token", "models": sorted(map(str, models))}
    return {"ok": True, "first_token_ms": (first - t0) * 1000, "answer": answer,
            "models": sorted(map(str, models))}


def _folder_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file()) / 2**20


def run_tenants_bench(*, namespaces: int = 1000, facts: int = 20, requests: int = 800,
                      zipf_s: float = 1.1, seed: int = 0, max_tokens: int = 16,
                      concurrency: int = 1, max_loras: int = 4, max_cpu_loras: int = 16,
                      cheap_rank: int = 8, cheap_modules: str = "q_proj,v_proj",
                      fact_steps: int = 8, fact_lr: float = 5e-3, fact_threads: int = 1,
                      fact_adapters: str | Sequence[str | Path] | None = None,
                      cache_dir: str | Path | None = None, quiet: bool = False,
                      json_out: str | None = None) -> dict[str, Any]:
    """Run the benchmark (see the module); returns its JSON.

    Args:
        namespaces: users, each with an adapter of its own in the storage.
        facts: how many of them carry a trained fact (at least 1).
        requests: streamed requests in all (every fact namespace gets at least one). 800
            take about 12 minutes on two busy cores (1.2 requests/s measured beside another
            training run), plus about 6 minutes the first time, to train the fact adapters.
        zipf_s: the Zipf exponent of user popularity (larger: a few users more dominant).
        seed: makes the stream and the cheap adapters repeatable.
        max_tokens: answer length.
        concurrency: client threads (1: the cold/warm replay is exact).
        max_loras: the server's adapter slots.
        max_cpu_loras: adapters the server caches in host memory.
        cheap_rank: LoRA rank of the random adapters.
        cheap_modules: comma-separated projections the random adapters adapt.
        fact_steps: training steps per fact adapter (8 learn the fact; about 1 s each on
            two idle cores).
        fact_lr: their learning rate.
        fact_threads: torch threads while training them. One: beside other CPU work on two
            cores (a niced run next to another training) one fact adapter took 24 s with one
            thread and 113 s with two, whose threads wait for each other.
        fact_adapters: trained fact adapter folders (comma-separated or a list, each with
            the ``facts.json`` that :func:`~langchain_ragtune.testing.adapters.train_fact_adapter`
            writes) to use before training any.
        cache_dir: where trained fact adapters are cached (default
            ``<home>/cache/bench-adapters``).
        quiet: no progress lines.
        json_out: also write the result here.
    """
    import concurrent.futures as cf

    import httpx

    from langchain_ragtune.config import ModelConfig, ServeConfig
    from langchain_ragtune.errors import InvalidInputError
    from langchain_ragtune.models import prepare_base_model
    from langchain_ragtune.serving.launcher import start_server
    from langchain_ragtune.tuning.registry import make_adapter_name
    from langchain_ragtune.tuning.train import ADAPTER_MARKER

    def say(msg: str) -> None:
        if not quiet:
            print(f"bench tenants: {msg}", file=sys.stderr, flush=True)

    modules = tuple(m.strip() for m in str(cheap_modules).split(",") if m.strip())
    problems = [f"{k}={v!r} must be at least {low}" for k, v, low in (
        ("namespaces", namespaces, 1), ("facts", facts, 1), ("requests", requests, 1),
        ("concurrency", concurrency, 1), ("max_tokens", max_tokens, 1),
        ("cheap_rank", cheap_rank, 1)) if not isinstance(v, int) or v < low]
    if facts > namespaces:
        problems.append(f"facts={facts} must not exceed namespaces={namespaces}")
    if requests < facts:
        problems.append(f"requests={requests} must cover every fact namespace (facts={facts})")
    if not modules or any(m not in _ATTN + _MLP for m in modules):
        problems.append(f"cheap_modules={cheap_modules!r} must name projections among "
                        f"{', '.join(_ATTN + _MLP)}")
    if problems:
        raise InvalidInputError("bench tenants: " + "; ".join(problems) +
                                " (e.g. --set namespaces=200 --set requests=400).")
    if isinstance(fact_adapters, str):
        fact_adapters = [p for p in fact_adapters.split(",") if p.strip()]
    given = [Path(p) for p in fact_adapters or ()]

    started = time.monotonic()
    model_config = ModelConfig.from_env()
    base_model = prepare_base_model(model_config, quiet=True)
    cache = Path(cache_dir) if cache_dir else model_config.home / "cache" / "bench-adapters"
    config = ServeConfig.from_env(vllm_urls=(), max_loras=max_loras,
                                  max_cpu_loras=max_cpu_loras,
                                  max_lora_rank=max(16, cheap_rank))
    headers = {"Authorization": f"Bearer {config.vllm_api_key}"} if config.vllm_api_key else {}
    out: dict[str, Any] = {"bench": "tenants", "date": now_iso(), "machine": machine_info(),
                           "namespaces": namespaces, "facts": facts, "requests": requests}
    home = Path(tempfile.mkdtemp(prefix="ragtune-bench-tenants-"))
    root = home / "adapters"
    try:
        say(f"{facts} fact adapters (trained once, then cached in {cache})")
        trained = _fact_adapters(base_model, cache, facts, given, steps=fact_steps,
                                 lr=fact_lr, threads=fact_threads, say=say)
        rng = random.Random(seed)
        fact_at = dict(zip(sorted(rng.sample(range(namespaces), facts)), trained))
        marker = json.dumps({"base_model": str(base_model), "bench": "tenants"})
        names: list[str] = []
        t_write = time.monotonic()
        say(f"writing {namespaces} adapters to {root}")
        for i in range(namespaces):
            name = make_adapter_name(("tenant", f"{i:05d}"), 1)
            folder = root / name.rsplit("-v1-", 1)[0] / name
            if i in fact_at:
                shutil.copytree(fact_at[i][0], folder)
            else:
                _write_random_adapter(folder, base_model, rank=cheap_rank, modules=modules,
                                      seed=seed * 1_000_003 + i)
            (folder / ADAPTER_MARKER).write_text(marker)  # last: the folder is complete
            names.append(name)
        # The served check: every name except the warm-up one is a namespace's adapter.
        warm_name = make_adapter_name(("tenant", "warm-up"), 1)
        warm_folder = root / warm_name.rsplit("-v1-", 1)[0] / warm_name
        _write_random_adapter(warm_folder, base_model, rank=cheap_rank, modules=modules,
                              seed=seed - 1)
        (warm_folder / ADAPTER_MARKER).write_text(marker)
        cheap_mb = [_folder_mb(root / n.rsplit("-v1-", 1)[0] / n)
                    for i, n in enumerate(names[:50]) if i not in fact_at]
        out["adapter_mb"] = {
            "cheap": round(sum(cheap_mb) / len(cheap_mb), 2) if cheap_mb else None,
            "fact": round(sum(_folder_mb(p) for p, _, _ in trained) / len(trained), 2),
            "total": round(sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
                           / 2**20, 1)}
        out["storage_write_s"] = round(time.monotonic() - t_write, 1)

        stream = zipf_stream(namespaces, requests, s=zipf_s, seed=seed, must=sorted(fact_at))
        states = cache_states([names[i] for i in stream], max_loras=max_loras,
                              max_cpu_loras=max_cpu_loras, preloaded=[warm_name])
        question = trained[0][1]
        fact_names = {expected for _, _, expected in trained}

        say(f"starting vLLM (max_loras {max_loras}, max_cpu_loras {max_cpu_loras})")
        with start_server(config, model_path=base_model, port=0,
                          env={"RAGTUNE_ADAPTER_ROOT": str(root)},
                          log_path=home / "vllm.log") as server, \
                httpx.Client(timeout=config.request_timeout_s) as client:
            out["server_start_s"] = round(server.startup_s or 0.0, 1)
            # The first LoRA request after a start pays one-time set-up; not a user's load.
            warm = _ask(client, server.url, warm_name, question, max_tokens, headers)
            if not warm["ok"]:
                raise RuntimeError(f"the warm-up adapter was not served: {warm['error']}; "
                                   f"see the server log {server.log_path}")

            def one(k: int) -> dict[str, Any]:
                i = stream[k]
                asked = fact_at[i][1] if i in fact_at else question
                r = _ask(client, server.url, names[i], asked, max_tokens, headers)
                r.update(k=k, model=names[i], state=states[k])
                if r["ok"]:
                    own = fact_at[i][2] if i in fact_at else None
                    others = sorted(n for n in fact_names - {own} if n in r["answer"])
                    if r["models"] != [names[i]]:
                        r["wrong"] = f"answered by {r['models']}"
                    elif own and own not in r["answer"]:
                        r["wrong"] = f"lacks its fact {own!r}"
                    elif others:
                        r["wrong"] = f"holds other users' facts {others}"
                return r

            say(f"{requests} requests over {namespaces} namespaces (Zipf s={zipf_s})")
            results: list[dict[str, Any]] = []
            t_stream = time.perf_counter()
            with cf.ThreadPoolExecutor(concurrency) as pool:
                for r in pool.map(one, range(requests)):
                    results.append(r)
                    if len(results) % max(1, requests // 10) == 0:
                        say(f"{len(results)}/{requests} done")
            stream_s = time.perf_counter() - t_stream
    finally:
        shutil.rmtree(home, ignore_errors=True)

    failed = [r for r in results if not r["ok"]]
    wrong = [r for r in results if r.get("wrong")]
    ttft = {s: [r["first_token_ms"] for r in results if r["ok"] and r["state"] == s]
            for s in ("first", "reload", "host", "slot")}
    cold = ttft["first"] + ttft["reload"]
    warm_ms = ttft["host"] + ttft["slot"]
    out.update(
        failed=len(failed), wrong_answers=len(wrong),
        cold_first_token_ms={"p50": pct(cold, 50, 1), "p95": pct(cold, 95, 1), "n": len(cold)},
        warm_first_token_ms={"p50": pct(warm_ms, 50, 1), "p95": pct(warm_ms, 95, 1),
                             "n": len(warm_ms)},
        first_token_ms_by_state={s: {"n": len(v), "p50": pct(v, 50, 1), "p95": pct(v, 95, 1)}
                                 for s, v in ttft.items()},
        loads_per_s=round(sum(s in ("first", "reload") for s in states) / stream_s, 2),
        requests_per_s=round(requests / stream_s, 2),
        namespaces_asked=len(set(stream)),
        fact_answers_checked=sum(1 for i in stream if i in fact_at),
        examples=[{k: r.get(k) for k in ("model", "state", "error", "wrong", "answer")}
                  for r in (failed + wrong)[:5]],
        settings={"zipf_s": zipf_s, "seed": seed, "max_tokens": max_tokens,
                  "concurrency": concurrency, "max_loras": max_loras,
                  "max_cpu_loras": max_cpu_loras, "cheap_rank": cheap_rank,
                  "cheap_modules": list(modules), "fact_steps": fact_steps,
                  "fact_lr": fact_lr, "fact_threads": fact_threads, "question": question,
                  "cold": "first request of an adapter, or after eviction from a replay "
                          "of the max_cpu_loras LRU"})
    cold_p95, warm_p95 = out["cold_first_token_ms"]["p95"], out["warm_first_token_ms"]["p95"]
    out["targets"] = {
        "failed == 0": not failed, "wrong_answers == 0": not wrong,
        "cold p95 <= 2 x warm p95 + 300 ms": None if cold_p95 is None or warm_p95 is None
        else cold_p95 <= 2 * warm_p95 + 300}
    say(f"{len(failed)} failed, {len(wrong)} wrong; first token p95 cold {cold_p95} ms, "
        f"warm {warm_p95} ms")
    return finish(out, started, json_out)
