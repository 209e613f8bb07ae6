"""A small admin client for vLLM's OpenAI-compatible server.

:class:`VLLMAdminClient` (sync) and :class:`AsyncVLLMAdminClient` (its async twin) speak the
few endpoints the serving side needs: ``/health``, ``/v1/models``, runtime
``/v1/load_lora_adapter`` and ``/v1/unload_lora_adapter`` (enabled by
``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``), a plain ``/v1/chat/completions`` for canary
questions, and ``/tokenize`` with ``/v1/completions``' ``prompt_logprobs`` to score a known
answer in one forward pass (:meth:`VLLMAdminClient.score_prompt`). Requests and answers are
tiny pydantic wire models; both clients share the pure parsing functions, so the twins cannot
drift. A connection failure becomes
:class:`~langchain_ragtune.errors.EndpointUnreachableError` naming the endpoint; a refusal
from vLLM becomes :class:`AdapterLoadError` with vLLM's own message.

:func:`validate_adapter` (the one validator, in :mod:`langchain_ragtune.tuning.validate`,
importable from here too) checks an adapter folder before anything is sent to a server.

Tests can pass ``transport=httpx.MockTransport(handler)`` to either client.

Example:
    >>> from langchain_ragtune.serving.client import VLLMAdminClient   # doctest: +SKIP
    >>> with VLLMAdminClient("http://127.0.0.1:8765") as vllm:         # doctest: +SKIP
    ...     vllm.load_adapter("user-42-v3-a1b2c3", "/var/lib/ragtune/adapters/user-42/v3")
    ...     sorted(vllm.adapters())
    ['user-42-v3-a1b2c3']
"""

from __future__ import annotations

import functools
import json
import os
import ssl
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

from langchain_ragtune.errors import (
    AdapterLoadError,
    EndpointUnreachableError,
    ServingError,
)
from langchain_ragtune.tuning.validate import find_adapter_problems, validate_adapter

__all__ = [
    "AdapterLoadError",
    "AsyncVLLMAdminClient",
    "ChatAnswer",
    "LoadLoRAAdapterRequest",
    "ModelCard",
    "TokenScore",
    "UnloadLoRAAdapterRequest",
    "VLLMAdminClient",
    "find_adapter_problems",
    "validate_adapter",
]


# --- wire models ---------------------------------------------------------------------------


class LoadLoRAAdapterRequest(BaseModel):
    """Body of ``POST /v1/load_lora_adapter``.

    ``load_inplace`` is deliberately absent: reloading a name in place under load returned
    corrupted answers, so every version is loaded under a new name instead.
    """

    model_config = ConfigDict(extra="forbid")
    lora_name: str = Field(min_length=1)
    lora_path: str = Field(min_length=1)


class UnloadLoRAAdapterRequest(BaseModel):
    """Body of ``POST /v1/unload_lora_adapter``."""

    model_config = ConfigDict(extra="forbid")
    lora_name: str = Field(min_length=1)


class ModelCard(BaseModel):
    """One entry of ``GET /v1/models``: the base model or a loaded adapter.

    Attributes:
        id: the name requests use as ``model``.
        root: the folder it was loaded from.
        parent: for an adapter, the base model's served name; ``None`` for the base model.
    """

    model_config = ConfigDict(extra="ignore")
    id: str
    root: str | None = None
    parent: str | None = None
    max_model_len: int | None = None

    @property
    def is_adapter(self) -> bool:
        return self.parent is not None


class ChatAnswer(BaseModel):
    """The parts of a chat completion the serving side uses (canaries, the swap bench)."""

    text: str
    completion_tokens: int = 0
    finish_reason: str | None = None


class TokenScore(BaseModel):
    """One prompt token as the model scored it, given every token before it.

    Attributes:
        token_id: the token.
        rank: its rank among the model's next-token choices at that position (1: the greedy
            choice, what temperature-0 decoding would have produced there).
        logprob: its log-probability there.
        lead: its log-probability minus the best other token's (negative: another token
            leads); only when scored ``with_leads``.
    """

    token_id: int
    rank: int
    logprob: float
    lead: float | None = None


