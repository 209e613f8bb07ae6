"""The one adapter validator, header checks (no torch): vLLM's limits, the base model, files.

Its value checks (NaN, never-trained weights) and the base-name checks are exercised in
tests/serving/test_serving_client.py, where the publisher's use of it is.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from langchain_ragtune.errors import AdapterValidationError
from langchain_ragtune.tuning.validate import (adapter_problems, find_adapter_problems,
                                               validate_adapter, validate_adapter_dir)

SMOL = {"hidden_size": 576, "intermediate_size": 1536, "num_attention_heads": 9,
        "num_key_value_heads": 3, "num_hidden_layers": 30}


@pytest.fixture
def fake_base(tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text(json.dumps(SMOL))
    return base


def test_a_good_adapter_has_no_problems(tmp_path, make_adapter, fake_base):
    path = make_adapter(tmp_path / "ok")
    assert adapter_problems(path, max_rank=16, base_model=fake_base) == []


def test_every_vllm_limit_is_reported_at_once(tmp_path, make_adapter):
    path = make_adapter(tmp_path / "bad", r=32, config={
        "modules_to_save": ["lm_head"], "use_dora": True, "bias": "all"})
    problems = adapter_problems(path, max_rank=16)
    text = "\n".join(problems)
    assert len(problems) == 4
    for word in ("max_lora_rank 16", "modules_to_save", "DoRA", "bias='none'"):
        assert word in text
    with pytest.raises(AdapterValidationError) as err:
        validate_adapter_dir(path, max_rank=16)
    assert len(err.value.problems) == 4


def test_another_base_model_is_caught_by_shapes(tmp_path, make_adapter, fake_base):
    path = make_adapter(tmp_path / "other", hidden=2048)
    assert any("another base model" in p
               for p in find_adapter_problems(path, fake_base, check_values=False))


def test_rank_in_config_must_match_the_tensors(tmp_path, make_adapter):
    path = make_adapter(tmp_path / "r", r=8)
    cfg = json.loads((path / "adapter_config.json").read_text())
    (path / "adapter_config.json").write_text(json.dumps({**cfg, "r": 4}))
    assert any("inconsistent with r=4" in p
               for p in find_adapter_problems(path, check_values=False))


def test_earlier_names_give_the_same_answers(tmp_path, make_adapter, fake_base):
    bad = make_adapter(tmp_path / "bad", r=32)
    assert adapter_problems(bad, max_rank=16, base_model=fake_base) == find_adapter_problems(
        bad, fake_base, 16, check_values=False)
    with pytest.raises(AdapterValidationError):
        validate_adapter_dir(bad, max_rank=16)
    with pytest.raises(AdapterValidationError):
        validate_adapter(bad, fake_base, 16, check_values=False)


def test_extra_tensors_and_missing_files(tmp_path, make_adapter):
    path = make_adapter(tmp_path / "emb", extra_tensors={
        "base_model.model.model.embed_tokens.weight": np.zeros((4, 576), dtype=np.float32)})
    assert any("non-LoRA" in p for p in adapter_problems(path))
    (path / "adapter_model.safetensors").write_bytes(b"garbage!")
    assert any("safetensors" in p for p in adapter_problems(path))
    (path / "adapter_model.safetensors").unlink()
    assert any("adapter_model.safetensors is missing" in p for p in adapter_problems(path))
    (path / "adapter_config.json").write_text("{oops")
    assert "not valid JSON" in adapter_problems(path)[0]
    assert "does not exist" in adapter_problems(tmp_path / "nowhere")[0]
