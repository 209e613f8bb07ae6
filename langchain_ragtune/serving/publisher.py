"""Publish adapter versions to vLLM without downtime, and restore them after a restart.

Publishing a new version of a namespace's adapter, in this order, so that any failure
leaves the old version serving:

1. **validate** the folder against the server's limits and the base model
   (:func:`~langchain_ragtune.tuning.validate.validate_adapter`), before vLLM sees it;
2. **load** it under its own, never reused name on every endpoint (never ``load_inplace``:
   an in-place reload under load returned corrupted answers);
3. **canary**: ask each endpoint the version's canary questions and check the answers
   (scored in one forward pass where the answer is known, see below);
4. **switch** the namespace's current-adapter pointer in PostgreSQL (one transaction, so every
   app replica sees the old or the new version, never a mix);
5. **drain**: wait until requests to the old name are done (vLLM's ``/metrics``, bounded);
6. **unload** the old name.

A failure in 1-3 unloads what was loaded, records the reason in the registry and raises
:class:`~langchain_ragtune.errors.PublishError`; the pointer never moved. A bad adapter
(validation, a 4xx from vLLM, a wrong canary answer) is marked ``failed``; a transient
problem (an unreachable endpoint, a 5xx) leaves it ``ready`` with the reason, so it can be
retried. After the switch nothing can fail the publish: unload problems are only logged
(:meth:`Publisher.reconcile` cleans leftovers up).

:meth:`Publisher.reconcile` runs when ``ragtune serve`` starts (or after an endpoint
restarted): it loads the current version of the most recently switched namespaces, up to
``max_loras`` of them (the rest load on first use, see ``create_chat_model(load_missing=True)``),
and unloads registered versions that are no longer current.

**Scored canaries.** A canary recorded with the adapter's own ``answer`` (the training
pipeline records it; see :func:`~langchain_ragtune.tuning.canaries.published_canaries`) is
checked by teacher forcing: the question's prompt followed by that answer up to the end of
the expected text is scored by the new name (``prompt_logprobs``), and the canary passes
when every answer token has rank 1, i.e. it is exactly what greedy decoding would generate.
That costs one prefill step, where generating the answer costs one decoding step per token,
each shared with every other request in the batch: on a loaded 2-core CPU the difference is
most of the swap time. An endpoint's canaries are scored in one request, so they share that
step. The prompts are tokenized (by the server, with its chat template) before the load,
since they do not depend on the adapter. A canary that fails the scored check, or a server
that cannot score, falls back to the generated check (the answer must contain the expected
text), so scoring never rejects an adapter that generation accepts.
``canary_scoring=False`` always generates.

The registry is anything with the interface of
:class:`~langchain_ragtune.tuning.registry.AdapterRegistry`.

Example:
    >>> from langchain_ragtune.serving.publisher import Publisher      # doctest: +SKIP
    >>> publisher = Publisher(registry, endpoints=["http://127.0.0.1:8765"])  # doctest: +SKIP
    >>> result = publisher.publish(registry.get("user-42-v3-a1b2c3"))  # doctest: +SKIP
    >>> result.swap_s < 0.5                                            # doctest: +SKIP
    True
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from langchain_ragtune.config import ServeConfig
from langchain_ragtune.errors import (
    AdapterLoadError,
    AdapterValidationError,
    EndpointUnreachableError,
    PublishError,
    ServingError,
)
from langchain_ragtune.serving.client import VLLMAdminClient
from langchain_ragtune.tuning.canaries import answer_matches, canary_continuation
from langchain_ragtune.tuning.validate import validate_adapter

__all__ = [
    "CanaryProbe",
    "CanaryResult",
    "PublishResult",
    "Publisher",
    "ReconcileResult",
    "answer_matches",
    "canary_continuation",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CanaryProbe:
    """A canary prepared for the scored check on one endpoint.

    Attributes:
        question: the canary question.
        expected: the text a correct answer contains.
        continuation: the recorded answer up to the end of ``expected``.
        token_ids: the server's tokens of the question's chat prompt followed by
            ``continuation``.
        start: where ``continuation``'s tokens begin in ``token_ids``.
    """

    question: str
    expected: str
    continuation: str
    token_ids: tuple[int, ...]
    start: int


@dataclass
class CanaryResult:
    """One canary question asked on one endpoint.

    ``method`` is ``"scored"`` when the known answer was verified in one forward pass
    (``answer`` is then that answer), ``"generated"`` when the adapter generated ``answer``.
    """

    endpoint: str
    question: str
    expected: str
    answer: str
    ok: bool
    method: str = "generated"


@dataclass
class PublishResult:
    """What :meth:`Publisher.publish` did.

    Attributes:
        namespace: the namespace.
        adapter_id: the published version's registry id.
        name: its served name.
        previous: the name it replaced (``None`` for a first version).
        endpoints: where it was loaded.
        load_s: seconds to load it on every endpoint.
        canary_s: seconds spent on canaries.
        switch_s: seconds the pointer switch (one PostgreSQL transaction) took.
        swap_s: seconds from the start of loading to the end of the switch (load +
            canaries + switch).
        drain_s: seconds waited for the old name's requests.
        canaries: every canary asked.
        unloaded_previous: whether the old name was unloaded everywhere.
    """

    namespace: tuple[str, ...]
    adapter_id: int
    name: str
    previous: str | None
    endpoints: list[str]
    load_s: float = 0.0
    canary_s: float = 0.0
    switch_s: float = 0.0
    swap_s: float = 0.0
    drain_s: float = 0.0
    canaries: list[CanaryResult] = field(default_factory=list)
    unloaded_previous: bool = True

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["namespace"] = list(self.namespace)
        return out


@dataclass
class ReconcileResult:
    """What :meth:`Publisher.reconcile` did, per endpoint."""

    loaded: list[tuple[str, str]] = field(default_factory=list)  # (endpoint, name)
    already: list[tuple[str, str]] = field(default_factory=list)
    unloaded: list[tuple[str, str]] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)  # beyond the LRU limit
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Publisher:
    """Loads, checks, switches and unloads adapter versions on one or more vLLM endpoints.

    Args:
        registry: the adapter registry (``current``, ``currents``, ``get``, ``get_by_id``,
            ``switch_current``, ``set_status``, ``update_metrics``).
        endpoints: vLLM base URLs; default: ``config.vllm_urls``, else the local server.
        config: serving settings (``max_lora_rank``, ``max_loras``, timeouts).
        base_model_path: the served base model folder, for validation; ``None`` resolves
            the configured one (skipped if it cannot be resolved).
        min_drain_s: wait at least this long after the switch before unloading the old name
            (longer than the chat models' ``refresh_s``, default 1 s).
        drain_timeout_s: then wait at most this long for its requests to finish.
        canary_max_tokens: answer length for generated canary answers.
        canary_scoring: check canaries that carry a recorded ``answer`` in one forward pass
            (see the module docs); ``False``: always generate.

    Example:
        >>> publisher = Publisher(registry, endpoints=[server.url])   # doctest: +SKIP
        >>> publisher.reconcile().loaded                              # doctest: +SKIP
        [('http://127.0.0.1:8765', 'user-42-v3-a1b2c3')]
    """

    def __init__(self, registry: Any, *, endpoints: Sequence[str] | None = None,
                 config: ServeConfig | None = None, base_model_path: str | Path | None = None,
                 min_drain_s: float = 1.5, drain_timeout_s: float = 30.0,
                 canary_max_tokens: int = 48, canary_scoring: bool = True) -> None:
        self.registry = registry
        self.config = config or ServeConfig.from_env()
        urls = list(endpoints or self.config.vllm_urls
                    or [f"http://{self.config.host}:{self.config.port}"])
        self.endpoints = [u.rstrip("/") for u in urls]
        self._base_model_path = Path(base_model_path) if base_model_path else None
        self.min_drain_s = min_drain_s
        self.drain_timeout_s = drain_timeout_s
        self.canary_max_tokens = canary_max_tokens
        self.canary_scoring = canary_scoring

    # -- helpers ---------------------------------------------------------------------------

    def _client(self, url: str) -> VLLMAdminClient:
        return VLLMAdminClient(url, timeout=self.config.request_timeout_s,
                               api_key=self.config.vllm_api_key)

    def base_model_path(self) -> Path | None:
        """The base model folder adapters are validated against (``None``: not resolvable)."""
        if self._base_model_path is None:
            from langchain_ragtune.models import resolve_base_model

            try:
                self._base_model_path = resolve_base_model()
            except Exception as exc:  # noqa: BLE001 - validation then skips the base checks
                logger.warning("base model not resolvable (%s): adapters are validated "
                               "without the base-model checks", exc)
                return None
        return self._base_model_path

    def _record(self, adapter: Any) -> Any:
        if isinstance(adapter, int):
            rec = self.registry.get_by_id(adapter)
        elif isinstance(adapter, str):
            rec = self.registry.get(adapter)
        else:
            return adapter
        if rec is None:
            raise PublishError(f"no adapter {adapter!r} is registered; list the versions with "
                               "registry.list(namespace).")
        return rec

    def _fail(self, rec: Any, reason: str, *, bad_adapter: bool) -> PublishError:
        """Record why publishing ``rec`` failed; return the error to raise."""
        status = "failed" if bad_adapter else rec.status
        try:
            self.registry.set_status(rec.id, status if status != "serving" else "ready",
                                     reason=reason)
        except Exception:
            logger.exception("could not record the failure of %s", rec.name)
        logger.warning("publish of %s aborted, old version keeps serving: %s", rec.name, reason)
        return PublishError(f"adapter {rec.name!r} of {tuple(rec.namespace)!r} was not published; "
                            f"the previous version keeps serving. Reason: {reason}")

    def _unload_everywhere(self, name: str, urls: Iterable[str]) -> bool:
        ok = True
        for url in urls:
            try:
                with self._client(url) as client:
                    client.unload_adapter(name)
            except ServingError as exc:
                ok = False
                logger.warning("could not unload %s from %s: %s", name, url, exc)
        return ok

    # -- publish ---------------------------------------------------------------------------

    def publish(self, adapter: Any) -> PublishResult:
        """Make ``adapter`` (a record, registry id or name) its namespace's serving version.

        Returns:
            What was done and how long each phase took.

        Raises:
            PublishError: it was not switched in (the reason is also in the registry);
                the previous version keeps serving.
        """
        rec = self._record(adapter)
        ns = tuple(rec.namespace)
        old = self.registry.current(ns)
        if old is not None and old.id == rec.id:
            logger.info("%s is already the current version of %r", rec.name, ns)
            return PublishResult(ns, rec.id, rec.name, old.name, list(self.endpoints))
        result = PublishResult(ns, rec.id, rec.name, old.name if old else None,
                               list(self.endpoints))

        # 1. validate, before vLLM sees anything
        try:
            validate_adapter(rec.path, self.base_model_path(), self.config.max_lora_rank)
        except AdapterValidationError as exc:
            raise self._fail(rec, "; ".join(exc.problems), bad_adapter=True) from exc

        # The canary prompts do not depend on the adapter: tokenize them before loading.
        asks = _canary_asks(rec)
        probes = self._prepare_probes(asks) if self.canary_scoring else {}

        # 2. load under its own name everywhere
        started = time.monotonic()
        loaded: list[str] = []
        try:
            for url in self.endpoints:
                with self._client(url) as client:
                    try:
                        client.load_adapter(rec.name, rec.path)
                    except AdapterLoadError as exc:
                        # A retried publish may find its own name loaded from the same folder.
                        if not ("already" in str(exc).lower()
                                and client.adapters().get(rec.name) == str(rec.path)):
                            raise
                loaded.append(url)
        except (AdapterLoadError, EndpointUnreachableError, ServingError) as exc:
            self._unload_everywhere(rec.name, loaded)
            # vLLM answers 400 for a refused request and 500 when its worker cannot load the
            # adapter (e.g. a rank above --max-lora-rank): both are the adapter's fault.
            # Unreachable endpoints and 502-504 are transient: the version stays retryable.
            bad = isinstance(exc, AdapterLoadError) and 400 <= exc.status_code <= 500
            raise self._fail(rec, f"loading failed: {exc}", bad_adapter=bad) from exc
        result.load_s = time.monotonic() - started

        # 3. canaries on every endpoint
        canary_started = time.monotonic()
        try:
            result.canaries = self._run_canaries(rec, asks, probes)
        except (ServingError, AdapterLoadError) as exc:
            self._unload_everywhere(rec.name, loaded)
            raise self._fail(rec, f"canary request failed: {exc}", bad_adapter=False) from exc
        result.canary_s = time.monotonic() - canary_started
        wrong = [c for c in result.canaries if not c.ok]
        if wrong:
            self._unload_everywhere(rec.name, loaded)
            w = wrong[0]
            raise self._fail(rec, f"{len(wrong)} canary answer(s) wrong, e.g. {w.question!r} "
                                  f"expected {w.expected!r}, got {w.answer!r} on {w.endpoint}",
                             bad_adapter=True)

        # 4. switch the pointer: from here on the new version serves
        switch_started = time.monotonic()
        try:
            self.registry.switch_current(ns, rec.id)
        except Exception as exc:
            self._unload_everywhere(rec.name, loaded)
            raise self._fail(rec, f"switching the pointer failed: {exc}",
                             bad_adapter=False) from exc
        result.switch_s = time.monotonic() - switch_started
        result.swap_s = time.monotonic() - started
        logger.info("%r now served by %s (swap %.2f s)", ns, rec.name, result.swap_s)

        # 5-6. drain and unload the old name; never fails the publish
        if old is not None:
            result.drain_s = self._drain(old.name)
            result.unloaded_previous = self._unload_everywhere(old.name, self.endpoints)
        self._note(rec, result)
        return result

    async def apublish(self, adapter: Any) -> PublishResult:
        """:meth:`publish` in a worker thread (it blocks on HTTP and sleeps while draining)."""
        return await asyncio.to_thread(self.publish, adapter)

    def _prepare_probes(self, asks: Sequence[Mapping[str, str]]
                        ) -> dict[tuple[str, int], CanaryProbe]:
        """Tokenize every canary with a recorded answer, per endpoint, for the scored check.

        A canary without a usable answer, or an endpoint that cannot tokenize (another
        server, an old vLLM), gets no probe: its canaries are then generated.
        """
        probes: dict[tuple[str, int], CanaryProbe] = {}
        for url in self.endpoints:
            with self._client(url) as client:
                for i, ask in enumerate(asks):
                    continuation = canary_continuation(ask.get("answer") or "",
                                                       ask.get("expected") or "")
                    if continuation is None:
                        continue
                    user = [{"role": "user", "content": ask["question"]}]
                    try:
                        prompt = client.tokenize_chat(user)
                        full = client.tokenize_chat(
                            [*user, {"role": "assistant", "content": continuation}],
                            continue_final_message=True)
                    except (ServingError, KeyError, ValueError) as exc:
                        logger.info("canaries on %s are generated: tokenizing failed (%s)",
                                    url, exc)
                        break
                    # The answer's tokens must extend the prompt's exactly, else the scored
                    # positions would not be the ones generation starts from.
                    if len(full) > len(prompt) and full[: len(prompt)] == prompt:
                        probes[(url, i)] = CanaryProbe(ask["question"], ask["expected"],
                                                       continuation, tuple(full), len(prompt))
        return probes

    def _run_canaries(self, rec: Any, asks: Sequence[Mapping[str, str]],
                      probes: Mapping[tuple[str, int], CanaryProbe]) -> list[CanaryResult]:
        """Check every canary on every endpoint, all at once.

        An endpoint's scored canaries go in one request: vLLM adds its prompts to the engine
        together, so they are prefilled in the same step (sent as separate requests, one
        that arrives while the other's step runs waits for that step). Generated canaries
        run concurrently with it, and so does the generated check of a scored canary that
        did not pass.
        """
        from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

        clients = {url: self._client(url) for url in self.endpoints}
        keys = [(url, i) for url in self.endpoints for i in range(len(asks))]
        batches: dict[str, list[int]] = {}
        for url, i in keys:
            if (url, i) in probes:
                batches.setdefault(url, []).append(i)

        def generate(url: str, i: int) -> list[tuple[tuple[str, int], CanaryResult | None]]:
            question, expected = asks[i]["question"], asks[i].get("expected") or ""
            # Streamed, and stopped once the expected text is there: the check is "the answer
            # contains it", so the tokens after it only delay the switch.
            answer = clients[url].chat(rec.name, [{"role": "user", "content": question}],
                                       max_tokens=self.canary_max_tokens if expected else 8,
                                       stop_when=(lambda text: answer_matches(text, expected))
                                       if expected else None)
            ok = answer_matches(answer.text, expected) if expected else bool(answer.text)
            return [((url, i), CanaryResult(url, question, expected, answer.text, ok))]

        def score(url: str, indices: list[int]
                  ) -> list[tuple[tuple[str, int], CanaryResult | None]]:
            """Scored results; ``None`` for a canary to check by generation instead."""
            batch = [probes[(url, i)] for i in indices]
            try:
                scored = clients[url].score_prompts(rec.name,
                                                    [(p.token_ids, p.start) for p in batch])
            except EndpointUnreachableError:
                raise
            except ServingError as exc:  # e.g. no prompt_logprobs: generate instead
                logger.info("scoring canaries on %s failed (%s); generating them", url, exc)
                return [((url, i), None) for i in indices]
            out: list[tuple[tuple[str, int], CanaryResult | None]] = []
            for i, probe, scores in zip(indices, batch, scored):
                if all(s.rank == 1 for s in scores):
                    out.append(((url, i), CanaryResult(url, probe.question, probe.expected,
                                                       probe.continuation, True,
                                                       method="scored")))
                    continue
                off = next(k for k, s in enumerate(scores) if s.rank != 1)
                logger.info("canary %r on %s: token %d of the recorded answer has rank %d; "
                            "checking by generation", probe.question, url, off,
                            scores[off].rank)
                out.append(((url, i), None))
            return out

        results: dict[tuple[str, int], CanaryResult] = {}
        try:
            with ThreadPoolExecutor(max_workers=min(len(keys), 16)) as pool:
                pending = {pool.submit(score, url, idx) for url, idx in batches.items()}
                pending |= {pool.submit(generate, *key) for key in keys if key not in probes}
                while pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        for key, result in future.result():
                            if result is None:
                                pending.add(pool.submit(generate, *key))
                            else:
                                results[key] = result
            return [results[key] for key in keys]
        finally:
            for client in clients.values():
                client.close()

    def _note(self, rec: Any, result: PublishResult) -> None:
        try:
            self.registry.update_metrics(rec.id, {"serving": {
                "endpoints": result.endpoints, "swap_s": round(result.swap_s, 3),
                "load_s": round(result.load_s, 3), "canary_s": round(result.canary_s, 3),
                "canaries_ok": sum(c.ok for c in result.canaries),
                "canaries_scored": sum(c.method == "scored" for c in result.canaries),
                "canaries": len(result.canaries), "replaced": result.previous,
                "published_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}})
        except Exception:
            logger.exception("could not record serving metrics of %s", rec.name)

    # -- drain -----------------------------------------------------------------------------

    def _in_flight(self, url: str, name: str) -> bool | None:
        """Whether ``url`` has running or waiting requests for ``name`` (None: unknown).

        Reads vLLM's ``vllm:lora_requests_info`` gauge, whose newest sample (its value is a
        timestamp) lists the adapters with running and waiting requests; an engine with no
        requests at all (``vllm:num_requests_running`` and ``..._waiting`` both 0) is
        drained whatever the last sample said.
        """
        import httpx

        try:
            text = httpx.get(f"{url}/metrics", timeout=5.0).text
        except httpx.HTTPError:
            return None
        return lora_in_flight(text, name)

    def _drain(self, name: str) -> float:
        started = time.monotonic()
        time.sleep(self.min_drain_s)
        deadline = started + self.min_drain_s + self.drain_timeout_s
        pending = list(self.endpoints)
        while pending and time.monotonic() < deadline:
            pending = [u for u in pending if self._in_flight(u, name)]
            if pending:
                time.sleep(0.2)
        if pending:
            logger.warning("requests to %s still running on %s after %.0f s; unloading anyway",
                           name, pending, self.drain_timeout_s)
        return time.monotonic() - started

    # -- reconcile -------------------------------------------------------------------------

    def reconcile(self, *, limit: int | None = None) -> ReconcileResult:
        """Load every namespace's current version where it is missing; unload stale ones.

        Args:
            limit: load at most this many namespaces' adapters per endpoint, most recently
                switched first; default ``config.max_loras``. The rest are loaded on first
                use by chat models created with ``load_missing=True``.

        Returns:
            What was loaded, found, unloaded, deferred and what failed (failures are logged
            and do not stop the others).
        """
        limit = self.config.max_loras if limit is None else limit
        currents = list(self.registry.currents())
        keep, deferred = currents[:limit], currents[limit:]
        result = ReconcileResult(deferred=[r.name for r in deferred])
        current_names = {r.name for r in currents}
        base = self.base_model_path()
        for url in self.endpoints:
            try:
                with self._client(url) as client:
                    loaded = client.adapters()
                    for rec in keep:
                        if rec.name in loaded:
                            result.already.append((url, rec.name))
                            continue
                        problems = validate_adapter(rec.path, base, self.config.max_lora_rank,
                                                    check_values=False, raise_on_error=False)
                        if problems:
                            result.errors.append(f"{rec.name}: {'; '.join(problems)}")
                            continue
                        try:
                            client.load_adapter(rec.name, rec.path)
                            result.loaded.append((url, rec.name))
                        except AdapterLoadError as exc:
                            result.errors.append(f"{rec.name} on {url}: {exc}")
                    # Versions that were replaced but not unloaded (a crash mid-publish).
                    for name in loaded:
                        if name not in current_names and self.registry.get(name) is not None:
                            client.unload_adapter(name)
                            result.unloaded.append((url, name))
            except EndpointUnreachableError as exc:
                result.errors.append(str(exc))
        for err in result.errors:
            logger.warning("reconcile: %s", err)
        return result

    def ensure_loaded(self, namespace: Sequence[str]) -> str | None:
        """Load ``namespace``'s current version on every endpoint lacking it; return its name."""
        rec = self.registry.current(tuple(namespace))
        if rec is None:
            return None
        for url in self.endpoints:
            with self._client(url) as client:
                if rec.name not in client.adapters():
                    try:
                        client.load_adapter(rec.name, rec.path)
                    except AdapterLoadError as exc:
                        if "already" not in str(exc).lower():
                            raise
        return rec.name


def _canary_asks(rec: Any) -> list[dict[str, str]]:
    """A version's canaries (``question``, ``expected``, optional recorded ``answer``)."""
    canaries = list(getattr(rec, "canaries", None) or (rec.metrics or {}).get("canaries") or [])
    # No known answers: at least prove the adapter generates.
    return [dict(c) for c in canaries] or [{"question": "Hello!", "expected": ""}]


_SAMPLE = re.compile(r'^vllm:lora_requests_info\{(?P<labels>[^}]*)\}\s+(?P<value>\S+)', re.MULTILINE)
_GAUGE = re.compile(r'^vllm:num_requests_(?P<kind>running|waiting)(?:\{[^}]*\})?\s+(?P<v>\S+)',
                    re.MULTILINE)
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def lora_in_flight(metrics_text: str, name: str) -> bool | None:
    """Parse vLLM's Prometheus text: are requests for adapter ``name`` running or waiting?

    Returns ``None`` when the metrics say nothing about LoRA requests.

    Example:
        >>> text = ('vllm:num_requests_running{model_name="base"} 1.0\\n'
        ...         'vllm:lora_requests_info{max_lora="2",running_lora_adapters="a,b",'
        ...         'waiting_lora_adapters=""} 1.7e9\\n')
        >>> lora_in_flight(text, "b"), lora_in_flight(text, "c")
        (True, False)
    """
    totals = {m["kind"]: float(m["v"]) for m in _GAUGE.finditer(metrics_text)}
    if totals and sum(totals.values()) == 0:
        return False
    samples = [(float(m["value"]), dict(_LABEL.findall(m["labels"])))
               for m in _SAMPLE.finditer(metrics_text)]
    if not samples:
        return None
    _, labels = max(samples, key=lambda s: s[0])
    busy = set(filter(None, labels.get("running_lora_adapters", "").split(",")))
    busy |= set(filter(None, labels.get("waiting_lora_adapters", "").split(",")))
    return name in busy
