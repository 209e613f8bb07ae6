"""Base model preparation: the shipped GGUF becomes a servable Hugging Face folder, once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from langchain_ragtune.config import ModelConfig
from langchain_ragtune.errors import ConfigError
from langchain_ragtune.models import (
    DEFAULT_MODEL_NAME,
    find_shipped_gguf,
    prepare_base_model,
    resolve_base_model,
)


def test_configured_folder_is_validated_not_converted(tmp_path: Path) -> None:
    folder = tmp_path / "my-model"
    folder.mkdir()
    with pytest.raises(ConfigError, match="no config.json"):
        prepare_base_model(ModelConfig(base_model=str(folder), home=tmp_path))
    (folder / "config.json").write_text("{}")
    assert prepare_base_model(ModelConfig(base_model=str(folder), home=tmp_path)) == folder
    assert resolve_base_model(ModelConfig(base_model=str(folder), home=tmp_path)) == folder
    assert not (tmp_path / "models").exists()  # nothing was converted


def test_missing_configured_folder_names_the_value(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="RAGTUNE_BASE_MODEL=.*nowhere"):
        resolve_base_model(ModelConfig(base_model=str(tmp_path / "nowhere"), home=tmp_path))


def test_resolve_unprepared_default_tells_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ragtune models prepare"):
        resolve_base_model(ModelConfig(home=tmp_path))


def test_incomplete_folder_is_not_reused(tmp_path: Path) -> None:
    # A leftover folder without the completion marker must not count as prepared.
    target = tmp_path / "models" / DEFAULT_MODEL_NAME
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="not prepared"):
        resolve_base_model(ModelConfig(home=tmp_path))


def test_shipped_gguf_is_found() -> None:
    gguf = find_shipped_gguf()
    assert gguf.suffix == ".gguf" and gguf.stat().st_size > 50_000_000


@pytest.mark.slow
def test_prepare_converts_once_and_is_cached(tmp_path: Path) -> None:
    env = {**os.environ, "RAGTUNE_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "langchain_ragtune.cli", "models", "prepare", "--json"]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    path = Path(json.loads(first.stdout)["path"])
    assert path == tmp_path / "models" / DEFAULT_MODEL_NAME
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "llama" and config["dtype"] == "bfloat16"
    assert "quantization_config" not in config  # vLLM must see plain weights
    assert "<|im_start|>" in (path / "chat_template.jinja").read_text()
    assert not [p for p in path.parent.iterdir() if p.name.startswith(f".{DEFAULT_MODEL_NAME}.")
                and p.is_dir()], "temporary folder left behind"

    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["seconds"] < 2  # reused, not converted again
    assert resolve_base_model(ModelConfig(home=tmp_path)) == path

    quiet = subprocess.run(cmd[:-1] + ["--quiet"], env=env, capture_output=True, text=True,
                           timeout=120)
    assert quiet.returncode == 0 and quiet.stdout == "" and quiet.stderr == ""
