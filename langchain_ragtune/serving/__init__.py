"""Serving parametric memory: vLLM with one LoRA adapter per namespace, swapped at runtime.

* :func:`create_chat_model` / :class:`InProcessChatModel` (:mod:`.chat`): LangChain chat models
  that answer with a namespace's current adapter, on vLLM or in this process.
* :class:`Publisher` (:mod:`.publisher`): validate, load under a new name, canary, switch the
  pointer in PostgreSQL, drain, unload; and reconcile after a restart.
* :func:`start_server` / :func:`serving_endpoints` (:mod:`.launcher`): start vLLM or attach.
* :class:`VLLMAdminClient` / :class:`AsyncVLLMAdminClient` (:mod:`.client`): the runtime
  LoRA endpoints; :func:`validate_adapter` (the one validator,
  :mod:`langchain_ragtune.tuning.validate`): the checks made before them.
* :mod:`.cpu_lora_fix`: the vLLM plugin fixing the CPU LoRA "-1 index" bug.

Names resolve lazily: importing this package imports neither torch nor vLLM.

Example:
    >>> from langchain_ragtune.serving import create_chat_model     # doctest: +SKIP
    >>> create_chat_model(("user-42",), registry=registry).invoke("hi")   # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from langchain_ragtune._lazy import lazy_exports

_EXPORTS = {
    "create_chat_model": "langchain_ragtune.serving.chat",
    "InProcessChatModel": "langchain_ragtune.serving.chat",
    "Publisher": "langchain_ragtune.serving.publisher",
    "PublishResult": "langchain_ragtune.serving.publisher",
    "start_server": "langchain_ragtune.serving.launcher",
    "serving_endpoints": "langchain_ragtune.serving.launcher",
    "VLLMServer": "langchain_ragtune.serving.launcher",
    "VLLMAdminClient": "langchain_ragtune.serving.client",
    "AsyncVLLMAdminClient": "langchain_ragtune.serving.client",
    "validate_adapter": "langchain_ragtune.tuning.validate",
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
    from langchain_ragtune.serving.client import AsyncVLLMAdminClient, VLLMAdminClient
    from langchain_ragtune.tuning.validate import validate_adapter
    from langchain_ragtune.serving.launcher import VLLMServer, serving_endpoints, start_server
    from langchain_ragtune.serving.publisher import Publisher, PublishResult


__getattr__ = lazy_exports(__name__, _EXPORTS)
