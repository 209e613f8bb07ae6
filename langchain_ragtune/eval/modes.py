"""The answering modes of the LoCoMo evaluation: one reader model, six kinds of memory.

Every mode answers each question with the same reader (the served base model, or any
LangChain chat model), so the modes differ only in the memory they give it:

* ``none``: no memory (the router's ``none`` route);
* ``full-context``: the whole conversation in the prompt, where it fits the reader's
  context window; otherwise its most recent turns that fit (counted as not fitting);
* ``retrieval``: the top-k hybrid search results as context, answered by the base model;
* ``parametric``: the conversation's tuned LoRA adapter, no context;
* ``hybrid``: the adapter with the retrieved context (Parametric RAG);
* ``routed``: whatever the memory router decides, per question.

The four single-route modes are the router's own routes forced
(:meth:`~langchain_ragtune.router.memory.MemoryRouter.force`), so prompts, context
formatting and models are exactly what the memory node uses; ``routed`` is the node's
decision itself. A :class:`ConversationMemory` is shared by the modes of one run: each
conversation is ingested once, and its adapter trained once (the real
:func:`~langchain_ragtune.jobs.refresh.refresh`: distill, train, validate, publish).

Example:
    >>> memory = ConversationMemory(store, tune=TuneSettings(train={"max_steps": 8}),
    ...                             publish=publisher.publish)                 # doctest: +SKIP
    >>> router = memory.router(reader)                                          # doctest: +SKIP
    >>> modes = [RouteMode(memory, router, "retrieval"),
    ...          RoutedMode(memory, router)]                                    # doctest: +SKIP
    >>> records = run_modes(conversations, modes, k=10)                         # doctest: +SKIP
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

from langchain_ragtune.errors import ConfigError, InvalidInputError
from langchain_ragtune.eval.harness import ModeAnswer, estimate_tokens
from langchain_ragtune.eval.locomo import LocomoConversation, LocomoQuestion

__all__ = [
    "ANSWER_MODES",
    "ConversationMemory",
    "FullContextMode",
    "Reader",
    "RouteMode",
    "RoutedMode",
    "TuneSettings",
    "build_modes",
]

#: Modes that answer with the reader (``retrieval`` also scores evidence recall).
ANSWER_MODES = ("none", "full-context", "retrieval", "parametric", "hybrid", "routed")

#: Settings of the evaluation's training runs that differ from a production refresh: the
#: gate is off (the evaluation measures the adapter, whatever the gate would decide).
EVAL_GATE = {"gate": False}


@dataclass
class TuneSettings:
    """How the evaluation trains each conversation's adapter (overrides of the configs).

    Attributes:
        distill: :class:`~langchain_ragtune.distill.pipeline.DistillConfig` fields.
        train: :class:`~langchain_ragtune.tuning.train.TrainConfig` fields.
        gate: :class:`~langchain_ragtune.tuning.gate.GateConfig` fields.
        seed: the training seed (``TrainConfig.seed`` and distillation sampling).

    Example:
        >>> TuneSettings(train={"epochs": 2}, seed=1).describe()["train"]
        {'epochs': 2, 'seed': 1}
    """

    distill: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    gate: dict[str, Any] = field(default_factory=lambda: dict(EVAL_GATE))
    seed: int = 0

    def describe(self) -> dict[str, Any]:
        d = asdict(self)
        d["train"] = {**self.train, "seed": self.seed}
        d["distill"] = {**self.distill, "seed": self.seed}
        return d


@dataclass
class Reader:
    """The model every mode answers with.

    Attributes:
        name: what it is, for the results (``"vllm:base"``, ``"openai:gpt-4o-mini"``...).
        factory: ``factory(adapter_name_or_None) -> chat model``; the router's
            :data:`~langchain_ragtune.router.memory.ChatModelFactory`.
        adapters: whether ``factory`` can serve LoRA adapters (vLLM, in-process); readers
            that cannot are refused for ``parametric``, ``hybrid`` and ``routed``.
        context_tokens: the most prompt tokens the reader takes (full-context budget).
        count_tokens: the reader's token count of a text (an estimate when ``None``).
        serve_config: where vLLM is, when the reader is served.
    """

    name: str
    factory: Callable[[str | None], Any]
    adapters: bool = True
    context_tokens: int = 2048
    count_tokens: Callable[[str], int] | None = None
    serve_config: Any = None

    def tokens(self, text: str) -> int:
        return self.count_tokens(text) if self.count_tokens else estimate_tokens(text)


class ConversationMemory:
    """One run's memory of each conversation, shared by its modes.

    Args:
        store: a set-up :class:`~langchain_ragtune.store.MemoryStore`.
        namespace_prefix: a conversation's namespace is ``prefix + (sample_id,)``.
        reuse: keep a namespace that already holds exactly the conversation's turns.
        reuse_adapter: keep the namespace's published adapter when it covers every turn
            (reruns with the same training settings; off: every run trains its own).
        tune: how adapters are trained; ``None`` when no mode needs one.
        publish: ``publish(record)`` puts a trained adapter into service (the
            :class:`~langchain_ragtune.serving.publisher.Publisher`); ``None`` registers it
            as current without serving (the in-process reader loads it from its folder).
        ensure_loaded: ``ensure_loaded(record)`` makes a reused adapter servable (loads it
            into a fresh vLLM server); ``None`` when nothing needs loading.
        progress: progress bars.
        refresh_options: more keyword arguments of
            :func:`~langchain_ragtune.jobs.refresh.refresh` (``model_config``, ``trainer``,
            ``evaluator``: another base model, training backend or gate evaluator).
    """

    def __init__(self, store: Any, *, namespace_prefix: Sequence[str] = ("locomo-eval",),
                 reuse: bool = False, reuse_adapter: bool = False,
                 tune: TuneSettings | None = None,
                 publish: Callable[[Any], Any] | None = None,
                 ensure_loaded: Callable[[Any], Any] | None = None,
                 progress: bool = True, refresh_options: dict[str, Any] | None = None) -> None:
        self.store = store
        self.namespace_prefix = tuple(namespace_prefix)
        self.reuse = reuse
        self.reuse_adapter = reuse_adapter
        self.tune = tune
        self.publish = publish
        self.ensure_loaded = ensure_loaded
        self.progress = progress
        self.refresh_options = dict(refresh_options or {})
        self._ingested: dict[str, dict[str, Any]] = {}
        self._adapters: dict[str, dict[str, Any]] = {}
        self._pending: dict[str, dict[str, Any]] = {}  # trained by pretrain(), not published

    def namespace(self, conversation: LocomoConversation) -> tuple[str, ...]:
        return (*self.namespace_prefix, conversation.sample_id)

    def ingest(self, conversation: LocomoConversation) -> dict[str, Any]:
        """Ingest the conversation once per run; later calls return the first stats."""
        from langchain_ragtune.eval.retrieval_eval import ingest_conversation

        sid = conversation.sample_id
        if sid in self._ingested:
            return {"turns": self._ingested[sid]["turns"], "ingested": 0, "shared": True}
        stats = ingest_conversation(self.store, self.namespace(conversation), conversation,
                                    reuse=self.reuse, progress=self.progress)
        self._ingested[sid] = stats
        return stats

    def _reusable(self, ns: tuple[str, ...]) -> Any:
        """The namespace's published adapter when it may be reused (covers every turn)."""
        from langchain_ragtune.tuning.registry import AdapterRegistry

        current = AdapterRegistry(self.store).current(ns)
        if self.reuse_adapter and current is not None \
                and current.watermark_seq >= self.store.max_seq(ns):
            return current
        return None

    def pretrain(self, conversations: Sequence[LocomoConversation]) -> None:
        """Ingest and train every conversation's adapter now, publishing none of them yet.

        Each is published at its first use (:meth:`adapter`). On a 2-core machine this lets
        the training runs have the cores before a vLLM server starts beside them.
        """
        if self.tune is None:
            return
        for conv in conversations:
            sid = conv.sample_id
            if sid in self._adapters or sid in self._pending:
                continue
            self.ingest(conv)
            ns = self.namespace(conv)
            if self._reusable(ns) is None:
                self._pending[sid] = self._train(ns, publish=False)

    def adapter(self, conversation: LocomoConversation) -> dict[str, Any]:
        """Train (once per run, unless :meth:`pretrain` did) and publish the conversation's
        adapter.

        Returns:
            ``{"adapter": name, "status", ...}``: the refresh's status, examples, closed-book
            scores and timings, or ``"reused"``.
        """
        sid = conversation.sample_id
        if sid in self._adapters:
            return {**self._adapters[sid], "shared": True}
        if self.tune is None:
            raise ConfigError("this run has no training settings; build the modes with "
                              "build_modes(..., tune=TuneSettings()).")
        from langchain_ragtune.tuning.registry import AdapterRegistry

        self.ingest(conversation)
        ns = self.namespace(conversation)
        pending = self._pending.pop(sid, None)
        current = self._reusable(ns) if pending is None else None
        if pending is not None:
            registry = AdapterRegistry(self.store)
            self._publish(registry, registry.get_by_id(pending.pop("adapter_id")))
            out = {**pending, "status": "published"}
        elif current is not None:
            if self.ensure_loaded is not None:
                self.ensure_loaded(current)
            out = {"adapter": current.name, "status": "reused", "version": current.version}
        else:
            out = self._train(ns, publish=True)
            out.pop("adapter_id", None)
        self._adapters[sid] = out
        return out

    def _publish(self, registry: Any, rec: Any) -> None:
        if self.publish is not None:
            self.publish(rec)
        else:  # no server: the in-process reader reads the registry
            registry.switch_current(rec.namespace, rec.id)

    def _train(self, ns: tuple[str, ...], *, publish: bool) -> dict[str, Any]:
        from langchain_ragtune.distill.pipeline import DistillConfig
        from langchain_ragtune.jobs.refresh import refresh
        from langchain_ragtune.tuning.gate import GateConfig
        from langchain_ragtune.tuning.registry import AdapterRegistry
        from langchain_ragtune.tuning.train import TrainConfig

        tune = self.tune
        assert tune is not None
        registry = AdapterRegistry(self.store)
        result = refresh(
            ns, store=self.store, force=True, progress=self.progress, mode="retrain",
            distill_config=DistillConfig.from_env(**{**tune.distill, "seed": tune.seed}),
            train_config=TrainConfig.from_env(**{**tune.train, "seed": tune.seed}),
            gate_config=GateConfig.from_env(**tune.gate),
            publish=(lambda rec: self._publish(registry, rec)) if publish else None,
            **self.refresh_options)
        ok = ("published",) if publish else ("ready",)
        if result.status not in ok:
            raise InvalidInputError(
                f"training the adapter of {ns!r} ended {result.status!r}: {result.reason}. "
                "Fix the reason, or leave parametric, hybrid and routed out of --mode.")
        return {"adapter": result.adapter_name, "adapter_id": result.adapter_id,
                "status": result.status, "examples": result.examples,
                "closed_book_before": result.metrics.get("closed_book_before"),
                "closed_book_after": result.metrics.get("closed_book_after"),
                "train_seconds": result.seconds.get("train"),
                "distill_seconds": result.seconds.get("distill")}

    def router(self, reader: Reader, *, k: int = 10, window: int = 0,
               answer_tokens: int = 48, config: Any = None) -> Any:
        """The memory router all modes of the run answer through."""
        from dataclasses import replace

        from langchain_ragtune.config import RouterConfig
        from langchain_ragtune.router.memory import MemoryRouter

        base = config or RouterConfig.from_env()
        cfg = replace(base, k=k, window=window, answer_max_tokens=answer_tokens,
                      state_ttl_s=0.0)  # an adapter published between questions is seen at once
        return MemoryRouter(self.store, config=cfg, serve_config=reader.serve_config,
                            chat_model_factory=reader.factory)


