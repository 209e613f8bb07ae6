"""Test helpers users can reuse: deterministic embeddings and a scripted chat model.

Example:
    >>> from langchain_ragtune.testing import HashEmbeddings
    >>> e = HashEmbeddings(dim=64)
    >>> e.embed_query("the cat sat") == e.embed_query("the cat sat")
    True
"""

from langchain_ragtune.testing.fakes import EchoChatModel, HashEmbeddings

__all__ = ["EchoChatModel", "HashEmbeddings"]
