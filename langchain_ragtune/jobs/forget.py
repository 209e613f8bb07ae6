"""Forgetting a namespace's parametric memory: adapter folders on disk and loaded adapters.

:meth:`MemoryStore.forget` deletes the memories, datasets and registry rows in one
transaction and returns the adapters it unregistered; this module finishes the job outside
the database: it unloads each adapter from every vLLM endpoint and deletes its folder. An
endpoint that cannot be reached is reported; it cannot bring the adapter back, because
``ragtune serve`` reloads only what the registry lists and those rows are gone.

Example:
    >>> out = store.forget(("user-42",))                          # doctest: +SKIP
    >>> forget_adapters(("user-42",), out["adapters"])            # doctest: +SKIP
    {'unloaded': [...], 'deleted': [...], 'problems': []}
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence

from langchain_ragtune.config import ServeConfig
from langchain_ragtune.errors import EndpointUnreachableError, ServingError

__all__ = ["forget_adapters"]

log = logging.getLogger(__name__)


def _endpoints(config: ServeConfig) -> list[str]:
    return list(config.vllm_urls) or [f"http://{config.host}:{config.port}"]


def forget_adapters(namespace: Sequence[str], adapters: Sequence[Mapping[str, Any]], *,
                    serve_config: ServeConfig | None = None) -> dict[str, list[str]]:
    """Unload ``adapters`` (``{"name", "path"}`` rows) from vLLM and delete their folders.

    Returns:
        ``{"unloaded": [...], "deleted": [...], "problems": [...]}``.
    """
    from langchain_ragtune.serving.client import VLLMAdminClient

    config = serve_config or ServeConfig.from_env()
    out: dict[str, list[str]] = {"unloaded": [], "deleted": [], "problems": []}
    for url in _endpoints(config):
        try:
            with VLLMAdminClient(url, timeout=10.0) as client:
                loaded = client.adapters()
                for a in adapters:
                    if a["name"] in loaded:
                        client.unload_adapter(a["name"])
                        out["unloaded"].append(f"{a['name']}@{url}")
        except EndpointUnreachableError:
            out["problems"].append(f"{url} unreachable: nothing to unload there (its restart "
                                   "reloads only registered adapters, and these are gone)")
        except ServingError as exc:
            out["problems"].append(f"{url}: {exc}")
    for a in adapters:
        path = Path(str(a["path"]))
        # Only ever delete what looks like an adapter folder we wrote.
        if path.is_dir() and (path / "adapter_config.json").exists():
            shutil.rmtree(path, ignore_errors=True)
            out["deleted"].append(str(path))
        elif path.exists():
            out["problems"].append(f"{path} is not an adapter folder; left in place")
    log.info("forgot adapters of %s: %s", namespace, out)
    return out
