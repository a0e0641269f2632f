"""Bad input refused before the first request: tenants, quoted placeholders, values, names, file input.

Every case reads the collection back with pymilvus: a refused tenant value or quoted placeholder
leaves every tenant's rows as they were; a refused value leaves no row written and no new
collection behind; a refused name never reaches Milvus. Counted in ``docs/faults.md`` by outcome.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_milvus.exceptions import MilvusProviderError
from airflow_provider_milvus.operators.milvus import (
    MilvusAddDocumentsOperator,
    MilvusDeleteByExprOperator,
    MilvusSearchToXComOperator,
    MilvusUpsertOperator,
)

from testing.servers.embeddings_server import embed_text
from tests.conftest import EMBEDDING_DIMENSIONS
from tests.faults.conftest import assert_clear_error, assert_exact_ids, count_entities, documents
from tests.faults.report import ACCEPTED

TENANTS = ("acme", "globex", "initech")
PER_TENANT = 5
TENANT_IDS = {f"{t}-{i}" for t in TENANTS for i in range(PER_TENANT)}


def _rejected(figures, name: str, run, *keywords: str) -> str:
    figures.bad_input(name)
    with pytest.raises(MilvusProviderError) as error:
        run()
    return assert_clear_error(error.value, *keywords, where=name)


# -- tenants ---------------------------------------------------------------------------------------------------


@pytest.fixture
def tenant_collection(milvus_lite) -> Iterator[str]:
    """Three tenants of five rows each, in a partition-key collection made with pymilvus (``pk``, ``tenant``).

    One per test: a test that fails because a delete reached other tenants must not fail the next ones.
    """
    from pymilvus import DataType, MilvusClient

    name = f"tenants_{uuid.uuid4().hex[:8]}"
    client = MilvusClient(uri=milvus_lite.uri)
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=True)
    schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=64)
    schema.add_field("text", DataType.VARCHAR, max_length=1000)
    schema.add_field("tenant", DataType.VARCHAR, max_length=32, is_partition_key=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=EMBEDDING_DIMENSIONS)
    index = MilvusClient.prepare_index_params()
    index.add_index("vector", index_type="FLAT", metric_type="COSINE")
    client.create_collection(name, schema=schema, index_params=index, num_partitions=4, consistency_level="Strong")
    rows = [
        {
            "pk": f"{t}-{i}",
            "text": f"{t} note {i}",
            "tenant": t,
            "source": f"s0{i}.md",
            "vector": embed_text(f"{t} note {i}", EMBEDDING_DIMENSIONS),
        }
        for t in TENANTS
        for i in range(PER_TENANT)
    ]
    client.insert(name, rows)
    try:
        yield name
    finally:
        client.drop_collection(name)
        client.close()


def _tenant_task(kind: str, conn: str, emb: str, collection: str, tenant: Any) -> Any:
    common: dict[str, Any] = {"task_id": kind, "milvus_conn_id": conn, "collection_name": collection}
    common["partition_key_value"] = tenant
    if kind == "delete":
        return MilvusDeleteByExprOperator(expr='source == "s01.md"', **common)
    if kind == "search":
        return MilvusSearchToXComOperator(queries="note", embedding_conn_id=emb, k=20, **common)
    records = [{"page_content": "a new note", "metadata": {"doc_id": "new-1", "source": "s09.md"}}]
    operator = MilvusAddDocumentsOperator if kind == "add" else MilvusUpsertOperator
    return operator(documents=records, id_key="doc_id", embedding_conn_id=emb, **common)


@pytest.mark.parametrize("kind", ["add", "upsert", "delete", "search"])
@pytest.mark.parametrize(
    ("tenant", "keyword"),
    [("", "empty"), ("   ", "blank"), (42, "must be a string"), (["acme"], "must be a string")],
    ids=["empty", "whitespace", "int", "list"],
)
def test_a_tenant_value_that_would_reach_every_tenant_is_refused_before_connecting(
    kind, tenant, keyword, milvus_lite, shared_conn, embedding_conn, embeddings, tenant_collection, figures
):
    """``partition_key_value=""`` used to mean "no tenant": a delete then matched rows of all three tenants."""
    embeddings.reset_stats()
    _rejected(
        figures,
        f"{kind}: partition_key_value={tenant!r}",
        lambda: _tenant_task(kind, shared_conn, embedding_conn, tenant_collection, tenant).execute(context={}),
        "partition_key_value",
        keyword,
    )
    assert embeddings.stats.requests == 0, "a refused tenant still reached the embedding API"
    assert_exact_ids(milvus_lite.uri, tenant_collection, TENANT_IDS, figures)


@pytest.mark.parametrize(
    ("expr", "payload"),
    [
        ("source == '{s}'", "' or source == 's02.md' or source == '"),
        ('source == "{s}"', '" or source != "'),
        ('source like "{s}%"', '" or pk != "'),
    ],
    ids=["single_quotes", "double_quotes", "inside_a_like_pattern"],
)
@pytest.mark.parametrize("kind", ["delete", "search"])
def test_a_quoted_placeholder_is_refused_with_the_documented_form(
    kind, expr, payload, milvus_lite, shared_conn, embedding_conn, embeddings, tenant_collection, figures
):
    """Pasted raw into the quotes, the value ends the string literal and widens the filter; refused instead."""
    common: dict[str, Any] = {
        "task_id": kind,
        "milvus_conn_id": shared_conn,
        "collection_name": tenant_collection,
        "partition_key_value": "acme",
        "expr": expr,
        "expr_params": {"s": payload},
    }
    if kind == "delete":
        operator: Any = MilvusDeleteByExprOperator(**common)
    else:
        operator = MilvusSearchToXComOperator(queries="note", embedding_conn_id=embedding_conn, k=20, **common)
    message = _rejected(
        figures,
        f"{kind}: quoted placeholder {expr!r}",
        lambda: operator.execute(context={}),
        "inside quotes",
        "{s}",
        "expr_params",
    )
    documented = "expr='source == {s}'"
    assert documented in message, message
    assert_exact_ids(milvus_lite.uri, tenant_collection, TENANT_IDS, figures)


def test_the_documented_placeholder_form_deletes_only_the_literal_value(
    milvus_lite, shared_conn, tenant_collection, figures
):
    """The same payload through ``{s}`` unquoted is matched as a literal: it deletes nothing."""
    figures.bad_input("delete: injection payload through the documented {s} form", ACCEPTED)
    result = MilvusDeleteByExprOperator(
        task_id="delete",
        milvus_conn_id=shared_conn,
        collection_name=tenant_collection,
        partition_key_value="acme",
        expr="source == {s}",
        expr_params={"s": "' or source == 's02.md' or source == '"},
    ).execute(context={})
    assert (result["matched"], result["deleted"]) == (0, 0)
    assert_exact_ids(milvus_lite.uri, tenant_collection, TENANT_IDS, figures)


# -- values checked against the fields they land in, for the whole input, before the first request ---------------


def _ten_with_the_last(metadata: dict[str, Any], fields: Any = ()) -> list[dict[str, Any]]:
    """Ten documents, every typed field set to 1, the tenth carrying ``metadata``."""
    docs = documents(10, prefix="v")
    for doc in docs:
        doc["metadata"].update({name: 1 for name in dict(fields)})
    docs[9]["metadata"].update(metadata)
    return docs


def _add(conn: str, emb: str, collection: str, docs: Any, **kwargs: Any) -> Any:
    return MilvusAddDocumentsOperator(
        task_id="add",
        milvus_conn_id=conn,
        embedding_conn_id=emb,
        collection_name=collection,
        documents=docs,
        id_key="doc_id",
        batch_size=2,
        **kwargs,
    ).execute(context={})


VALUE_CASES = [
    ({"big": 2**64}, (), ["document 9", "'big'", "int64 range"]),
    ({"big": 2**70}, (), ["document 9", "'big'", "int64 range"]),
    ({"big": -(2**63) - 1}, (), ["document 9", "'big'", "int64 range"]),
    ({"nested": {"list": [1, 2**64]}}, (), ["document 9", "'nested'['list'][1]", "int64 range"]),
    ({"$meta": {"a": 1}}, (), ["document 9", "'$meta'", "reserved"]),
    ({"year": 2**63}, {"year": "INT64"}, ["document 9", "'year'", "int64 range"]),
    ({"year": 2**40}, {"year": "INT32"}, ["'year'", "INT32", "range", "v/9.md"]),
    ({"score": 1e39}, {"score": "FLOAT"}, ["'score'", "FLOAT", "32-bit", "v/9.md"]),
    ({"vector": "mine"}, (), ["'vector'", "collide"]),
]
VALUE_IDS = [
    "2**64",
    "2**70",
    "-2**63-1",
    "nested_2**64",
    "$meta",
    "INT64_field",
    "INT32_field",
    "FLOAT_field",
    "vector",
]


@pytest.mark.parametrize(("metadata", "fields", "keywords"), VALUE_CASES, ids=VALUE_IDS)
def test_a_bad_value_in_the_last_document_creates_no_collection(
    metadata, fields, keywords, milvus_lite, shared_conn, embedding_conn, embeddings, collection_name, figures
):
    """Check first, create after: before, 2**70 or a metadata key ``vector`` left an empty collection behind."""
    options = {"scalar_fields": dict(fields)} if fields else None
    _rejected(
        figures,
        f"write (new collection): metadata {metadata!r}"[:120] + (f" into {dict(fields)}" if fields else ""),
        lambda: _add(
            shared_conn, embedding_conn, collection_name, _ten_with_the_last(metadata, fields), new_collection=options
        ),
        "nothing was written",
        *keywords,
    )
    assert count_entities(milvus_lite.uri, collection_name) is None, "a refused write left a collection behind"


@pytest.mark.parametrize(("metadata", "fields", "keywords"), VALUE_CASES, ids=VALUE_IDS)
def test_a_bad_value_in_the_last_document_writes_no_row_of_the_others(
    metadata, fields, keywords, milvus_lite, shared_conn, embedding_conn, embeddings, collection_name, figures
):
    """With ``batch_size=2`` the first eight rows were written before pymilvus failed on the tenth."""
    options = {"scalar_fields": dict(fields)} if fields else None
    seed = documents(3, prefix="seed")
    for doc in seed:
        doc["metadata"].update({name: 1 for name in dict(fields)})
    _add(shared_conn, embedding_conn, collection_name, seed, new_collection=options)
    seeded = {d["metadata"]["doc_id"] for d in seed}
    _rejected(
        figures,
        f"write (existing collection): metadata {metadata!r}"[:120] + (f" into {dict(fields)}" if fields else ""),
        lambda: _add(shared_conn, embedding_conn, collection_name, _ten_with_the_last(metadata, fields)),
        *keywords,
    )
    assert_exact_ids(milvus_lite.uri, collection_name, seeded, figures)


def test_a_tenant_for_a_new_collection_without_partition_key_creates_nothing(
    milvus_lite, shared_conn, embedding_conn, embeddings, collection_name, figures
):
    _rejected(
        figures,
        "write (new collection): partition_key_value without partition_key_field",
        lambda: _add(shared_conn, embedding_conn, collection_name, documents(3), partition_key_value="acme"),
        "partition_key_value",
        "no partition-key field",
    )
    assert count_entities(milvus_lite.uri, collection_name) is None
    assert embeddings.stats.requests == 0, "the embedding model was probed for a collection never made"


# -- collection names -------------------------------------------------------------------------------------------

BAD_NAMES = {
    "hyphen": ("my-coll", "letters, digits and underscores"),
    "leading_digit": ("1abc", "start with a letter or an underscore"),
    "space": ("has space", "letters, digits and underscores"),
    "non_ascii": ("caf\u00e9", "ASCII"),
    "too_long": ("n" * 256, "256 bytes"),
}


@pytest.mark.parametrize("kind", ["add", "upsert", "delete", "search"])
@pytest.mark.parametrize("case", list(BAD_NAMES))
def test_a_collection_name_a_milvus_server_refuses_is_refused_on_lite_too(
    case, kind, milvus_lite, shared_conn, embedding_conn, embeddings, figures
):
    """Milvus Lite accepts these names; a real Milvus refuses them, so a DAG must not pass on Lite alone."""
    name, keyword = BAD_NAMES[case]
    common: dict[str, Any] = {"task_id": kind, "milvus_conn_id": shared_conn, "collection_name": name}
    if kind == "delete":
        operator: Any = MilvusDeleteByExprOperator(expr='source == "x"', **common)
    elif kind == "search":
        operator = MilvusSearchToXComOperator(queries="x", embedding_conn_id=embedding_conn, **common)
    else:
        cls = MilvusAddDocumentsOperator if kind == "add" else MilvusUpsertOperator
        operator = cls(documents=documents(2), id_key="doc_id", embedding_conn_id=embedding_conn, **common)
    _rejected(
        figures,
        f"{kind}: collection name {case}",
        lambda: operator.execute(context={}),
        "collection name",
        keyword,
        "Milvus",
    )
    assert count_entities(milvus_lite.uri, name) is None
    assert embeddings.stats.requests == 0


def test_a_name_whose_source_ledger_would_be_too_long_is_refused_before_writing(
    milvus_lite, shared_conn, embedding_conn, embeddings, figures
):
    """250 characters fit, ``<name>__sources`` (259) does not: before, the data was written, then the ledger failed."""
    name = "n" * 250
    _rejected(
        figures,
        "write: 250-character name with replace_by (ledger name 259 bytes)",
        lambda: _add(shared_conn, embedding_conn, name, documents(4), replace_by="source"),
        "__sources",
        "259 bytes",
        "track_sources=False",
    )
    assert count_entities(milvus_lite.uri, name) is None
    assert count_entities(milvus_lite.uri, f"{name}__sources") is None


# -- files and splitting ----------------------------------------------------------------------------------------


@pytest.fixture
def legacy_corpus(tmp_path: Path) -> Path:
    (tmp_path / "menu.txt").write_bytes("caf\u00e9 cr\u00e8me br\u00fbl\u00e9e".encode("cp1252"))
    (tmp_path / "plain.txt").write_text("plain ascii")
    return tmp_path


def test_a_non_utf8_file_names_the_file_and_the_option_that_exists(
    milvus_lite, shared_conn, embedding_conn, embeddings, collection_name, legacy_corpus, figures
):
    def add(**kwargs: Any) -> Any:
        return MilvusAddDocumentsOperator(
            task_id="add",
            milvus_conn_id=shared_conn,
            embedding_conn_id=embedding_conn,
            collection_name=collection_name,
            source_url=str(legacy_corpus),
            **kwargs,
        ).execute(context={})

    _rejected(
        figures,
        "write: a cp1252 file read as UTF-8",
        add,
        "menu.txt",
        "not valid utf-8",
        "source_encoding",
    )
    assert count_entities(milvus_lite.uri, collection_name) is None
    assert add(source_encoding="cp1252")["written"] == 2  # the advice works
    from pymilvus import MilvusClient

    client = MilvusClient(uri=milvus_lite.uri)
    try:
        rows = client.query(collection_name, filter='source == "menu.txt"', output_fields=["text"])
    finally:
        client.close()
    assert [row["text"] for row in rows] == ["caf\u00e9 cr\u00e8me br\u00fbl\u00e9e"]


def test_an_unknown_source_encoding_is_refused_when_the_dag_is_parsed(figures):
    _rejected(
        figures,
        "write: unknown source_encoding",
        lambda: MilvusAddDocumentsOperator(
            task_id="add", collection_name="c", source_url="/x", source_encoding="utf-9"
        ),
        "source_encoding",
        "utf-9",
    )


def test_a_non_utf8_file_name_is_named(
    milvus_lite, shared_conn, embedding_conn, embeddings, collection_name, tmp_path, figures
):
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "ok.md").write_text("fine")
    Path(os.fsdecode(bytes(folder) + b"/na\xefve.md")).write_text("named in latin-1")
    _rejected(
        figures,
        "write: a file name that is not UTF-8",
        lambda: MilvusAddDocumentsOperator(
            task_id="add",
            milvus_conn_id=shared_conn,
            embedding_conn_id=embedding_conn,
            collection_name=collection_name,
            source_url=str(folder),
        ).execute(context={}),
        "file name",
        "na\\xefve.md",
        str(folder),
        "not valid utf-8",
    )
    assert count_entities(milvus_lite.uri, collection_name) is None


@pytest.mark.parametrize(
    ("options", "keyword"),
    [
        ({"chunk_size": 0}, "chunk_size=0"),
        ({"chunk_size": -5}, "chunk_size=-5"),
        ({"chunk_size": 10, "chunk_overlap": 10}, "smaller"),
    ],
    ids=["zero", "negative", "overlap_not_smaller"],
)
def test_a_chunk_size_that_cannot_split_is_refused_when_the_dag_is_parsed(options, keyword, figures):
    """``chunk_size=0`` silently meant "no splitting"; None (the default) is the way to say that."""
    message = _rejected(
        figures,
        f"write: {options}",
        lambda: MilvusAddDocumentsOperator(task_id="add", collection_name="c", documents=["x"], **options),
        keyword,
    )
    if options["chunk_size"] < 1:
        assert "unset (None)" in message
