"""Disk full while an adapter is being written: nothing half-published.

The adapters folder is a 1 MiB tmpfs; the trainer's save hits ENOSPC exactly as
``save_pretrained`` would. The refresh must fail with the reason, register nothing, leave no
temporary folder, keep the previous version serving, and work again once space is back.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from langchain_ragtune.config import ModelConfig
from langchain_ragtune.distill.pipeline import DistillConfig
from langchain_ragtune.eval.locomo import load_sample, to_turns
from langchain_ragtune.jobs.refresh import refresh
from langchain_ragtune.store.types import Turn
from langchain_ragtune.tuning.registry import AdapterRegistry
from langchain_ragtune.tuning.train import ADAPTER_MARKER, TrainResult


def _write_lora(folder: Path, pad_bytes: int = 0) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"],
        "bias": "none", "use_dora": False, "modules_to_save": None, "task_type": "CAUSAL_LM"}))
    pre = "base_model.model.model.layers.0.self_attn.q_proj"
    save_file({f"{pre}.lora_A.weight": np.full((4, 576), 0.01, dtype=np.float32),
               f"{pre}.lora_B.weight": np.full((576, 4), 0.01, dtype=np.float32)},
              str(folder / "adapter_model.safetensors"))
    if pad_bytes:  # what a real 5-20 MB adapter would need
        (folder / "optimizer.pt").write_bytes(os.urandom(pad_bytes))


def _trainer(pad_bytes: int):
    def train(examples, base, out, config, *, init_adapter=None, callbacks=(), metadata=None):
        _write_lora(Path(out), pad_bytes)
        (Path(out) / ADAPTER_MARKER).write_text("{}")
        return TrainResult(path=Path(out), steps=1, train_loss=0.5, seconds=0.1,
                           examples=len(examples), tokens=10, device="cpu", init_adapter=None)
    return train


class _Evaluator:
    def score(self, qa, *, adapter=None, progress=False, **kwargs):
        fresh = adapter is not None and Path(adapter).name.startswith(".tmp-")
        return (0.9 if fresh else 0.1), ["x" for _ in qa]


@pytest.fixture()
def tiny_disk():
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path = Path(f"/tmp/ragtune-tinyfs-{uuid.uuid4().hex[:6]}")
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(path)], check=True)
    yield path
    subprocess.run(["umount", str(path)], check=False)
    path.rmdir()


def test_disk_full_while_writing_an_adapter_publishes_nothing(store, tiny_disk, tmp_path):
    from langchain_ragtune.models import prepare_base_model

    ns = ("disk-full",)
    store.add(ns, to_turns(load_sample()[0]))
    mc = ModelConfig(base_model=str(prepare_base_model(quiet=True)), home=tmp_path / "home")
    reg = AdapterRegistry(store)
    kw = dict(store=store, distill_config=DistillConfig(teacher=None, canaries=2),
              model_config=mc, evaluator=_Evaluator(), adapters_dir=tiny_disk,
              publish=lambda rec: reg.switch_current(rec.namespace, rec.id))

    first = refresh(ns, trainer=_trainer(0), **kw)
    assert first.status == "published"
    store.add(ns, [Turn(text="The spare key is under the third flowerpot.", speaker="Priya",
                        thread_id="sample-1/session_9")])

    full = refresh(ns, trainer=_trainer(4 * 2**20), **kw)  # needs 4 MiB on a 1 MiB disk
    assert full.status == "failed"
    assert "No space left" in (full.reason or "") or "ENOSPC" in (full.reason or "")
    assert reg.current(ns).name == first.adapter_name            # old version still serving
    assert [r.version for r in reg.list(ns) if r.status != "failed"] == [1]
    leftovers = [p for p in tiny_disk.rglob(".tmp-*")]
    assert leftovers == []                                        # no half-written folder

    again = refresh(ns, trainer=_trainer(0), **kw)                # space is back: works
    assert again.status == "published" and reg.current(ns).name == again.adapter_name
