"""Fast stand-ins for training and generation, shared by the refresh and eval tests.

They replace only the slow parts (gradient steps, generation): distillation, the registry,
validation (the real checks on a real, tiny LoRA file), the gate, the atomic publish and the
locks stay real. The real training runs in tests/jobs/test_refresh_real.py and
tests/tuning/test_train.py.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from langchain_ragtune.tuning.train import ADAPTER_MARKER, TrainResult


def write_lora(folder: Path, r: int = 4) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": r, "lora_alpha": 2 * r, "target_modules": ["q_proj"],
        "bias": "none", "use_dora": False, "modules_to_save": None, "task_type": "CAUSAL_LM"}))
    pre = "base_model.model.model.layers.0.self_attn.q_proj"
    save_file({f"{pre}.lora_A.weight": np.full((r, 576), 0.01, dtype=np.float32),
               f"{pre}.lora_B.weight": np.full((576, r), 0.01, dtype=np.float32)},
              str(folder / "adapter_model.safetensors"))


class FakeTrainer:
    """Writes a small valid LoRA instead of training; can sleep or crash midway."""

    def __init__(self, *, delay: float = 0.0, crash: BaseException | None = None) -> None:
        self.delay, self.crash = delay, crash
        self.calls: list[dict[str, Any]] = []
        self.started = threading.Event()

    def __call__(self, examples, base, out, config, *, init_adapter=None, callbacks=(),
                 metadata=None):
        self.calls.append({"examples": list(examples), "init_adapter": init_adapter,
                           "out": Path(out), "metadata": metadata, "config": config})
        self.started.set()
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "adapter_config.json").write_text("{half written")
        time.sleep(self.delay)
        if self.crash is not None:
            raise self.crash
        write_lora(Path(out))
        (Path(out) / ADAPTER_MARKER).write_text("{}")
        return TrainResult(path=Path(out), steps=3, train_loss=0.5, seconds=0.1,
                           examples=len(examples), tokens=100, device="cpu",
                           init_adapter=str(init_adapter) if init_adapter else None)


class FakeEvaluator:
    """Closed-book scores by adapter: the base model (None) and old versions score ``before``,
    the folder being published scores ``after``; every answer's greedy lead is ``margin``."""

    def __init__(self, before: float = 0.1, after: float = 0.8, margin: float = 5.0,
                 general_kept: float = 1.0) -> None:
        self.before, self.after, self.margin = before, after, margin
        self.general_kept = general_kept
        self.margin_calls: list[list[tuple[str, str]]] = []

    def general_knowledge(self, adapter, *, cache_dir=None):
        return {"general_kept": self.general_kept, "general_base_right": 10,
                "general_questions": 10, "general_lost": []}

    def greedy_margins(self, qa, *, adapter=None, system_prompt=...):
        self.margin_calls.append(list(qa))
        return [self.margin for _ in qa]

    def score(self, qa, *, adapter=None, progress=False, **kwargs):
        if not qa:
            return None, []
        fresh = adapter is not None and Path(adapter).name.startswith(".tmp-")
        acc = self.after if fresh else self.before
        return acc, [e if fresh else "I don't know." for _, e in qa]