# --- pure request/response handling shared by both clients --------------------------------


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500]
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            return str(err.get("message") or err)[:500]
        return str(err)[:500]
    return str(body)[:500]


def _parse_models(response: httpx.Response, endpoint: str) -> list[ModelCard]:
    _raise_for_status(response, endpoint, "list models")
    return [ModelCard.model_validate(m) for m in response.json().get("data", [])]


def _raise_if_unknown_model(response: httpx.Response, endpoint: str, model: str) -> None:
    if response.status_code == 404:
        raise AdapterLoadError(
            f"vLLM at {endpoint} does not serve model {model!r} (404: {_error_message(response)}); "
            "load the adapter first, or use the base model's name.",
            endpoint=endpoint, status_code=404)


def _parse_chat(response: httpx.Response, endpoint: str, model: str) -> ChatAnswer:
    _raise_if_unknown_model(response, endpoint, model)
    _raise_for_status(response, endpoint, f"chat with {model!r}")
    body = response.json()
    choice = body["choices"][0]
    return ChatAnswer(text=choice["message"].get("content") or "",
                      completion_tokens=(body.get("usage") or {}).get("completion_tokens", 0),
                      finish_reason=choice.get("finish_reason"))


def _stream_chunk(answer: ChatAnswer, line: str) -> bool:
    """Add one server-sent event of a streamed completion to ``answer``; True at the end."""
    if not line.startswith("data:"):
        return False
    data = line[5:].strip()
    if data == "[DONE]":
        return True
    choice = (json.loads(data).get("choices") or [{}])[0]
    piece = (choice.get("delta") or {}).get("content") or ""
    if piece:
        answer.text += piece
        answer.completion_tokens += 1
    answer.finish_reason = choice.get("finish_reason") or answer.finish_reason
    return False


def _tokenize_body(messages: Sequence[Mapping[str, str]], *,
                   continue_final_message: bool) -> dict[str, Any]:
    # Either the prompt a chat request would get (ending in the assistant header), or that
    # prompt with the last (assistant) message's text appended, left open for more.
    return {"messages": [dict(m) for m in messages],
            "add_generation_prompt": not continue_final_message,
            "continue_final_message": continue_final_message}


def _parse_tokens(response: httpx.Response, endpoint: str) -> list[int]:
    _raise_for_status(response, endpoint, "tokenize")
    return [int(t) for t in response.json()["tokens"]]


def _score_body(model: str, prompts: Sequence[Sequence[int]], *,
                with_leads: bool = False) -> dict[str, Any]:
    # One forward pass over each prompt: prompt_logprobs=0 returns each prompt token's own
    # logprob and rank; the one generated token is not used. Several prompts go in one
    # request: vLLM adds them to its engine together, so they share one prefill step
    # (concurrent requests usually did too; one request makes sure of it).
    prompt = list(prompts[0]) if len(prompts) == 1 else [list(p) for p in prompts]
    return {"model": model, "prompt": prompt, "max_tokens": 1, "temperature": 0.0,
            # the two best next tokens besides each prompt token's own: its lead over the
            # best other is then known whether it is the greedy choice or not
            "prompt_logprobs": 2 if with_leads else 0}


def _parse_scores(response: httpx.Response, endpoint: str, model: str,
                  prompts: Sequence[tuple[Sequence[int], int]]) -> list[list[TokenScore]]:
    _raise_if_unknown_model(response, endpoint, model)
    _raise_for_status(response, endpoint, f"score a prompt with {model!r}")
    choices = response.json()["choices"]
    if len(choices) != len(prompts):
        raise ServingError(f"vLLM at {endpoint} returned {len(choices)} choices for "
                           f"{len(prompts)} prompts.")
    # Choices carry the index of their prompt (OpenAI's completions format).
    choices = sorted(choices, key=lambda c: c.get("index", 0))
    return [_prompt_scores(choice, endpoint, token_ids, start)
            for choice, (token_ids, start) in zip(choices, prompts)]


