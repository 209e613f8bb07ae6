"""Deterministic fakes for unit tests of logic (never the only test of a feature)."""

from __future__ import annotations

import hashlib
import math
import re
from typing import Any

from langchain_core.embeddings import Embeddings
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

__all__ = ["EchoChatModel", "HashEmbeddings"]

_WORD = re.compile(r"[a-z0-9]+")


class HashEmbeddings(Embeddings):
    """Bag-of-words hashing embeddings: texts sharing words get similar vectors.

    Deterministic across processes and machines (no model, no randomness), normalised to
    unit length, so cosine similarity behaves like a crude lexical overlap.

    Args:
        dim: vector size.
    """

    def __init__(self, dim: int = 384) -> None:
        self.dimension = dim

    def _embed(self, text: str) -> list[float]:
        vec = [0.0] * self.dimension
        words = _WORD.findall(text.lower()) or ["<empty>"]
        for word in words:
            h = hashlib.blake2b(word.encode(), digest_size=8).digest()
            idx = int.from_bytes(h[:4], "little") % self.dimension
            vec[idx] += 1.0 if h[4] & 1 else -1.0
        norm = math.sqrt(sum(v * v for v in vec)) or 1.0
        return [v / norm for v in vec]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self._embed(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._embed(text)


class EchoChatModel(BaseChatModel):
    """A chat model that answers instantly and deterministically from its prompt.

    It replies ``"<prefix>: <latest human text>"`` and, when a system message carries
    memory context, appends ``" | context: <first 80 characters>"``, so tests can tell
    which context reached the model. Thread-safe (no state).

    Attributes:
        prefix: the start of every reply.
    """

    prefix: str = "echo"

    @property
    def _llm_type(self) -> str:
        return "ragtune-echo"

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: Any = None, **kwargs: Any) -> ChatResult:
        human = next((m for m in reversed(messages) if m.type == "human"), None)
        system = next((m for m in messages if m.type == "system"), None)
        text = f"{self.prefix}: {human.content if human else ''}"
        if system is not None and str(system.content).strip():
            text += f" | context: {str(system.content)[:80]}"
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])
