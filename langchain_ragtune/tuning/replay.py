"""Replay of the base model's own answers: what keeps an adapter from forgetting.

Facts taught as short answers under the memory prompt pull the whole model toward short,
memory-flavoured answers: measured on LoCoMo conv-26 without replay, the adapter still
answered 22 of the 59 general questions the base model answers right (kept 0.37; "What is
the capital of France?" -> "Townsfaiss"). Training therefore mixes in general prompts
(:func:`~langchain_ragtune.datasets.general.load_replay_prompts`, disjoint from the measured
set) answered by the base model itself, under the plain assistant prompt: the adapter learns
the facts and, everywhere else, to stay what the base model was.

Example:
    >>> clean_answer("Paris is the capital. It is in France and it has")
    'Paris is the capital.'
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path
from typing import Any

from langchain_ragtune.datasets.general import GENERAL_SYSTEM_PROMPT, load_replay_prompts
from langchain_ragtune.distill.dataset import Example

__all__ = ["clean_answer", "general_replay_examples"]

_MAX_NEW_TOKENS = 64


def clean_answer(text: str) -> str:
    """``text`` cut after its last complete sentence (generation stops mid-sentence at the
    token limit, and training on the cut would teach stopping there)."""
    text = text.strip()
    ends = [m.end() for m in re.finditer(r"[.!?](?=\s|$)", text)]
    return text[: ends[-1]] if ends else text


def general_replay_examples(evaluator: Any, n: int, *, seed: int = 0,
                            cache_dir: str | Path | None = None) -> list[Example]:
    """``n`` replay examples: sampled general prompts with the base model's greedy answers.

    The answers are generated once per base model (cached in ``cache_dir``). An evaluator
    without ``answer`` (a test stand-in) gives none.
    """
    if n <= 0 or not hasattr(evaluator, "answer"):
        return []
    prompts = load_replay_prompts()
    key = hashlib.sha256(json.dumps([str(getattr(evaluator, "base_model", "")),
                                     GENERAL_SYSTEM_PROMPT, _MAX_NEW_TOKENS, prompts]
                                    ).encode()).hexdigest()[:16]
    cache = Path(cache_dir) / f"replay-base-{key}.json" if cache_dir else None
    answers: list[str] | None = None
    if cache is not None and cache.is_file():
        answers = json.loads(cache.read_text(encoding="utf-8"))
    if answers is None or len(answers) != len(prompts):
        answers = evaluator.answer(prompts, adapter=None, system_prompt=GENERAL_SYSTEM_PROMPT,
                                   max_new_tokens=_MAX_NEW_TOKENS, repetition_penalty=1.0)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps(answers), encoding="utf-8")
    pairs = [(p, clean_answer(a)) for p, a in zip(prompts, answers) if clean_answer(a)]
    random.Random(seed).shuffle(pairs)
    return [Example(kind="replay", split="train", question=p, answer=a, source_ids=(),
                    meta={"replay": "general", "fact": f"replay:{i}"},
                    system=GENERAL_SYSTEM_PROMPT)
            for i, (p, a) in enumerate(pairs[:n])]


# Distribution matching on the replayed prompts. Training on the base model's greedy answers
# (cross-entropy on one token per position) kept only 0.54-0.71 of the general questions the
# base model answered: one token says little about the rest of the model's function. Matching
# the base model's whole next-token distribution (its top-k, every position of the replayed
# sequence, prompt included) pins far more of it for the same tokens trained. The targets
# are computed once before training (the base model does not change), so the regulariser
# costs what cross-entropy replay cost.


def base_targets(model: Any, rows: list[dict[str, Any]], *, topk: int) -> None:
    """Add the base model's top-``topk`` next-token log-probabilities to each of ``rows``
    (``kl_ids``, ``kl_logp``: one list per position), in place.

    ``model`` is the base model, or a peft model whose adapter is disabled for the pass.
    """
    import contextlib

    import torch

    off = model.disable_adapter() if hasattr(model, "disable_adapter") else \
        contextlib.nullcontext()
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), off:
            for row in rows:
                ids = torch.tensor([row["input_ids"]], device=model.device)
                logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
                top = logp.topk(topk, dim=-1)
                row["kl_ids"] = top.indices.tolist()
                row["kl_logp"] = top.values.tolist()
    finally:
        model.train(was_training)


class ReplayCollator:
    """Pads training rows; rows with base-model targets get them padded alongside
    (``kl_ids``, ``kl_logp``, ``kl_mask``). Their ``labels`` are all -100: the distribution
    is their target, not the greedy tokens."""

    def __init__(self, base: Any) -> None:
        self.base = base

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        plain = [{k: v for k, v in f.items() if not k.startswith("kl_")} for f in features]
        batch = self.base(plain)
        if not any("kl_ids" in f for f in features):
            return batch
        b, t = batch["input_ids"].shape
        k = len(next(f["kl_ids"][0] for f in features if "kl_ids" in f))
        ids = torch.zeros((b, t, k), dtype=torch.long)
        logp = torch.full((b, t, k), -1e4)
        mask = torch.zeros((b, t))
        for i, f in enumerate(features):
            if "kl_ids" not in f:
                continue
            n = min(len(f["kl_ids"]), t)
            right = self.base.tokenizer.padding_side != "left"
            pos = slice(0, n) if right else slice(t - n, t)
            ids[i, pos] = torch.tensor(f["kl_ids"][:n])
            logp[i, pos] = torch.tensor(f["kl_logp"][:n])
            mask[i, pos] = 1.0
            mask[i, (n - 1) if right else t - 1] = 0.0  # the last token predicts nothing
        batch.update(kl_ids=ids, kl_logp=logp, kl_mask=mask)
        return batch


def replay_kl_loss(logits: Any, kl_ids: Any, kl_logp: Any, kl_mask: Any) -> Any:
    """Mean over masked positions of KL(base || adapter) on the base model's top-k tokens
    (the base mass outside its top-k is left free)."""
    import torch

    logq = torch.log_softmax(logits.float(), dim=-1).gather(-1, kl_ids)
    p = kl_logp.exp()
    per_pos = (p * (kl_logp - logq)).sum(-1)
    return (per_pos * kl_mask).sum() / kl_mask.sum().clamp(min=1.0)


def replay_kl_trainer(trainer_cls: Any, weight: float) -> Any:
    """``trainer_cls`` (a transformers ``Trainer``) whose loss adds ``weight`` x the replay
    KL term for rows with base-model targets, next to cross-entropy on the others' answers."""
    import torch

    class ReplayKLTrainer(trainer_cls):  # type: ignore[misc, valid-type]
        def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            kl = {k: inputs.pop(k) for k in ("kl_ids", "kl_logp", "kl_mask") if k in inputs}
            if not kl:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            labels = inputs.pop("labels")
            outputs = model(**inputs)
            logits = outputs.logits
            loss = weight * replay_kl_loss(logits, **kl)
            shift = labels[:, 1:]
            if (shift != -100).any():
                ce = torch.nn.functional.cross_entropy(
                    logits[:, :-1].float().reshape(-1, logits.shape[-1]), shift.reshape(-1),
                    ignore_index=-100)
                loss = loss + ce
            return (loss, outputs) if return_outputs else loss

    return ReplayKLTrainer