def _content(message: Any) -> str:
    content = getattr(message, "content", message)
    if isinstance(content, list):
        content = " ".join(b.get("text", "") if isinstance(b, dict) else str(b) for b in content)
    return str(content).strip()


class RouteMode:
    """One of the router's routes, forced for every question (``none``, ``retrieval``,
    ``parametric``, ``hybrid``).

    ``retrieval`` and ``hybrid`` also report evidence recall of the search results.
    """

    def __init__(self, memory: ConversationMemory, router: Any, route: str, *,
                 reader: Reader | None = None, name: str | None = None) -> None:
        if route not in ("none", "retrieval", "parametric", "hybrid"):
            raise InvalidInputError(f"route={route!r}: use none, retrieval, parametric or hybrid.")
        if route in ("parametric", "hybrid") and reader is not None and not reader.adapters:
            raise InvalidInputError(
                f"mode {route!r} needs a reader that serves LoRA adapters (--reader served or "
                f"local), not {reader.name!r}.")
        self.memory, self.router, self.route, self.reader = memory, router, route, reader
        self.name = name or route

    def describe(self) -> dict[str, Any]:
        cfg = self.router.config
        d: dict[str, Any] = {"route": self.route, "reader": self.reader.name if self.reader
                             else None, "answer_tokens": cfg.answer_max_tokens}
        if self.route in ("retrieval", "hybrid"):
            d.update(k=cfg.k, window=cfg.window)
        if self.route in ("parametric", "hybrid") and self.memory.tune is not None:
            d["tune"] = self.memory.tune.describe()
        return d

    def prepare(self, conversation: LocomoConversation) -> dict[str, Any]:
        stats = dict(self.memory.ingest(conversation))
        if self.route in ("parametric", "hybrid"):
            stats["adapter"] = self.memory.adapter(conversation)
        return stats

    def answer(self, conversation: LocomoConversation, question: LocomoQuestion) -> ModeAnswer:
        ns = self.memory.namespace(conversation)
        t0 = time.perf_counter()
        if self.route == "none":  # no memory: no search either
            from langchain_ragtune.router.decision import RouteDecision
            from langchain_ragtune.router.memory import RouteResult

            result = RouteResult(namespace=ns, query=question.question,
                                 decision=RouteDecision(route="none", reasons=["forced: none"]),
                                 model=self.router.serve_config.served_model_name)
        else:
            result = self.router.force(self.router.route(question.question, ns), self.route)
        answer, result = self.router.generate(result)
        ms = (time.perf_counter() - t0) * 1000
        retrieved = [list(h.get("message_ids") or []) for h in result.hits] \
            if self.route in ("retrieval", "hybrid") else []
        return ModeAnswer(prediction=_content(answer), retrieved=retrieved, latency_ms=ms,
                          memory_tokens=estimate_tokens(result.context),
                          extra={"model": result.model,
                                 "fallbacks": list(result.decision.fallbacks)}
                          if result.decision.fallbacks else {"model": result.model})


