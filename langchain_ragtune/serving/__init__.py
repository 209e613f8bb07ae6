"""Serving parametric memory: vLLM with one LoRA adapter per namespace, swapped at runtime.

* :func:`create_chat_model` / :class:`InProcessChatModel` (:mod:`.chat`): LangChain chat models
  that answer with a namespace's current adapter, on vLLM or in this process.
* :class:`Publisher` (:mod:`.publisher`): validate, load under a new name, canary, switch the
  pointer in PostgreSQL, drain, unload; and reconcile after a restart.
* :func:`start_server` / :func:`serving_endpoints` (:mod:`.launcher`): start vLLM or attach.
* :class:`VLLMAdminClient` / :class:`AsyncVLLMAdminClient` and :func:`validate_adapter`
  (:mod:`.client`): the runtime LoRA endpoints and the checks made before them.
* :mod:`.cpu_lora_fix`: the vLLM plugin fixing the CPU LoRA "-1 index" bug.

Names resolve lazily: importing this package imports neither torch nor vLLM.

Example:
    >>> from langchain_ragtune.serving import create_chat_model     # doctest: +SKIP
    >>> create_chat_model(("user-42",), registry=registry).invoke("hi")   # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "create_chat_model": "chat",
    "InProcessChatModel": "chat",
    "Publisher": "publisher",
    "PublishResult": "publisher",
    "start_server": "launcher",
    "serving_endpoints": "launcher",
    "VLLMServer": "launcher",
    "VLLMAdminClient": "client",
    "AsyncVLLMAdminClient": "client",
    "validate_adapter": "client",
}

# Literal, as type checkers need (see the package's __init__); the test of the public API
# keeps it equal to _EXPORTS.
__all__ = [
    "AsyncVLLMAdminClient",
    "InProcessChatModel",
    "PublishResult",
    "Publisher",
    "VLLMAdminClient",
    "VLLMServer",
    "create_chat_model",
    "serving_endpoints",
    "start_server",
    "validate_adapter",
]

if TYPE_CHECKING:  # pragma: no cover
    from langchain_ragtune.serving.chat import InProcessChatModel, create_chat_model
    from langchain_ragtune.serving.client import (AsyncVLLMAdminClient, VLLMAdminClient,
                                                  validate_adapter)
    from langchain_ragtune.serving.launcher import VLLMServer, serving_endpoints, start_server
    from langchain_ragtune.serving.publisher import Publisher, PublishResult


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'langchain_ragtune.serving' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"langchain_ragtune.serving.{module}"), name)
