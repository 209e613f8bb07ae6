"""General-knowledge questions with short answers: what an adapter must not make the model
forget.

LoRA knowledge injection is known to erode what the base model knew. Every refresh asks
these questions of the base model and of the new adapter, under the plain assistant prompt
(the knowledge in the weights, not the memory persona); of those the base model answers
right, the adapter must still answer (nearly) all (``GateConfig.general_min_kept``). The
set is fixed and ships with the package, so numbers compare across refreshes and machines.

Example:
    >>> qa = load_general_questions()
    >>> len(qa) >= 50, qa[0]
    (True, ('What is the capital of France?', 'Paris'))
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["GENERAL_QUESTIONS_PATH", "GENERAL_SYSTEM_PROMPT", "REPLAY_PROMPTS_PATH",
           "load_general_questions", "load_replay_prompts"]

#: The prompt general questions are asked under, the ``none`` route's too. (Kept plain: with
#: "..., friendly assistant. Answer briefly." SmolLM2-135M answered "What is the capital of
#: France?" with French gibberish; with this one, "The capital of France is Paris.")
GENERAL_SYSTEM_PROMPT = "You are a helpful assistant."

#: The shipped set, ``[{"question", "expected"}, ...]``: the 59 of 90 candidate questions
#: SmolLM2-135M-Instruct answers right under :data:`GENERAL_SYSTEM_PROMPT` (greedy, 32
#: tokens), so every one can be lost and none is noise.
GENERAL_QUESTIONS_PATH = Path(__file__).resolve().parent / "general_questions.json"


#: General prompts kept apart from the questions above (no question of the measured set is
#: among them): training replays the base model's own answers to a sample of these, so the
#: adapter keeps answering like the base model outside its memories.
REPLAY_PROMPTS_PATH = Path(__file__).resolve().parent / "replay_prompts.json"


def load_replay_prompts(path: str | Path | None = None) -> list[str]:
    """The general prompts whose base-model answers are replayed during training.

    Example:
        >>> measured = {q for q, _ in load_general_questions()}
        >>> prompts = load_replay_prompts()
        >>> len(prompts) >= 100 and not measured & set(prompts)
        True
    """
    return list(json.loads(Path(path or REPLAY_PROMPTS_PATH).read_text(encoding="utf-8")))


def load_general_questions(path: str | Path | None = None) -> list[tuple[str, str]]:
    """(question, expected answer) pairs of the general-knowledge set."""
    rows = json.loads(Path(path or GENERAL_QUESTIONS_PATH).read_text(encoding="utf-8"))
    return [(r["question"], r["expected"]) for r in rows]
