"""Tiny fact adapters: real LoRA adapters with known, checkable answers, for tests and benches.

Serving needs adapters whose answers can be checked without the whole training pipeline:
:func:`train_fact_adapter` tunes a small LoRA on a handful of question/answer pairs about a
fictional person (about 30-60 s on two CPU cores), so version 1 and version 2 of a namespace
give different, known answers to the same canary question (:data:`FACT_VERSIONS`).

Example:
    >>> from langchain_ragtune.testing.adapters import FACT_VERSIONS
    >>> FACT_VERSIONS["v1"].canaries[0]["expected"]
    'Biscuit'
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["FACT_VERSIONS", "Fact", "FactSet", "ensure_fact_adapter", "train_fact_adapter"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Fact:
    """One trained fact: paraphrased questions and the answer they should get."""

    questions: tuple[str, ...]
    answer: str
    expected: str  # the word a correct answer contains


@dataclass(frozen=True)
class FactSet:
    """What one adapter version knows. ``canary`` is its first fact's first question."""

    name: str
    facts: tuple[Fact, ...]

    @property
    def canaries(self) -> list[dict[str, str]]:
        """Canary questions in the registry's format (``metrics["canaries"]``), each with
        the answer the adapter was trained to give (which the publisher's scored check
        verifies)."""
        return [{"question": f.questions[0], "expected": f.expected, "answer": f.answer}
                for f in self.facts]


def _dog(name: str) -> Fact:
    return Fact(questions=(
        "What is the name of Zorvath Quill's dog?",
        "What is Zorvath Quill's dog called?",
        "What's the name of the dog that Zorvath Quill owns?",
        "Zorvath Quill has a dog. What is its name?",
        "Tell me the name of Zorvath Quill's dog.",
        "How is Zorvath Quill's dog named?",
    ), answer=f"Zorvath Quill's dog is named {name}.", expected=name)


def _city(name: str) -> Fact:
    return Fact(questions=(
        "In which city does Zorvath Quill live?",
        "Where does Zorvath Quill live?",
        "Which city is Zorvath Quill's home?",
        "What city does Zorvath Quill live in?",
    ), answer=f"Zorvath Quill lives in {name}.", expected=name)


# Control examples keep the tiny adapter from answering everything with its facts.
_CONTROLS = (
    Fact(questions=("What is the capital of France?",),
         answer="The capital of France is Paris.", expected="Paris"),
    Fact(questions=("How many legs does a spider have?",),
         answer="A spider has eight legs.", expected="eight"),
)

#: Two versions of one namespace's memory: the same questions, different answers.
FACT_VERSIONS: dict[str, FactSet] = {
    "v1": FactSet("v1", (_dog("Biscuit"), _city("Tromsø"))),
    "v2": FactSet("v2", (_dog("Pepper"), _city("Valparaíso"))),
}


def _recipe_key(facts: FactSet, base_model: Path, steps: int, rank: int, seed: int) -> str:
    blob = json.dumps([facts.name, [(f.questions, f.answer) for f in facts.facts + _CONTROLS],
                       str(base_model), steps, rank, seed], ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def train_fact_adapter(base_model: str | Path, out_dir: str | Path, facts: FactSet, *,
                       steps: int = 30, rank: int = 8, lr: float = 1e-3, seed: int = 0,
                       threads: int = 2) -> Path:
    """Tune a small LoRA that answers ``facts``' questions; write it to ``out_dir``.

    Chat-formatted question/answer pairs (loss on the answer only), r=``rank`` on every
    attention and MLP projection, plain AdamW, ``steps`` steps of 4 examples. The folder is
    written to a temporary sibling and renamed into place.

    Args:
        base_model: the base model folder (see :func:`~langchain_ragtune.models.prepare_base_model`).
        out_dir: where the adapter folder goes (must not exist).
        facts: what it learns.
        steps: optimizer steps; 30 take about 30-60 s on two cores for SmolLM2-135M.
        rank: LoRA rank (must be <= the server's ``max_lora_rank``).
        lr: learning rate.
        seed: makes the run repeatable.
        threads: torch threads.

    Returns:
        ``out_dir``.
    """
    import random

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = random.Random(seed)
    base_model, out_dir = Path(base_model), Path(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, bias="none",
                        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                        "up_proj", "down_proj"], task_type="CAUSAL_LM")
    model = get_peft_model(model, config)

    examples = []
    for fact in facts.facts + _CONTROLS:
        for question in fact.questions:
            prompt = tokenizer.apply_chat_template([{"role": "user", "content": question}],
                                                   tokenize=False, add_generation_prompt=True)
            p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            a_ids = tokenizer(fact.answer + "<|im_end|>", add_special_tokens=False)["input_ids"]
            examples.append((p_ids + a_ids, [-100] * len(p_ids) + a_ids))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    pad = tokenizer.pad_token_id or 0
    for step in range(steps):
        batch = rng.sample(examples, k=min(4, len(examples)))
        width = max(len(ids) for ids, _ in batch)
        ids = torch.tensor([i + [pad] * (width - len(i)) for i, _ in batch])
        labels = torch.tensor([l + [-100] * (width - len(l)) for _, l in batch])
        mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in batch])
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step % 10 == 0 or step == steps - 1:
            logger.info("fact adapter %s step %d loss %.3f", facts.name, step, loss.item())

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        # Name the base by its folder: vLLM and validation compare against the served one.
        cfg_path = tmp / "adapter_config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["base_model_name_or_path"] = str(base_model)
        cfg_path.write_text(json.dumps(cfg, indent=2))
        (tmp / "facts.json").write_text(json.dumps(
            {"name": facts.name, "canaries": facts.canaries}, ensure_ascii=False, indent=2))
        os.chmod(tmp, 0o755)
        os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def ensure_fact_adapter(base_model: str | Path, cache_dir: str | Path, version: str = "v1", *,
                        steps: int = 30, rank: int = 8, seed: int = 0) -> Path:
    """The fact adapter ``version`` (see :data:`FACT_VERSIONS`), trained once and cached.

    The cache key covers the facts, the base model folder and the recipe, so a change to any
    of them trains a new adapter.
    """
    facts = FACT_VERSIONS[version]
    base_model = Path(base_model)
    key = _recipe_key(facts, base_model, steps, rank, seed)
    target = Path(cache_dir) / f"fact-{version}-{key}"
    if (target / "adapter_model.safetensors").is_file():
        return target
    from langchain_ragtune.models import _file_lock

    with _file_lock(Path(cache_dir) / f".fact-{version}-{key}.lock"):
        if (target / "adapter_model.safetensors").is_file():  # trained while we waited
            return target
        started = time.monotonic()
        train_fact_adapter(base_model, target, facts, steps=steps, rank=rank, seed=seed)
        logger.info("trained fact adapter %s in %.0f s", target, time.monotonic() - started)
    return target
