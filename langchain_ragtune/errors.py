"""The exception tree of langchain-ragtune.

Every error the library raises on purpose derives from :class:`RagtuneError`, and every
message names what was wrong, the offending value, and what to do about it::

    RagtuneError               (also RuntimeError)
    ├── ConfigError            (also ValueError)  a setting or RAGTUNE_* variable is invalid
    ├── InvalidInputError      (also ValueError)  bad text, namespace, k, metadata ... from a caller
    ├── DependencyMissingError (also ImportError) an optional extra is not installed
    ├── StoreError                                PostgreSQL-side problems
    │   ├── PgvectorMissingError                  the server has no `vector` extension
    │   ├── EmbeddingDimensionError               schema dimension != embedding model dimension
    │   └── NamespaceBusyError                    another refresh holds the namespace's lock
    ├── DatasetError                              a training dataset is missing or corrupt
    ├── TrainingError                             training failed; the previous adapter stays
    ├── AdapterError                              an adapter folder cannot be published
    │   ├── AdapterValidationError                it breaks vLLM's limits or the base model
    │   └── AdapterLoadError                      vLLM refused to load or unload it
    └── ServingError                              vLLM problems
        ├── EndpointUnreachableError              no answer from an endpoint
        └── PublishError                          a new adapter version was not switched in

``RagtuneError`` is a ``RuntimeError`` so that servers which hide the text of unknown
exception types from their clients pass ours on: LangGraph's API server (``langgraph dev``,
LangGraph Platform) sends a run's error message to the client only for builtin types such as
``ValueError`` and ``RuntimeError``; for any other it sends "An internal error occurred", and
the fix the message names would be lost.

Example:
    >>> from langchain_ragtune.errors import InvalidInputError, RagtuneError
    >>> issubclass(InvalidInputError, (RagtuneError, ValueError))
    True
"""

from __future__ import annotations

__all__ = [
    "AdapterError",
    "AdapterLoadError",
    "AdapterValidationError",
    "ConfigError",
    "DatasetError",
    "DependencyMissingError",
    "EmbeddingDimensionError",
    "EndpointUnreachableError",
    "InvalidInputError",
    "NamespaceBusyError",
    "PgvectorMissingError",
    "PublishError",
    "RagtuneError",
    "ServingError",
    "StoreError",
    "TrainingError",
]


class RagtuneError(RuntimeError):
    """Base class of every error langchain-ragtune raises on purpose."""


class ConfigError(RagtuneError, ValueError):
    """A configuration value (argument or ``RAGTUNE_*`` variable) is invalid."""


class InvalidInputError(RagtuneError, ValueError):
    """A caller passed a value the library cannot accept (empty text, bad namespace, k <= 0...)."""


class DependencyMissingError(RagtuneError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs the '{package}' package, which is not installed. "
            f"Install it with: pip install 'langchain-ragtune[{extra}]'"
        )
        self.package = package
        self.extra = extra


class StoreError(RagtuneError):
    """A PostgreSQL-side problem with the memory store."""


class PgvectorMissingError(StoreError):
    """The PostgreSQL server has no pgvector extension available."""


class EmbeddingDimensionError(StoreError):
    """The configured embeddings produce vectors of another size than the schema holds."""


class NamespaceBusyError(StoreError):
    """Another process holds the refresh lock of this namespace."""


class DatasetError(RagtuneError):
    """A distilled training dataset is missing, empty or corrupt."""


class TrainingError(RagtuneError):
    """Training an adapter failed; the previously published adapter stays in place."""


class AdapterError(RagtuneError):
    """An adapter cannot be registered, published or loaded."""


class AdapterValidationError(AdapterError):
    """An adapter breaks the serving limits or does not match the base model.

    Attributes:
        problems: every problem found, so one error lists them all.
    """

    def __init__(self, path: str, problems: list[str]) -> None:
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"adapter at {path!r} cannot be served:\n{lines}")
        self.path = path
        self.problems = list(problems)


class AdapterLoadError(AdapterError):
    """vLLM refused to load or unload an adapter.

    Attributes:
        endpoint: the server's URL.
        status_code: vLLM's HTTP status (400: bad or duplicate adapter, 404: unknown name).
    """

    def __init__(self, message: str, *, endpoint: str, status_code: int) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.status_code = status_code


class ServingError(RagtuneError):
    """A problem talking to or managing a vLLM server."""


class EndpointUnreachableError(ServingError):
    """A vLLM endpoint did not answer."""


class PublishError(ServingError):
    """A new adapter version could not be switched in; the old one keeps serving."""
