"""``ragtune bench``: one entry point for the project's benchmarks, and the ingest benchmark.

Each benchmark lives with the code it measures and is imported only when run:

* ``retrieval``: ``langchain_ragtune.store.bench.run_retrieval_bench`` (store);
* ``ingest``: :func:`run_ingest_bench`, here (eval);
* ``router``: ``langchain_ragtune.router.bench.run_router_bench`` (router);
* ``swap``: ``langchain_ragtune.serving.bench.run_swap_bench`` (serving);
* ``lora_ops``: ``langchain_ragtune.serving.bench.run_lora_ops_bench`` (serving: vLLM's CPU
  LoRA ops and per-layer LoRA work against the plugin's);
* ``canary_margin``: ``langchain_ragtune.serving.bench.run_canary_margin_bench`` (serving:
  greedy leads served vs in process, behind ``GateConfig.canary_min_margin``);
* ``parametric``: ``langchain_ragtune.jobs.bench.run_parametric_bench`` (jobs);
* ``load``: ``langchain_ragtune.eval.load.run_load_bench`` (concurrent chat sessions).

:func:`run_bench` calls one by name with the keyword arguments it accepts (so options of
other benches are ignored); :func:`run_all` runs every available one and
:func:`summary_table` renders the Markdown table ``ragtune bench all`` writes.

The ingest benchmark writes real conversation turns (LoCoMo when present, else the shipped
sample) through :meth:`MemoryStore.add` and embeds them with the real embedding model,
measuring what issue 2 asks: the write-path acknowledgement per turn (target p95 <= 10 ms)
and ingest throughput with real embeddings.

Example:
    >>> from langchain_ragtune.eval.bench import BENCHES
    >>> sorted(BENCHES)
    ['canary_margin', 'ingest', 'load', 'lora_ops', 'parametric', 'retrieval', 'router', 'swap']
"""

from __future__ import annotations

import importlib
import inspect
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

from langchain_ragtune.errors import InvalidInputError

__all__ = ["BENCHES", "BenchUnavailable", "run_all", "run_bench", "run_ingest_bench",
           "summary_rows", "summary_table"]

#: name -> (module, function) of every benchmark.
BENCHES: dict[str, tuple[str, str]] = {
    "retrieval": ("langchain_ragtune.store.bench", "run_retrieval_bench"),
    "ingest": ("langchain_ragtune.eval.bench", "run_ingest_bench"),
    "router": ("langchain_ragtune.router.bench", "run_router_bench"),
    "swap": ("langchain_ragtune.serving.bench", "run_swap_bench"),
    "lora_ops": ("langchain_ragtune.serving.bench", "run_lora_ops_bench"),
    "canary_margin": ("langchain_ragtune.serving.bench", "run_canary_margin_bench"),
    "parametric": ("langchain_ragtune.jobs.bench", "run_parametric_bench"),
    "load": ("langchain_ragtune.eval.load", "run_load_bench"),
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
}


class BenchUnavailable(InvalidInputError):
    """A benchmark's module or function does not exist (yet) in this installation."""


