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
