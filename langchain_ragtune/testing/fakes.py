"""Deterministic fakes for unit tests of logic (never the only test of a feature)."""

from __future__ import annotations

import hashlib
import math
import re

from langchain_core.embeddings import Embeddings

__all__ = ["HashEmbeddings"]

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
