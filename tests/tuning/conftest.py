"""Fixtures of the tuning tests: the real base model, and a fake-but-valid adapter maker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def base_model() -> Path:
    """The real SmolLM2-135M-Instruct folder (converted once from the shipped GGUF)."""
    pytest.importorskip("transformers", reason="install the [train] extra")
    from langchain_ragtune.models import prepare_base_model

    return prepare_base_model(quiet=True)


def write_adapter(folder: Path, *, r: int = 4, hidden: int = 576, config: dict | None = None,
                  extra_tensors: dict | None = None, b_value: float = 0.01) -> Path:
    """A tiny LoRA folder shaped like peft's output for a Llama with ``hidden`` size."""
    import numpy as np
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"peft_type": "LORA", "r": r, "lora_alpha": 2 * r, "target_modules": ["q_proj"],
           "bias": "none", "use_dora": False, "modules_to_save": None,
           "task_type": "CAUSAL_LM"}
    cfg.update(config or {})
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    pre = "base_model.model.model.layers.0.self_attn.q_proj"
    tensors = {f"{pre}.lora_A.weight": np.full((r, hidden), 0.01, dtype=np.float32),
               f"{pre}.lora_B.weight": np.full((hidden, r), b_value, dtype=np.float32)}
    tensors.update(extra_tensors or {})
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    return folder


@pytest.fixture
def make_adapter():
    return write_adapter