class RoutedMode:
    """The memory router's own decision per question (the memory node's behaviour)."""

    name = "routed"

    def __init__(self, memory: ConversationMemory, router: Any, *, reader: Reader | None = None,
                 train: bool = True) -> None:
        if reader is not None and not reader.adapters and train:
            raise InvalidInputError(
                f"mode 'routed' needs a reader that serves LoRA adapters (--reader served or "
                f"local), not {reader.name!r}.")
        self.memory, self.router, self.reader, self.train = memory, router, reader, train

    def describe(self) -> dict[str, Any]:
        cfg = self.router.config
        d: dict[str, Any] = {"reader": self.reader.name if self.reader else None,
                             "policy": cfg.router_policy, "k": cfg.k, "window": cfg.window,
                             "answer_tokens": cfg.answer_max_tokens}
        if self.train and self.memory.tune is not None:
            d["tune"] = self.memory.tune.describe()
        return d

    def prepare(self, conversation: LocomoConversation) -> dict[str, Any]:
        stats = dict(self.memory.ingest(conversation))
        if self.train:
            stats["adapter"] = self.memory.adapter(conversation)
        return stats

    def answer(self, conversation: LocomoConversation, question: LocomoQuestion) -> ModeAnswer:
        ns = self.memory.namespace(conversation)
        t0 = time.perf_counter()
        result = self.router.route(question.question, ns)
        answer, result = self.router.generate(result)
        ms = (time.perf_counter() - t0) * 1000
        d = result.decision
        return ModeAnswer(prediction=_content(answer),
                          retrieved=[list(h.get("message_ids") or []) for h in result.hits]
                          if d.uses_context else [],
                          latency_ms=ms, memory_tokens=estimate_tokens(result.context),
                          route=d.route,
                          extra={"reasons": d.reasons[:3], "fallbacks": list(d.fallbacks),
                                 "model": result.model})


