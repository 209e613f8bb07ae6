"""Distillation: conversation history -> RAG-principled training data (RAG-Tuned-LLM recipe).

* :func:`distill` / :func:`build_examples` (:mod:`~langchain_ragtune.distill.pipeline`): the job.
* :mod:`~langchain_ragtune.distill.facts`: atomic facts out of turns, and the question
  forms (training and held-out) that teach and measure them; the local, global and digest
  kinds are built from them, with no model.
* :mod:`~langchain_ragtune.distill.extract`: chunks, entities and the opt-in ``broader``
  kind (combinations of chunks).
* :mod:`~langchain_ragtune.distill.teacher`: the defensive teacher (any LangChain chat model).
* :mod:`~langchain_ragtune.distill.text`: the pure filters (grounding, near-duplicates, lengths).
* :mod:`~langchain_ragtune.distill.dataset`: versioned datasets in PostgreSQL, JSONL export.

Importing this package loads no model.

Example:
    >>> from langchain_ragtune.distill import DistillConfig
    >>> DistillConfig(teacher=None).kinds
    ('local', 'global', 'digest')
"""

from langchain_ragtune.distill.dataset import MEMORY_SYSTEM_PROMPT, DatasetRecord, Example
from langchain_ragtune.distill.pipeline import DistillConfig, DistillResult, build_examples, distill

__all__ = ["MEMORY_SYSTEM_PROMPT", "DatasetRecord", "DistillConfig", "DistillResult", "Example",
           "build_examples", "distill"]
