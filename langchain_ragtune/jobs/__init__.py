"""Background work of parametric memory: the refresh pipeline and its scheduler.

* :func:`refresh` (:mod:`~langchain_ragtune.jobs.refresh`): distill -> train -> validate ->
  publish -> hand over -> record, for one namespace, idempotent and lock-protected.
* :class:`RefreshScheduler` (:mod:`~langchain_ragtune.jobs.scheduler`): APScheduler around it.

Importing this package loads no model and no scheduler.

Example:
    >>> from langchain_ragtune.jobs import refresh          # doctest: +SKIP
    >>> refresh(("user-42",)).status                        # doctest: +SKIP
    'published'
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from langchain_ragtune._lazy import lazy_exports

from langchain_ragtune.jobs.refresh import RefreshResult, refresh

__all__ = ["RefreshResult", "RefreshScheduler", "refresh"]

if TYPE_CHECKING:  # pragma: no cover  (the real class, for type checkers)
    from langchain_ragtune.jobs.scheduler import RefreshScheduler


# The scheduler imports APScheduler and SQLAlchemy: on first use only.
__getattr__ = lazy_exports(__name__, {"RefreshScheduler": "langchain_ragtune.jobs.scheduler"})