class FullContextMode:
    """The whole conversation in the prompt, as far as the reader's context window allows.

    The turns are written like retrieved memories (``[date] speaker: text``), oldest first;
    when they do not fit ``reader.context_tokens`` (minus the question, the instructions and
    the answer), the oldest turns are left out and the question counts as not fitting.
    """

    name = "full-context"

    def __init__(self, memory: ConversationMemory, router: Any, reader: Reader) -> None:
        self.memory, self.router, self.reader = memory, router, reader
        self._lines: dict[str, list[str]] = {}

    def describe(self) -> dict[str, Any]:
        return {"reader": self.reader.name, "context_tokens": self.reader.context_tokens,
                "answer_tokens": self.router.config.answer_max_tokens}

    def prepare(self, conversation: LocomoConversation) -> dict[str, Any]:
        from langchain_ragtune.router.prompts import format_memory

        lines = [format_memory({"timestamp": t.occurred_at, "speaker": t.speaker,
                                "text": t.memory_text()}) for t in conversation.turns()]
        self._lines[conversation.sample_id] = lines
        total = self.reader.tokens("\n".join(lines))
        return {"turns": len(lines), "conversation_tokens": total,
                "fits": total <= self._budget("")}

    def _budget(self, question: str) -> int:
        from langchain_ragtune.router.prompts import RETRIEVAL_SYSTEM_PROMPT, user_prompt

        overhead = self.reader.tokens(RETRIEVAL_SYSTEM_PROMPT + user_prompt("retrieval",
                                                                            question, "x"))
        # Chat-template tokens per message and a margin for the tokenizer's own count.
        return self.reader.context_tokens - self.router.config.answer_max_tokens - overhead - 32

    def _context(self, lines: list[str], budget: int) -> tuple[str, int]:
        """The most recent lines that fit ``budget`` tokens, oldest first."""
        kept: list[str] = []
        used = 0
        for line in reversed(lines):
            n = self.reader.tokens(line) + 1
            if used + n > budget:
                break
            kept.append(line)
            used += n
        kept.reverse()
        return "\n".join(kept), len(kept)

    def answer(self, conversation: LocomoConversation, question: LocomoQuestion) -> ModeAnswer:
        from langchain_core.messages import HumanMessage, SystemMessage

        from langchain_ragtune.router.prompts import RETRIEVAL_SYSTEM_PROMPT, user_prompt

        lines = self._lines.get(conversation.sample_id)
        if lines is None:
            self.prepare(conversation)
            lines = self._lines[conversation.sample_id]
        context, kept = self._context(lines, self._budget(question.question))
        t0 = time.perf_counter()
        answer = self.reader.factory(None).invoke(
            [SystemMessage(RETRIEVAL_SYSTEM_PROMPT),
             HumanMessage(user_prompt("retrieval", question.question, context))])
        ms = (time.perf_counter() - t0) * 1000
        return ModeAnswer(prediction=_content(answer), latency_ms=ms,
                          memory_tokens=estimate_tokens(context),
                          extra={"fits": kept == len(lines), "context_turns": kept,
                                 "turns": len(lines)})


def build_modes(names: Sequence[str], memory: ConversationMemory, reader: Reader, *,
                k: int = 10, window: int = 0, answer_tokens: int = 48,
                router_config: Any = None) -> list[Any]:
    """The modes ``names`` (see :data:`ANSWER_MODES`), sharing one router and one memory.

    Raises:
        InvalidInputError: an unknown mode, or an adapter mode with a reader that cannot
            serve adapters.
    """
    unknown = [n for n in names if n not in ANSWER_MODES]
    if unknown:
        raise InvalidInputError(f"unknown mode(s) {unknown}; choose among "
                                f"{', '.join(ANSWER_MODES)}.")
    router = memory.router(reader, k=k, window=window, answer_tokens=answer_tokens,
                           config=router_config)
    out: list[Any] = []
    for n in names:
        if n == "full-context":
            out.append(FullContextMode(memory, router, reader))
        elif n == "routed":
            out.append(RoutedMode(memory, router, reader=reader,
                                  train=memory.tune is not None))
        else:
            out.append(RouteMode(memory, router, n, reader=reader))
    return out
