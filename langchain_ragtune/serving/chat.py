"""LangChain chat models for a namespace: vLLM through ChatOpenAI, or in-process transformers.

:func:`create_chat_model` returns a langchain-openai ``ChatOpenAI`` pointed at the vLLM
endpoint whose ``model`` is the namespace's current adapter (or the base model when the
namespace has none). The name is re-read from the registry (cached for ``refresh_s``) on
every request, so a long-lived chat model follows a publish: after the switch it asks for
the new name, and requests already in flight finish on the old one before the publisher
unloads it. A 404 for a just-unloaded name is retried once with the fresh name.

:class:`InProcessChatModel` has the same interface without vLLM (notebooks, macOS, the
router's fallback): transformers + peft in this process, adapters loaded once with
``load_adapter`` and switched with ``set_adapter``, prompts built with the model's own chat
template. Sync, async and streaming work on both.

Example:
    >>> from langchain_ragtune.serving.chat import create_chat_model      # doctest: +SKIP
    >>> llm = create_chat_model(("user-42",), registry=registry)          # doctest: +SKIP
    >>> llm.invoke("What is my dog called?").content                      # doctest: +SKIP
    'Your dog is called Biscuit.'
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, Field, PrivateAttr

from langchain_ragtune.config import ModelConfig, ServeConfig
from langchain_ragtune.errors import DependencyMissingError, EndpointUnreachableError

if TYPE_CHECKING:  # pragma: no cover
    from langchain_openai import ChatOpenAI

__all__ = [
    "AdapterTarget",
    "InProcessChatModel",
    "ModelResolver",
    "create_chat_model",
    "endpoint_for",
    "messages_to_dicts",
]


# --- which model serves a namespace ----------------------------------------------------------


@dataclass(frozen=True)
class AdapterTarget:
    """What a request should run on: an adapter (name + folder) or the base model."""

    name: str
    path: str | None = None  # None: the base model
    adapter_id: int | None = None

    @property
    def is_base(self) -> bool:
        return self.path is None


class ModelResolver:
    """Resolve a namespace to its current adapter, caching the answer for ``ttl_s``.

    Args:
        namespace: the namespace, or ``None`` for the base model.
        registry: an :class:`~langchain_ragtune.tuning.registry.AdapterRegistry` (anything
            with ``current(namespace)`` returning a record with ``id``, ``name``, ``path``).
        base_name: the served name of the base model.
        ttl_s: how long an answer is reused before the registry is asked again.

    Example:
        >>> ModelResolver(None, None, "base").target().name
        'base'
    """

    def __init__(self, namespace: Sequence[str] | None, registry: Any, base_name: str,
                 ttl_s: float = 1.0) -> None:
        self.namespace = tuple(namespace) if namespace is not None else None
        self.registry = registry
        self.base = AdapterTarget(base_name)
        self.ttl_s = ttl_s
        self._cached: tuple[float, AdapterTarget] | None = None
        self._lock = threading.Lock()

    def target(self) -> AdapterTarget:
        """The current target (from cache when fresh)."""
        if self.namespace is None or self.registry is None:
            return self.base
        with self._lock:
            now = time.monotonic()
            if self._cached and now - self._cached[0] < self.ttl_s:
                return self._cached[1]
            record = self.registry.current(self.namespace)
            target = (AdapterTarget(record.name, str(record.path), record.id) if record
                      else self.base)
            self._cached = (now, target)
            return target

    def invalidate(self) -> None:
        """Forget the cached answer (after a 404 for a name that was just unloaded)."""
        with self._lock:
            self._cached = None


def endpoint_for(config: ServeConfig, namespace: Sequence[str] | None = None) -> str:
    """The endpoint a namespace's requests go to.

    With several replicas (``RAGTUNE_VLLM_URLS``) a namespace always lands on the same one,
    which keeps its adapter warm in that server's LoRA slots. The choice is rendezvous
    (highest-random-weight) hashing: each replica gets a hash of (namespace, replica) and the
    highest wins, so every app replica computes the same placement from the endpoint list in
    any order, and adding or removing a replica moves only the namespaces it gains or held
    (a modulo hash would move most of them, and their adapters would load cold again).

    Example:
        >>> endpoint_for(ServeConfig(port=9000))
        'http://127.0.0.1:9000'
    """
    urls = [u.rstrip("/") for u in config.vllm_urls] or [f"http://{config.host}:{config.port}"]
    if len(urls) == 1 or namespace is None:
        return urls[0]
    key = "\x1f".join(namespace).encode()

    def weight(url: str) -> int:
        digest = hashlib.blake2b(key + b"\x1e" + url.encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big")

    return max(urls, key=lambda u: (weight(u), u))


# --- vLLM through ChatOpenAI -----------------------------------------------------------------


def _chat_openai_class() -> type:
    """Build the ChatOpenAI subclass lazily: langchain-openai is an optional extra."""
    global _RAGTUNE_CHAT_OPENAI
    if _RAGTUNE_CHAT_OPENAI is not None:
        return _RAGTUNE_CHAT_OPENAI
    try:
        import openai
        from langchain_openai import ChatOpenAI
    except ImportError:
        raise DependencyMissingError("langchain-openai", "serve",
                                     "A chat model for the vLLM endpoint") from None

    class RagtuneChatOpenAI(ChatOpenAI):
        """ChatOpenAI whose ``model`` follows the namespace's current adapter.

        Connection failures become :class:`EndpointUnreachableError` naming the endpoint,
        so callers (the router's fallback) can catch one library error.
        """

        _resolver: ModelResolver | None = PrivateAttr(default=None)
        _on_missing: Callable[[AdapterTarget], None] | None = PrivateAttr(default=None)

        def _get_request_payload(self, input_: Any, *, stop: list[str] | None = None,
                                 **kwargs: Any) -> dict:
            payload = super()._get_request_payload(input_, stop=stop, **kwargs)
            if self._resolver is not None:
                payload["model"] = self._resolver.target().name
            return payload

        def _unreachable(self, exc: Exception) -> EndpointUnreachableError:
            return EndpointUnreachableError(
                f"vLLM endpoint {self.openai_api_base} is unreachable ({exc}). Start it with "
                "`ragtune serve`, or point RAGTUNE_VLLM_URLS at a running server.")

        def _recover(self) -> None:
            """After a 404: re-read the current name; load it if this server lacks it."""
            assert self._resolver is not None
            self._resolver.invalidate()
            if self._on_missing is not None:
                target = self._resolver.target()
                if not target.is_base:
                    self._on_missing(target)

        def _generate(self, *args: Any, **kwargs: Any) -> ChatResult:
            try:
                try:
                    return super()._generate(*args, **kwargs)
                except openai.NotFoundError:
                    if self._resolver is None:
                        raise
                    self._recover()
                    return super()._generate(*args, **kwargs)
            except openai.APIConnectionError as exc:
                raise self._unreachable(exc) from exc

        async def _agenerate(self, *args: Any, **kwargs: Any) -> ChatResult:
            try:
                try:
                    return await super()._agenerate(*args, **kwargs)
                except openai.NotFoundError:
                    if self._resolver is None:
                        raise
                    self._recover()
                    return await super()._agenerate(*args, **kwargs)
            except openai.APIConnectionError as exc:
                raise self._unreachable(exc) from exc

        def _stream(self, *args: Any, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
            started = False
            try:
                try:
                    for chunk in super()._stream(*args, **kwargs):
                        started = True
                        yield chunk
                except openai.NotFoundError:
                    if self._resolver is None or started:
                        raise
                    self._recover()
                    yield from super()._stream(*args, **kwargs)
            except openai.APIConnectionError as exc:
                raise self._unreachable(exc) from exc

        async def _astream(self, *args: Any, **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
            started = False
            try:
                try:
                    async for chunk in super()._astream(*args, **kwargs):
                        started = True
                        yield chunk
                except openai.NotFoundError:
                    if self._resolver is None or started:
                        raise
                    self._recover()
                    async for chunk in super()._astream(*args, **kwargs):
                        yield chunk
            except openai.APIConnectionError as exc:
                raise self._unreachable(exc) from exc

    _RAGTUNE_CHAT_OPENAI = RagtuneChatOpenAI
    return RagtuneChatOpenAI


_RAGTUNE_CHAT_OPENAI: type | None = None


def create_chat_model(namespace: Sequence[str] | None = None, *, registry: Any = None,
                      config: ServeConfig | None = None, refresh_s: float = 1.0,
                      load_missing: bool = True, **kwargs: Any) -> ChatOpenAI:
    """A LangChain chat model answering with ``namespace``'s current adapter on vLLM.

    Args:
        namespace: whose adapter to use; ``None`` (or no ``registry``) uses the base model.
        registry: the adapter registry (see :mod:`langchain_ragtune.tuning.registry`).
        config: serving settings; ``None`` reads ``RAGTUNE_*`` variables.
        refresh_s: how long a resolved adapter name is reused before the registry is asked
            again (the publisher drains old names for longer than this).
        load_missing: when the server answers 404 for the current adapter (a restarted
            server, or one beyond the reconciled LRU set), load it there and retry once.
        **kwargs: passed to ``ChatOpenAI`` (``temperature``, ``max_tokens``,
            ``streaming``...). Defaults: ``temperature=0``, ``max_retries=1``.

    Returns:
        A ``ChatOpenAI`` (subclass): ``invoke``, ``ainvoke``, ``stream``, ``astream``,
        ``batch``, tool binding and structured output work as usual.

    Raises:
        DependencyMissingError: langchain-openai is not installed.

    Example:
        >>> llm = create_chat_model(config=ServeConfig(port=9000))
        >>> llm.model_name, llm.openai_api_base
        ('base', 'http://127.0.0.1:9000/v1')
    """
    config = config or ServeConfig.from_env()
    cls = _chat_openai_class()
    resolver = ModelResolver(namespace, registry, config.served_model_name, ttl_s=refresh_s)
    url = endpoint_for(config, resolver.namespace)
    params: dict[str, Any] = {
        "model": resolver.target().name,
        "base_url": f"{url}/v1",
        "api_key": config.vllm_api_key or "EMPTY",  # vLLM without a key accepts any
        "temperature": 0.0,
        "timeout": config.request_timeout_s,
        "max_retries": 1,
    }
    params.update(kwargs)
    model = cls(**params)
    if registry is not None and namespace is not None:
        model._resolver = resolver
        if load_missing:
            model._on_missing = _loader(url, config)
    return model


def _loader(url: str, config: ServeConfig) -> Callable[[AdapterTarget], None]:
    def load(target: AdapterTarget) -> None:
        from langchain_ragtune.serving.client import AdapterLoadError, VLLMAdminClient

        with VLLMAdminClient(url, timeout=config.request_timeout_s,
                             api_key=config.vllm_api_key) as client:
            if target.name not in client.adapters():
                try:
                    client.load_adapter(target.name, target.path or "")
                except AdapterLoadError as exc:  # loaded concurrently by another caller
                    if "already" not in str(exc).lower():
                        raise

    return load


# --- in-process backend ----------------------------------------------------------------------


def messages_to_dicts(messages: Sequence[BaseMessage]) -> list[dict[str, str]]:
    """LangChain messages as chat-template dicts (``role``/``content``).

    Example:
        >>> from langchain_core.messages import HumanMessage, SystemMessage
        >>> messages_to_dicts([SystemMessage("be brief"), HumanMessage("hi")])
        [{'role': 'system', 'content': 'be brief'}, {'role': 'user', 'content': 'hi'}]
    """
    roles = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool"}
    out = []
    for m in messages:
        content = m.content if isinstance(m.content, str) else "".join(
            part.get("text", "") if isinstance(part, dict) else str(part) for part in m.content)
        out.append({"role": roles.get(m.type, m.type), "content": content})
    return out


class _Engine:
    """One loaded base model (+ its peft adapters) per process and base folder.

    Generation and adapter switching share a lock: peft's active adapter is model state.
    """

    _engines: dict[str, _Engine] = {}
    _engines_lock = threading.Lock()

    def __init__(self, base_model: Path, threads: int) -> None:
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError:
            raise DependencyMissingError("transformers", "train",
                                         "The in-process chat backend") from None
        torch.set_num_threads(threads)
        self.tokenizer = AutoTokenizer.from_pretrained(base_model)
        # float32 on CPU: bf16 matmuls are slower on CPUs without AMX.
        self.model: Any = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
        self.model.eval()
        self.adapters: dict[str, str] = {}
        self.lock = threading.Lock()

    @classmethod
    def get(cls, base_model: Path, threads: int) -> _Engine:
        key = str(base_model.resolve())
        with cls._engines_lock:
            if key not in cls._engines:
                cls._engines[key] = cls(base_model, threads)
            return cls._engines[key]

    def _activate(self, target: AdapterTarget) -> None:
        """Make ``target`` the active adapter (caller holds the lock)."""
        if target.is_base:
            return
        if target.name not in self.adapters:
            from peft import PeftModel

            if not self.adapters:
                self.model = PeftModel.from_pretrained(self.model, target.path,
                                                       adapter_name=target.name)
            else:
                self.model.load_adapter(target.path, adapter_name=target.name)
            self.model.eval()
            self.adapters[target.name] = str(target.path)
        self.model.set_adapter(target.name)

    def unload(self, name: str) -> None:
        with self.lock:
            if name in self.adapters and len(self.adapters) > 1:
                self.model.delete_adapter(name)
                del self.adapters[name]

    def encode(self, messages: list[dict[str, str]]) -> Any:
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                  return_tensors="pt", return_dict=True)

    def generate(self, target: AdapterTarget, inputs: Any, gen_kwargs: dict[str, Any],
                 streamer: Any = None) -> Any:
        import contextlib

        import torch

        with self.lock:
            self._activate(target)
            no_adapter = (self.model.disable_adapter() if target.is_base and self.adapters
                          else contextlib.nullcontext())
            with torch.inference_mode(), no_adapter:
                return self.model.generate(**inputs, **gen_kwargs, streamer=streamer,
                                           pad_token_id=self.tokenizer.pad_token_id)


def _cut_at_stop(text: str, stop: list[str] | None) -> tuple[str, bool]:
    if not stop:
        return text, False
    cuts = [text.find(s) for s in stop if s and s in text]
    return (text[:min(cuts)], True) if cuts else (text, False)


class InProcessChatModel(BaseChatModel):
    """A chat model running the base model (+ the namespace's adapter) in this process.

    The same interface as :func:`create_chat_model`'s model, for machines without vLLM.
    The base model is loaded once per process; each adapter once, then switched with peft's
    ``set_adapter`` (the base model answers with adapters disabled). Greedy decoding unless
    ``temperature > 0``.

    Args:
        namespace: whose current adapter to use (with ``registry``); ``None``: base model.
        registry: the adapter registry.
        adapter_path: use this adapter folder directly (no registry).
        base_model: the base model folder; default: the configured/prepared one.
        max_tokens: most new tokens per answer.
        temperature: 0 for greedy decoding.
        threads: torch threads.

    Example:
        >>> llm = InProcessChatModel(max_tokens=16)                      # doctest: +SKIP
        >>> llm.invoke("What is the capital of France?").content        # doctest: +SKIP
        'The capital of France is Paris.'
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    namespace: tuple[str, ...] | None = None
    registry: Any = Field(default=None, exclude=True)
    adapter_path: str | None = None
    base_model: str | None = None
    max_tokens: int = 128
    temperature: float = 0.0
    threads: int = 2
    refresh_s: float = 1.0

    _resolver: ModelResolver | None = PrivateAttr(default=None)

    @property
    def _llm_type(self) -> str:
        return "ragtune-inprocess"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"base_model": self.base_model, "namespace": self.namespace,
                "adapter_path": self.adapter_path, "max_tokens": self.max_tokens,
                "temperature": self.temperature}

    def _base_path(self) -> Path:
        if self.base_model:
            return Path(self.base_model)
        from langchain_ragtune.models import prepare_base_model

        path = prepare_base_model(ModelConfig.from_env(), quiet=True)
        self.base_model = str(path)
        return path

    def current_target(self) -> AdapterTarget:
        """The adapter (or base model) the next answer comes from."""
        if self.adapter_path:
            return AdapterTarget(f"path:{Path(self.adapter_path).resolve()}", self.adapter_path)
        if self._resolver is None:
            self._resolver = ModelResolver(self.namespace, self.registry, "base",
                                           ttl_s=self.refresh_s)
        return self._resolver.target()

    def _prepare(self, messages: list[BaseMessage], kwargs: dict[str, Any]
                 ) -> tuple[_Engine, AdapterTarget, Any, dict[str, Any]]:
        engine = _Engine.get(self._base_path(), self.threads)
        target = self.current_target()
        inputs = engine.encode(messages_to_dicts(messages))
        temperature = kwargs.get("temperature", self.temperature)
        gen: dict[str, Any] = {"max_new_tokens": kwargs.get("max_tokens", self.max_tokens)}
        gen.update({"do_sample": True, "temperature": temperature} if temperature > 0
                   else {"do_sample": False})
        return engine, target, inputs, gen

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None,
                  **kwargs: Any) -> ChatResult:
        engine, target, inputs, gen = self._prepare(messages, kwargs)
        output = engine.generate(target, inputs, gen)
        n_in = inputs["input_ids"].shape[1]
        new_ids = output[0][n_in:]
        text, stopped = _cut_at_stop(engine.tokenizer.decode(new_ids, skip_special_tokens=True),
                                     stop)
        finish = "stop" if stopped or len(new_ids) < gen["max_new_tokens"] else "length"
        message = AIMessage(content=text.strip(), response_metadata={
            "model_name": target.name, "finish_reason": finish},
            usage_metadata={"input_tokens": n_in, "output_tokens": len(new_ids),
                            "total_tokens": n_in + len(new_ids)})
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None,
                **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        from transformers import TextIteratorStreamer

        engine, target, inputs, gen = self._prepare(messages, kwargs)
        streamer = TextIteratorStreamer(engine.tokenizer, skip_prompt=True,
                                        skip_special_tokens=True)
        errors: list[BaseException] = []

        def run() -> None:
            try:
                engine.generate(target, inputs, gen, streamer=streamer)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                errors.append(exc)
                streamer.end()

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        emitted = ""
        for piece in streamer:
            if not piece:
                continue
            candidate, stopped = _cut_at_stop(emitted + piece, stop)
            delta = candidate[len(emitted):]
            emitted = candidate
            if delta:
                chunk = ChatGenerationChunk(message=AIMessageChunk(content=delta))
                if run_manager:
                    run_manager.on_llm_new_token(delta, chunk=chunk)
                yield chunk
            if stopped:
                break
        worker.join()
        if errors:
            raise errors[0]
        yield ChatGenerationChunk(message=AIMessageChunk(
            content="", response_metadata={"model_name": target.name}))

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                       run_manager: AsyncCallbackManagerForLLMRun | None = None,
                       **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        import asyncio

        # Generation is CPU-bound and blocking: run the sync stream in a worker thread and
        # hand chunks over through a queue, so the event loop stays responsive.
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        done = object()

        def pump() -> None:
            try:
                for chunk in self._stream(messages, stop=stop, **kwargs):
                    loop.call_soon_threadsafe(queue.put_nowait, chunk)
            except BaseException as exc:  # noqa: BLE001
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            loop.call_soon_threadsafe(queue.put_nowait, done)

        threading.Thread(target=pump, daemon=True).start()
        while True:
            item = await queue.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            if run_manager and item.text:
                await run_manager.on_llm_new_token(item.text, chunk=item)
            yield item
