"""Every benchmark by name, and how ``ragtune bench`` calls them.

:func:`run_bench` calls one by name with the keyword arguments it accepts (so options meant
for other benches are ignored); :func:`run_all` runs them all and keeps going past a failure.

Example:
    >>> from langchain_ragtune.bench.registry import BENCHES
    >>> print(" ".join(sorted(BENCHES)[:6])); print(" ".join(sorted(BENCHES)[6:]))
    assistant_turns canary_margin incremental ingest load lora_ops
    parametric retrieval router swap tenants workers
"""

from __future__ import annotations

import inspect
import time
from typing import Any, Callable, Mapping

from langchain_ragtune.bench import (
    assistant_turns,
    canary_margin,
    incremental,
    ingest,
    load,
    lora_ops,
    parametric,
    retrieval,
    router,
    swap,
    tenants,
    workers,
)
from langchain_ragtune.bench._common import now_iso
from langchain_ragtune.errors import InvalidInputError

__all__ = ["BENCHES", "QUICK", "run_all", "run_bench"]

#: name -> function of every benchmark. The modules are light at import: each loads its
#: heavy parts (torch, vLLM, the store) when it runs.
BENCHES: dict[str, Callable[..., dict[str, Any]]] = {
    "retrieval": retrieval.run_retrieval_bench,
    "ingest": ingest.run_ingest_bench,
    "router": router.run_router_bench,
    "swap": swap.run_swap_bench,
    "lora_ops": lora_ops.run_lora_ops_bench,
    "canary_margin": canary_margin.run_canary_margin_bench,
    "parametric": parametric.run_parametric_bench,
    "incremental": incremental.run_incremental_bench,
    "load": load.run_load_bench,
    "workers": workers.run_workers_bench,
    "tenants": tenants.run_tenants_bench,
    "assistant_turns": assistant_turns.run_assistant_turns_bench,
}

#: Smaller settings for ``bench all --quick`` (a smoke run of every bench in minutes).
QUICK: dict[str, dict[str, Any]] = {
    "retrieval": {"memories": 10_000, "queries": 200},
    "load": {"sessions": 10, "seconds": 10},
    "ingest": {"turns": 400, "ack_turns": 100},
    "router": {"queries": 200, "e2e": False},
    "swap": {"requests": 40, "rate_rounds": 2},
    "lora_ops": {"repeats": 50},
    "canary_margin": {"questions": 12, "max_tokens": 16},
    "parametric": {"max_steps": 10, "teacher_max_chunks": 4, "eval_questions": 16,
                   "locomo_questions": 20},
    "incremental": {"sample": True, "new_turns": 10},
    "workers": {"workers": 2, "namespaces": 6, "real": 1},
    "tenants": {"namespaces": 30, "facts": 2, "requests": 60},
    "assistant_turns": {"questions": 9},
}


def run_bench(name: str, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Run benchmark ``name`` with the ``options`` its function accepts; return its JSON.

    Options the function does not take are dropped, so one option set can drive all
    benches (``--queries`` means something to several of them).
    """
    func = BENCHES.get(name)
    if func is None:
        raise InvalidInputError(f"unknown benchmark {name!r}; choose among {', '.join(BENCHES)}.")
    opts = {k: v for k, v in (options or {}).items() if v is not None}
    params = inspect.signature(func).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        opts = {k: v for k, v in opts.items() if k in params}
    return func(**opts)


def run_all(options: Mapping[str, Any] | None = None, *, quick: bool = False,
            only: list[str] | None = None,
            on_done: Callable[[str, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run every benchmark (or ``only`` those); a failing one is recorded, not fatal.

    Returns:
        ``{"benches": {name: result | {"error": why}}, "date": ..., "quick": ...}``
    """
    out: dict[str, Any] = {"date": now_iso(), "quick": quick, "benches": {}}
    for name in only or list(BENCHES):
        opts = dict(QUICK.get(name, {}) if quick else {})
        opts.update({k: v for k, v in (options or {}).items() if v is not None})
        t0 = time.perf_counter()
        try:
            result = run_bench(name, opts)
        except Exception as exc:  # one broken bench must not lose the others' numbers
            result = {"error": f"{type(exc).__name__}: {exc}"}
        if isinstance(result, dict):
            result.setdefault("bench_seconds", round(time.perf_counter() - t0, 1))
        out["benches"][name] = result
        if on_done:
            on_done(name, result)
    return out