def load_bench(name: str) -> Callable[..., dict[str, Any]]:
    """The function of benchmark ``name``.

    Raises:
        InvalidInputError: unknown name.
        BenchUnavailable: its module or function is not there yet.
    """
    if name not in BENCHES:
        raise InvalidInputError(f"unknown benchmark {name!r}; choose among {', '.join(BENCHES)}.")
    module_name, func_name = BENCHES[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise BenchUnavailable(
                f"the {name} benchmark is not available yet: {module_name} does not exist in "
                "this installation (its area has not shipped it).") from None
        raise
    func = getattr(module, func_name, None)
    if func is None:
        raise BenchUnavailable(f"the {name} benchmark is not available yet: {module_name} has "
                               f"no {func_name}().")
    return func


def run_bench(name: str, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Run benchmark ``name`` with the ``options`` its function accepts; return its JSON.

    Options the function does not take are dropped, so one option set can drive all
    benches (``--queries`` means something to several of them).
    """
    func = load_bench(name)
    opts = {k: v for k, v in (options or {}).items() if v is not None}
    params = inspect.signature(func).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        opts = {k: v for k, v in opts.items() if k in params}
    return func(**opts)


def run_all(options: Mapping[str, Any] | None = None, *, quick: bool = False,
            only: list[str] | None = None,
            on_done: Callable[[str, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run every available benchmark; a missing or failing one is recorded, not fatal.

    Returns:
        ``{"benches": {name: result | {"skipped": why} | {"error": why}}, "date": ...}``
    """
    out: dict[str, Any] = {"date": _now(), "quick": quick, "benches": {}}
    for name in only or list(BENCHES):
        opts = dict(QUICK.get(name, {}) if quick else {})
        opts.update({k: v for k, v in (options or {}).items() if v is not None})
        t0 = time.perf_counter()
        try:
            result = run_bench(name, opts)
        except BenchUnavailable as exc:
            result = {"skipped": str(exc)}
        except Exception as exc:  # one broken bench must not lose the others' numbers
            result = {"error": f"{type(exc).__name__}: {exc}"}
        if isinstance(result, dict):
            result.setdefault("bench_seconds", round(time.perf_counter() - t0, 1))
        out["benches"][name] = result
        if on_done:
            on_done(name, result)
    return out


# -- the summary table -----------------------------------------------------------------------

def _get(d: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(d, Mapping) or key not in d:
            return None
        d = d[key]
    return d


def _num(v: Any, digits: int = 3) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1e5 else f"{v:,.0f}"
    return str(v)


def _ok(cond: bool | None) -> str:
    return "–" if cond is None else ("yes" if cond else "**no**")


def _generic_rows(name: str, result: Mapping[str, Any]) -> list[list[str]]:
    items = []
    for key, value in result.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            items.append((key, value))
        elif isinstance(value, Mapping):
            items += [(f"{key}.{k}", v) for k, v in value.items()
                      if isinstance(v, (int, float)) and not isinstance(v, bool)]
    # A bench's own "targets" ({metric: upper bound}, e.g. swap's swap_s <= 0.5) fill the
    # target and met columns; the targets themselves are not metrics.
    targets = {k: v for k, v in (result.get("targets") or {}).items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    items = [(k, v) for k, v in items
             if k != "bench_seconds" and not k.startswith("targets.")][:6]
    rows = [[name, k, _num(v), f"<= {_num(targets[k])}" if k in targets else "",
             _ok(v <= targets[k]) if k in targets else "–"] for k, v in items]
    return rows or [[name, "(no numbers)", "", "", "–"]]


def summary_rows(results: Mapping[str, Any]) -> list[list[str]]:
    """Rows ``[bench, metric, value, target, met]`` for :func:`summary_table`."""
    rows: list[list[str]] = []
    for name, r in (results.get("benches") or {}).items():
        if "skipped" in r or "error" in r:
            rows.append([name, "skipped" if "skipped" in r else "error",
                         str(r.get("skipped") or r.get("error"))[:120], "", "–"])
            continue
        if name == "retrieval":
            rec = _get(r, "ours", "recall_at_10")
            ratio = _get(r, "p95_ratio_ours_over_raw")
            rows += [
                [name, "recall@10 (ours / raw)",
                 f"{_num(rec)} / {_num(_get(r, 'raw', 'recall_at_10'))}", ">= 0.95",
                 _ok(None if rec is None else rec >= 0.95)],
                [name, "p95 ms (ours / raw)",
                 f"{_num(_get(r, 'ours', 'p95_ms'))} / {_num(_get(r, 'raw', 'p95_ms'))}",
                 "ours <= 1.2 x raw", _ok(None if ratio is None else ratio <= 1.2)],
                [name, "ingest rows/s", _num(_get(r, "ingest_rows_per_s")), "", "–"],
            ]
        elif name == "ingest":
            p95 = _get(r, "ack_ms", "p95")
            rows += [
                [name, "write ack p95 ms (per turn)", _num(p95), "<= 10",
                 _ok(None if p95 is None else p95 <= 10)],
                [name, "write ack p95 ms, embedder busy",
                 _num(_get(r, "ack_ms_background_embedding", "p95")), "", "–"],
                [name, "turns/s written + embedded", _num(_get(r, "ingest_rows_per_s")), "", "–"],
                [name, "turns/s embedded", _num(_get(r, "embed_rows_per_s")), "", "–"],
            ]
        elif name == "lora_ops":
            for case, c in (r.get("cases") or {}).items():
                rows.append([name, f"{case}: shrink / expand us (vLLM -> ragtune)",
                             f"{_num(_get(c, 'shrink_us', 'vllm'))} -> "
                             f"{_num(_get(c, 'shrink_us', 'ragtune'))} / "
                             f"{_num(_get(c, 'expand_us', 'vllm'))} -> "
                             f"{_num(_get(c, 'expand_us', 'ragtune'))}", "", "–"])
                if _get(c, "layer_us", "vllm") is not None:
                    layer = (f"{_num(_get(c, 'layer_us', 'vllm'))} -> "
                             f"{_num(_get(c, 'layer_us', 'ragtune'))}")
                    rows.append([name, f"{case}: LoRA per decoder layer us (vLLM -> ragtune)",
                                 layer, "", "–"])
        elif name == "canary_margin":
            o = r.get("overall") or {}
            at_default = _get(o, "by_threshold", "1.0", "answered_otherwise")
            rows += [
                [name, "lead served minus in process, abs. nats (median / p99 / max)",
                 f"{_num(_get(o, 'abs_diff', 'median'))} / {_num(_get(o, 'abs_diff', 'p99'))} / "
                 f"{_num(_get(o, 'abs_diff', 'max'))}", "", "–"],
                [name, "flipped tokens / tokens (largest in-process lead flipped)",
                 f"{_num(o.get('flips'))} / {_num(o.get('tokens'))} "
                 f"({_num(o.get('max_lead_at_flip'))})", "", "–"],
                [name, "answers >= 1 nat lead / of them answered otherwise",
                 f"{_num(_get(o, 'by_threshold', '1.0', 'answers'))} / {_num(at_default)}",
                 "0 otherwise", _ok(None if at_default is None else at_default == 0)],
            ]
        else:
            rows += _generic_rows(name, r)
    return rows


def summary_table(results: Mapping[str, Any]) -> str:
    """The Markdown summary of :func:`run_all` results.

    Example:
        >>> print(summary_table({"benches": {"swap": {"skipped": "not yet"}}}))
        | bench | metric | value | target | met |
        |---|---|---|---|---|
        | swap | skipped | not yet |  | – |
    """
    lines = ["| bench | metric | value | target | met |", "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in summary_rows(results)]
    return "\n".join(lines)


# -- the ingest benchmark --------------------------------------------------------------------

def _now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def _bench_turns(n: int, data: str | None) -> tuple[list[Any], str]:
    from langchain_ragtune.errors import DatasetError
    from langchain_ragtune.eval.locomo import load_locomo, load_sample, to_turns

    try:
        convs, source = load_locomo(data), "locomo"
    except (DatasetError, InvalidInputError):
        if data is not None:
            raise
        convs, source = load_sample(), "sample"
    base = [t for conv in convs for t in to_turns(conv)]
    turns = []
    # Repeat the conversations when more turns are asked for, with fresh message ids so
    # every write is a real insert (writes are idempotent on message id).
    for i in range(n):
        t = base[i % len(base)]
        rnd = i // len(base)
        turns.append(type(t)(text=t.text, speaker=t.speaker, role=t.role,
                             message_id=f"{t.thread_id}/{t.message_id}/r{rnd}",
                             thread_id=f"{t.thread_id}/r{rnd}", occurred_at=t.occurred_at,
                             metadata=t.metadata))
    return turns, source


def run_ingest_bench(*, turns: int = 2000, ack_turns: int = 300, batch: int = 128,
                     data: str | None = None, pg_uri: str | None = None,
                     embeddings: Any = None, keep: bool = False,
                     quiet: bool = False) -> dict[str, Any]:
    """Measure the write path and ingest throughput with real turns and real embeddings.

    Three phases on a throwaway schema:

    1. ``ack_turns`` single-turn ``add`` calls, embedder idle: the acknowledgement latency
       a chat app sees per message (``ack_ms``);
    2. the same again while the background embedder is busy with a backlog
       (``ack_ms_background_embedding``; both share this machine's cores);
    3. the rest in batches of ``batch``, then ``flush()``: written rows/s, embedded rows/s,
       and end-to-end ``ingest_rows_per_s`` (written and embedded).

    Args:
        turns: total turns written (LoCoMo repeated as needed).
        ack_turns: single-turn writes timed in each of phases 1 and 2.
        batch: turns per ``add`` call in phase 3.
        data: a LoCoMo-format file (default: LoCoMo if found, else the shipped sample).
        pg_uri: server (the configured/embedded one by default).
        embeddings: embeddings to use (the store's default, all-MiniLM-L6-v2, by default).
        keep: keep the bench schema afterwards.
        quiet: no progress bars.
    """
    if turns < 2 * ack_turns + 1 or ack_turns < 1 or batch < 1:
        raise InvalidInputError(f"turns={turns} must exceed 2 x ack_turns={ack_turns} (>= 1); "
                                f"batch={batch} must be >= 1.")
    from tqdm import tqdm

    from langchain_ragtune.config import StoreConfig
    from langchain_ragtune.eval.metrics import latency_summary
    from langchain_ragtune.eval.retrieval_eval import describe_embeddings
    from langchain_ragtune.hardware import machine_info
    from langchain_ragtune.store import MemoryStore, sql

    all_turns, source = _bench_turns(turns, data)
    schema = f"bench_ingest_{uuid.uuid4().hex[:8]}"
    overrides: dict[str, Any] = {"schema": schema}
    if pg_uri:
        overrides["pg_uri"] = pg_uri
    config = StoreConfig.from_env(**overrides)
    store = MemoryStore(config, embeddings=embeddings, background_embedding=False)
    ns = ("bench-ingest",)
    try:
        store.setup()
        store.embeddings.embed_documents(["warm up the model"])  # load it before timing
        store.add(("bench-warmup",), all_turns[:1])               # and open the connections
        bar = tqdm(total=turns, desc="ingest bench", unit="turn", disable=quiet)

        ack: list[float] = []
        for t in all_turns[:ack_turns]:
            t0 = time.perf_counter()
            store.add(ns, [t])
            ack.append((time.perf_counter() - t0) * 1000)
            bar.update(1)

        # Phase 2: a second store object on the same schema runs the background embedder
        # over the backlog of phase 1 while this one keeps writing.
        busy = MemoryStore(config, embeddings=store.embeddings, background_embedding=True)
        ack_bg: list[float] = []
        try:
            busy.setup()  # starts its embedder thread on the backlog
            for t in all_turns[ack_turns:2 * ack_turns]:
                t0 = time.perf_counter()
                store.add(ns, [t])
                ack_bg.append((time.perf_counter() - t0) * 1000)
                bar.update(1)
        finally:
            busy.close()

        rest = all_turns[2 * ack_turns:]
        t0 = time.perf_counter()
        for i in range(0, len(rest), batch):
            store.add(ns, rest[i:i + batch])
            bar.update(len(rest[i:i + batch]))
        add_s = time.perf_counter() - t0
        bar.close()
        pending = store.pending()
        t0 = time.perf_counter()
        embedded = store.flush()
        embed_s = time.perf_counter() - t0
        written = store.count(ns)
        add_rate = len(rest) / add_s if add_s else None
        embed_rate = embedded / embed_s if embed_s and embedded else None
        result = {
            "ack_ms": latency_summary(ack),
            "ack_ms_background_embedding": latency_summary(ack_bg),
            "batch_add_rows_per_s": round(add_rate, 1) if add_rate else None,
            "embed_rows_per_s": round(embed_rate, 1) if embed_rate else None,
            # Written and embedded, one after the other: 1 / (1/write rate + 1/embed rate).
            "ingest_rows_per_s": round(1 / (1 / add_rate + 1 / embed_rate), 1)
            if add_rate and embed_rate else None,
            "embedded": embedded,
            "pending_before_flush": pending,
            "turns": written,
            "config": {"turns": turns, "ack_turns": ack_turns, "batch": batch, "source": source,
                       "schema": schema, "schema_kept": keep,
                       "embedding_model": describe_embeddings(store.embeddings),
                       "embed_batch_size": config.embed_batch_size},
            "machine": machine_info(),
            "date": _now(),
        }
    finally:
        if not keep:
            with store.pool.connection() as conn:
                conn.execute(store.render(sql.DROP_SCHEMA_SQL))
        store.close()
    return result
