"""Fixtures of the refresh tests: the real base model folder, a fake trainer and evaluator.

The fakes replace only the slow parts (gradient steps, generation); distillation, the
registry, validation (the real checks on a real, tiny LoRA file), the gate, the atomic
publish and the locks are all real. One test in test_refresh_real.py trains for real.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tuning_fakes import FakeEvaluator, FakeTrainer, write_lora  # noqa: F401 (re-exported)

from langchain_ragtune.config import ModelConfig


@pytest.fixture(scope="session")
def base_model() -> Path:
    pytest.importorskip("transformers", reason="install the [train] extra")
    from langchain_ragtune.models import prepare_base_model

    return prepare_base_model(quiet=True)


@pytest.fixture
def model_config(base_model, tmp_path) -> ModelConfig:
    """The real base model; adapters go to a fresh folder."""
    return ModelConfig(base_model=str(base_model), home=tmp_path / "home")


@pytest.fixture
def fake_trainer():
    return FakeTrainer()


@pytest.fixture
def fake_evaluator():
    return FakeEvaluator()


@pytest.fixture
def make_trainer():
    return FakeTrainer


@pytest.fixture
def make_evaluator():
    return FakeEvaluator
