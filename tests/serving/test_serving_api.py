"""The serving package's public names, and that importing it stays light."""

from __future__ import annotations

import subprocess
import sys


def test_public_names_are_pinned_and_resolve() -> None:
    import langchain_ragtune.serving as serving

    assert serving.__all__ == [
        "AsyncVLLMAdminClient", "InProcessChatModel", "PublishResult", "Publisher",
        "VLLMAdminClient", "VLLMServer", "create_chat_model", "serving_endpoints",
        "start_server", "validate_adapter"]
    for name in serving.__all__:
        assert getattr(serving, name) is not None


def test_importing_serving_modules_imports_no_heavy_dependency() -> None:
    code = ("import sys, langchain_ragtune.cli.serving, langchain_ragtune.serving.chat, "
            "langchain_ragtune.serving.publisher, langchain_ragtune.serving.cpu_lora_fix, "
            "langchain_ragtune.bench.swap, langchain_ragtune.models; "
            "print([m for m in ('torch', 'transformers', 'peft', 'vllm', 'openai') "
            "if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