def _prompt_scores(choice: Mapping[str, Any], endpoint: str, token_ids: Sequence[int],
                   start: int) -> list[TokenScore]:
    rows = choice.get("prompt_logprobs") or []
    if len(rows) != len(token_ids):
        raise ServingError(f"vLLM at {endpoint} returned {len(rows)} prompt logprobs for "
                           f"{len(token_ids)} prompt tokens; it must support prompt_logprobs.")
    scores = []
    for position in range(start, len(token_ids)):
        row = rows[position] or {}
        entry = row.get(str(token_ids[position]))
        if entry is None:
            raise ServingError(f"vLLM at {endpoint} returned no logprob for prompt token "
                               f"{position} ({token_ids[position]}).")
        # Alternatives are there only when asked for (prompt_logprobs > 0).
        others = [float(v["logprob"]) for k, v in row.items() if k != str(token_ids[position])]
        logprob = float(entry["logprob"])
        scores.append(TokenScore(token_id=token_ids[position], rank=int(entry["rank"]),
                                 logprob=logprob,
                                 lead=logprob - max(others) if others else None))
    return scores


def _check_prompts(prompts: Sequence[tuple[Sequence[int], int]]) -> None:
    if not prompts:
        raise ValueError("no prompts to score: pass at least one (token_ids, start) pair.")
    for token_ids, start in prompts:
        if not 1 <= start < len(token_ids):
            raise ValueError(f"start={start} must point into the prompt (1..{len(token_ids) - 1})"
                             ": the first token has no score and at least one must be scored.")


def _raise_for_status(response: httpx.Response, endpoint: str, action: str) -> None:
    if response.status_code >= 400:
        raise ServingError(f"vLLM at {endpoint} failed to {action}: HTTP "
                           f"{response.status_code}: {_error_message(response)}")


def _check_adapter_response(response: httpx.Response, endpoint: str, action: str,
                            name: str) -> None:
    if response.status_code < 400:
        return
    msg = _error_message(response)
    hint = ""
    if action == "load" and "already" in msg.lower():
        hint = (" Every adapter version needs a new name (make_adapter_name); ragtune never "
                "reloads a name in place.")
    raise AdapterLoadError(
        f"vLLM at {endpoint} refused to {action} adapter {name!r} (HTTP "
        f"{response.status_code}): {msg}.{hint}",
        endpoint=endpoint, status_code=response.status_code)


def _chat_body(model: str, messages: Sequence[Mapping[str, str]], max_tokens: int,
               temperature: float, extra: Mapping[str, Any] | None) -> dict[str, Any]:
    return {"model": model, "messages": [dict(m) for m in messages], "max_tokens": max_tokens,
            "temperature": temperature, **dict(extra or {})}


