"""Adapters on demand: a vLLM LoRA resolver that finds a served name in the adapter storage.

With thousands of namespaces, no server can hold every adapter loaded. vLLM asks its LoRA
resolvers (a ``vllm.general_plugins`` entry point of this package registers one) for a
``model`` name it does not know; this one looks for the adapter folder of that name in the
storage the refresh jobs write to (``ModelConfig.adapters_dir``: ``<root>/<namespace slug>/
<adapter name>/``, a shared folder when trainers and servers are different hosts), checks
it, and hands vLLM a ``LoRARequest``. vLLM then loads it and keeps it by least-recent use
within ``max_loras`` (slots) and ``max_cpu_loras`` (host memory), loading it again from the
folder when an evicted adapter is asked for.

The resolver is on when the server's environment names the storage: ``ragtune serve`` sets
``RAGTUNE_ADAPTER_ROOT`` to ``ModelConfig.adapters_dir``; vLLM also needs
``VLLM_ALLOW_RUNTIME_LORA_UPDATING=1`` (set by the launcher). Object storage is used by
mounting it as that folder (s3fs, gcsfuse): the resolver reads plain files.

What it refuses (vLLM then answers 404 "does not exist", and the router falls back to
retrieval): a name that is not a plain folder name, a folder without the package's marker
file (a half-written or foreign folder), an adapter trained on another base model. A folder
whose weights are corrupt is found, fails to load, and vLLM answers 400.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from langchain_ragtune.tuning.train import ADAPTER_MARKER as _MARKER  # written last: complete

__all__ = ["ADAPTER_ROOT_ENV", "find_adapter_folder", "register"]

#: The environment variable naming the adapter storage in the vLLM server's process.
ADAPTER_ROOT_ENV = "RAGTUNE_ADAPTER_ROOT"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


def _logger() -> logging.Logger:
    return logging.getLogger("langchain_ragtune.serving.resolver")


def find_adapter_folder(root: str | Path, name: str) -> Path | None:
    """The complete adapter folder called ``name`` under ``root``, or ``None``.

    Adapter names are unique across namespaces (the namespace slug, the version and a
    random suffix), so the first ``<root>/<namespace>/<name>`` found is the one.

    Example:
        >>> find_adapter_folder("/nonexistent", "../etc") is None
        True
    """
    if not _NAME.match(name or "") or ".." in name:
        return None
    root = Path(root)
    try:
        homes = [e for e in os.scandir(root) if e.is_dir(follow_symlinks=False)]
    except OSError:
        return None
    for home in homes:
        folder = Path(home.path) / name
        if (folder / _MARKER).is_file() and (folder / "adapter_config.json").is_file():
            return folder
    return None


def _base_model_matches(folder: Path, base_model_name: str) -> bool:
    """Whether the adapter was trained on the model this server serves (by folder name:
    paths differ between the trainer's host and the server's)."""
    try:
        marker = json.loads((folder / _MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    trained_on = str(marker.get("base_model") or "")
    return Path(trained_on).name == Path(base_model_name).name


def _resolver_class() -> type:
    from vllm.lora.request import LoRARequest
    from vllm.lora.resolver import LoRAResolver

    class RagtuneAdapterResolver(LoRAResolver):
        """Finds ``lora_name`` in the adapter storage (see the module)."""

        def __init__(self, root: str) -> None:
            self.root = root

        async def resolve_lora(self, base_model_name: str, lora_name: str) -> Any:
            import asyncio

            folder = await asyncio.to_thread(find_adapter_folder, self.root, lora_name)
            if folder is None:
                return None
            if not await asyncio.to_thread(_base_model_matches, folder, base_model_name):
                _logger().warning("adapter %s in %s was trained on another base model than "
                                  "%s; not loaded", lora_name, folder, base_model_name)
                return None
            _logger().info("loading adapter %s on demand from %s", lora_name, folder)
            # vLLM replaces the id with its own counter; any positive int will do here.
            return LoRARequest(lora_name=lora_name, lora_int_id=1, lora_path=str(folder))

    return RagtuneAdapterResolver


def register() -> None:
    """The ``vllm.general_plugins`` entry point: register the resolver when the server's
    environment names the adapter storage (``RAGTUNE_ADAPTER_ROOT``). Never raises."""
    root = os.environ.get(ADAPTER_ROOT_ENV)
    if not root:
        return
    try:
        from vllm.lora.resolver import LoRAResolverRegistry

        if "ragtune" in LoRAResolverRegistry.get_supported_resolvers():
            return  # every vLLM process imports the plugins; register once
        if not Path(root).is_dir():
            Path(root).mkdir(parents=True, exist_ok=True)
        LoRAResolverRegistry.register_resolver("ragtune", _resolver_class()(root))
    except Exception:  # noqa: BLE001 - a plugin must not take the server down
        _logger().exception("ragtune adapter resolver failed to register")