def _unreachable(endpoint: str, exc: Exception) -> EndpointUnreachableError:
    return EndpointUnreachableError(
        f"vLLM endpoint {endpoint} is unreachable ({type(exc).__name__}: {exc}). Start it with "
        "`ragtune serve`, or point RAGTUNE_VLLM_URLS at a running server.")


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One TLS context for every admin client of this process.

    httpx builds a new one for each client it creates, loading the CA bundle: about 30 ms of
    CPU each on the 2-core development machine, which every publish paid twice inside its
    swap time (a client for the load, one per endpoint for the canaries), on plain-http
    endpoints that never use it. With a shared context a client takes about 0.1 ms.
    """
    return httpx.create_ssl_context()


class _Base:
    def __init__(self, url: str, *, timeout: float = 120.0, api_key: str | None = None) -> None:
        if not url.startswith(("http://", "https://")):
            raise ServingError(f"endpoint {url!r} is not an http(s) URL; use e.g. "
                               "'http://127.0.0.1:8765'.")
        self.url = url.rstrip("/")
        self.timeout = timeout
        if api_key is None:  # the key ServeConfig would give (RAGTUNE_VLLM_API_KEY)
            api_key = os.environ.get("RAGTUNE_VLLM_API_KEY") or None
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


# --- sync ----------------------------------------------------------------------------------


class VLLMAdminClient(_Base):
    """Synchronous admin client for one vLLM endpoint.

    Args:
        url: the server's base URL (no ``/v1``), e.g. ``http://127.0.0.1:8765``.
        timeout: seconds per request.
        api_key: sent as a bearer token when the server was started with ``--api-key``.
        transport: an httpx transport (tests pass ``httpx.MockTransport``).

    Example:
        >>> with VLLMAdminClient("http://127.0.0.1:8765") as c:   # doctest: +SKIP
        ...     c.health()
        True
    """

    def __init__(self, url: str, *, timeout: float = 120.0, api_key: str | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        super().__init__(url, timeout=timeout, api_key=api_key)
        self._http = httpx.Client(base_url=self.url, timeout=timeout, headers=self.headers,
                                  transport=transport, verify=_tls_context())

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise _unreachable(self.url, exc) from exc

    def health(self) -> bool:
        """True when ``/health`` answers 200; False for another status.

        Raises:
            EndpointUnreachableError: nothing answers at the endpoint.
        """
        return self._request("GET", "/health").status_code == 200

    def models(self) -> list[ModelCard]:
        """Everything the server serves: the base model and loaded adapters."""
        return _parse_models(self._request("GET", "/v1/models"), self.url)

    def adapters(self) -> dict[str, str]:
        """Loaded adapters as ``{name: folder}``."""
        return {m.id: m.root or "" for m in self.models() if m.is_adapter}

    def load_adapter(self, name: str, path: str | Path) -> None:
        """Load an adapter under a new ``name`` (never in place).

        Raises:
            AdapterLoadError: vLLM refused it (duplicate name, bad adapter...).
        """
        body = LoadLoRAAdapterRequest(lora_name=name, lora_path=str(path)).model_dump()
        _check_adapter_response(self._request("POST", "/v1/load_lora_adapter", json=body),
                                self.url, "load", name)

    def unload_adapter(self, name: str, *, missing_ok: bool = True) -> bool:
        """Unload ``name``; returns False if it was not loaded (and ``missing_ok``)."""
        body = UnloadLoRAAdapterRequest(lora_name=name).model_dump()
        response = self._request("POST", "/v1/unload_lora_adapter", json=body)
        if missing_ok and response.status_code in (400, 404) and name not in self.adapters():
            return False
        _check_adapter_response(response, self.url, "unload", name)
        return True

    def chat(self, model: str, messages: Sequence[Mapping[str, str]], *, max_tokens: int = 32,
             temperature: float = 0.0, extra: Mapping[str, Any] | None = None,
             stop_when: Callable[[str], bool] | None = None) -> ChatAnswer:
        """One chat completion (greedy by default), e.g. a canary question.

        Args:
            stop_when: ``stop_when(text_so_far)``: stream the answer and stop reading as soon
                as it returns True (closing the stream aborts the request in vLLM). A canary
                then costs only the tokens up to its expected answer, not ``max_tokens``.
        """
        body = _chat_body(model, messages, max_tokens, temperature, extra)
        if stop_when is None:
            return _parse_chat(self._request("POST", "/v1/chat/completions", json=body),
                               self.url, model)
        body["stream"] = True
        answer = ChatAnswer(text="")
        try:
            with self._http.stream("POST", "/v1/chat/completions", json=body) as response:
                if response.status_code >= 400:
                    response.read()
                    _parse_chat(response, self.url, model)  # raises with vLLM's message
                for line in response.iter_lines():
                    if _stream_chunk(answer, line) or stop_when(answer.text):
                        break
        except httpx.TransportError as exc:
            raise _unreachable(self.url, exc) from exc
        return answer

    def tokenize_chat(self, messages: Sequence[Mapping[str, str]], *,
                      continue_final_message: bool = False) -> list[int]:
        """The server's token ids of a chat prompt (its own chat template and tokenizer).

        Args:
            continue_final_message: the last message is the assistant's text so far, left
                open (no end-of-turn token); else the prompt ends where an answer would start.
        """
        body = _tokenize_body(messages, continue_final_message=continue_final_message)
        return _parse_tokens(self._request("POST", "/tokenize", json=body), self.url)

    def score_prompt(self, model: str, token_ids: Sequence[int], *,
                     start: int) -> list[TokenScore]:
        """Score ``token_ids[start:]`` under ``model`` in one forward pass (teacher forcing).

        Every token with ``rank == 1`` is the one greedy decoding picks after the tokens
        before it, so all ranks 1 means: asked the prompt ``token_ids[:start]``, the model
        answers exactly ``token_ids[start:]``. One prefill step instead of one decoding step
        per token, which is what makes canary checks under load fast.

        Raises:
            AdapterLoadError: 404, ``model`` is not loaded.
            ServingError: the server failed or returned no prompt logprobs.
        """
        return self.score_prompts(model, [(token_ids, start)])[0]

    def score_prompts(self, model: str, prompts: Sequence[tuple[Sequence[int], int]], *,
                      with_leads: bool = False) -> list[list[TokenScore]]:
        """:meth:`score_prompt` for several ``(token_ids, start)`` pairs in one request.

        vLLM schedules the prompts of one request into the same step; sent as separate
        requests, one that arrives while the other's step runs waits for it.
        ``with_leads`` also fills each score's ``lead`` (vLLM returns the two best
        alternatives per position).
        """
        _check_prompts(prompts)
        body = _score_body(model, [ids for ids, _ in prompts], with_leads=with_leads)
        response = self._request("POST", "/v1/completions", json=body)
        return _parse_scores(response, self.url, model, prompts)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> VLLMAdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- async ---------------------------------------------------------------------------------


class AsyncVLLMAdminClient(_Base):
    """The async twin of :class:`VLLMAdminClient` (same methods, awaitable).

    Example:
        >>> async with AsyncVLLMAdminClient("http://127.0.0.1:8765") as c:   # doctest: +SKIP
        ...     await c.models()
    """

    def __init__(self, url: str, *, timeout: float = 120.0, api_key: str | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        super().__init__(url, timeout=timeout, api_key=api_key)
        self._http = httpx.AsyncClient(base_url=self.url, timeout=timeout, headers=self.headers,
                                       transport=transport, verify=_tls_context())

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise _unreachable(self.url, exc) from exc

    async def health(self) -> bool:
        return (await self._request("GET", "/health")).status_code == 200

    async def models(self) -> list[ModelCard]:
        return _parse_models(await self._request("GET", "/v1/models"), self.url)

    async def adapters(self) -> dict[str, str]:
        return {m.id: m.root or "" for m in await self.models() if m.is_adapter}

    async def load_adapter(self, name: str, path: str | Path) -> None:
        body = LoadLoRAAdapterRequest(lora_name=name, lora_path=str(path)).model_dump()
        _check_adapter_response(await self._request("POST", "/v1/load_lora_adapter", json=body),
                                self.url, "load", name)

    async def unload_adapter(self, name: str, *, missing_ok: bool = True) -> bool:
        body = UnloadLoRAAdapterRequest(lora_name=name).model_dump()
        response = await self._request("POST", "/v1/unload_lora_adapter", json=body)
        if (missing_ok and response.status_code in (400, 404)
                and name not in await self.adapters()):
            return False
        _check_adapter_response(response, self.url, "unload", name)
        return True

    async def chat(self, model: str, messages: Sequence[Mapping[str, str]], *,
                   max_tokens: int = 32, temperature: float = 0.0,
                   extra: Mapping[str, Any] | None = None) -> ChatAnswer:
        body = _chat_body(model, messages, max_tokens, temperature, extra)
        return _parse_chat(await self._request("POST", "/v1/chat/completions", json=body),
                           self.url, model)

    async def tokenize_chat(self, messages: Sequence[Mapping[str, str]], *,
                            continue_final_message: bool = False) -> list[int]:
        body = _tokenize_body(messages, continue_final_message=continue_final_message)
        return _parse_tokens(await self._request("POST", "/tokenize", json=body), self.url)

    async def score_prompt(self, model: str, token_ids: Sequence[int], *,
                           start: int) -> list[TokenScore]:
        return (await self.score_prompts(model, [(token_ids, start)]))[0]

    async def score_prompts(self, model: str, prompts: Sequence[tuple[Sequence[int], int]], *,
                            with_leads: bool = False) -> list[list[TokenScore]]:
        _check_prompts(prompts)
        body = _score_body(model, [ids for ids, _ in prompts], with_leads=with_leads)
        response = await self._request("POST", "/v1/completions", json=body)
        return _parse_scores(response, self.url, model, prompts)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncVLLMAdminClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
