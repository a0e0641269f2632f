"""Several writers on one collection: three DAG runs, inline and deferred, write overlapping sources at once.

Runs on the multi-host deployment (two triggerers, S3 staging, separate temp dirs), against Milvus Lite
and against the real standalone 2.3.5 server (which keeps duplicate primary keys on insert). The expected
result is what one writer writing every source alone produces (a reference collection written first):
the same primary keys with the same texts, each exactly once.
The collection is created by a first, lone run: two tasks creating the same new collection at the same
moment is another test's subject.

Whether two writers both decide to write one chunk depends on timing, so the third writer is forced
(``force=True``: it rewrites every chunk of its sources) and two of its sources are already stored by
the lone first run: those chunks are written twice whatever the timing. A write path that inserted
instead of upserting would therefore leave duplicate primary keys on the standalone server in every
run (Milvus Lite deduplicates on insert, so only the standalone variant can catch that). Counted with
``count(*)``: on 2.3.5 a query (and a query iterator) returns one row per primary key even when it is
stored twice, while ``count(*)`` counts every stored row (checked by hand: 10 ids inserted twice, query
10 rows, ``count(*)`` 20), so duplicate ids never show in the rows read back.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import require_standalone_executable
from tests.integration.multihost import MultiHost, record_figure
from tests.integration.readback import stored_count
from tests.integration.retries import assert_no_unexplained_retries

pytestmark = pytest.mark.integration

SOURCES = [f"docs/s{i}.md" for i in range(10)]
STORED_FIRST = SOURCES[0:2]  # written by the lone first run, then rewritten by the forced writer
WRITERS = [  # (DAG, sources): every source is written by at least one run, most by two
    ("milvus_it_writers_inline", SOURCES[0:6]),
    ("milvus_it_writers_deferred", SOURCES[3:9]),
    ("milvus_it_writers_forced", SOURCES[0:3] + SOURCES[6:10]),
]
PARAGRAPHS = 20


@pytest.fixture(params=["lite", pytest.param("standalone", marks=pytest.mark.standalone)])
def backend(request: pytest.FixtureRequest, multihost: MultiHost, milvus_lite: Any) -> Iterator[tuple[str, Any]]:
    """(Airflow connection id, a pymilvus reader) of Milvus Lite or of the real standalone 2.3.5 server.

    Lite deduplicates primary keys on insert; the standalone server keeps duplicates, so only there
    would a write path that inserts twice show up.
    """
    from pymilvus import MilvusClient

    if request.param == "lite":
        conn_id, uri = "milvus_default", milvus_lite.uri
    else:
        if multihost.standalone_uri is None:
            require_standalone_executable()  # skips locally without the server, fails in CI
        conn_id, uri = "milvus_standalone", multihost.standalone_uri
    client = MilvusClient(uri=uri)
    yield conn_id, client
    client.close()


def rows(reader: Any, collection: str) -> list[dict[str, Any]]:
    return reader.query(
        collection, filter='pk != ""', output_fields=["pk", "text", "source"], limit=16384, consistency_level="Strong"
    )


def test_three_concurrent_writers_leave_the_union_without_duplicates(
    multihost: MultiHost, backend: tuple[str, Any]
) -> None:
    mh = multihost
    conn_id, reader = backend
    reference = f"wr_ref_{uuid.uuid4().hex[:8]}"
    shared = f"wr_{uuid.uuid4().hex[:8]}"
    # The reference (one writer, every source) and the shared collection's creation (a lone first run).
    first = [
        mh.stack.trigger(
            "milvus_it_writers_inline",
            {"collection": collection, "sources": sources, "paragraphs": PARAGRAPHS, "milvus_conn_id": conn_id},
        )
        for collection, sources in ((reference, ["docs/seed.md", *SOURCES]), (shared, ["docs/seed.md", *STORED_FIRST]))
    ]
    for run_id in first:
        assert mh.stack.wait_for_run("milvus_it_writers_inline", run_id, timeout=240) == "success", mh.stack.task_log(
            "milvus_it_writers_inline", run_id, "write"
        )[-3000:]

    started = time.monotonic()
    runs = [
        (
            dag_id,
            mh.stack.trigger(
                dag_id, {"collection": shared, "sources": sources, "paragraphs": PARAGRAPHS, "milvus_conn_id": conn_id}
            ),
        )
        for dag_id, sources in WRITERS
    ]
    states = {run_id: mh.stack.wait_for_run(dag_id, run_id, timeout=240) for dag_id, run_id in runs}
    elapsed = time.monotonic() - started
    assert set(states.values()) == {"success"}, {
        run_id: (state, mh.stack.task_states(dag_id, run_id)) for (dag_id, run_id), state in zip(runs, states.values())
    }
    # The DAGs retry (for apache/airflow#72716 only): a retry must not turn a failed write into a final success.
    for dag_id, run_id in [*(("milvus_it_writers_inline", run_id) for run_id in first), *runs]:
        assert_no_unexplained_retries(mh.stack, dag_id, run_id)
    # The runs really overlapped in time (all three were running at once at some point).
    windows = [
        mh.stack.query("SELECT start_date, end_date FROM dag_run WHERE run_id = ?", (run_id,))[0] for _, run_id in runs
    ]
    assert max(start for start, _ in windows) < min(end for _, end in windows), windows
    for dag_id, run_id in runs:
        if dag_id != "milvus_it_writers_inline":
            assert "Deferring " in mh.stack.task_log(dag_id, run_id, "write")
    # The forced writer rewrote the chunks the first run had stored (what an insert would have duplicated).
    forced_run = next(run_id for dag_id, run_id in runs if dag_id == "milvus_it_writers_forced")
    summary = mh.stack.xcom("milvus_it_writers_forced", forced_run, "write")
    assert summary["written"] == summary["chunks"] > 0, summary

    expected = {row["pk"]: (row["source"], row["text"]) for row in rows(reader, reference)}
    found_rows = rows(reader, shared)
    stored = stored_count(reader, shared)
    pk_counts = Counter(row["pk"] for row in found_rows)
    found = {row["pk"]: (row["source"], row["text"]) for row in found_rows}
    duplicates = sum(n - 1 for n in pk_counts.values()) + stored - len(found_rows)
    same_text_twice = sum(n - 1 for n in Counter(found.values()).values())
    record_figure(
        "several writers (3 runs at once, inline + deferred, overlapping sources)",
        expected=len(expected),
        found=len(found_rows),
    )
    record_figure(
        "",
        measure=(
            f"several writers ({conn_id})",
            f"{len(WRITERS)} runs at once in {elapsed:.0f} s; "
            f"{len(found_rows)} entities vs {len(expected)} expected; {duplicates} duplicate ids; "
            f"{same_text_twice} chunks stored twice under different ids",
        ),
    )
    print(
        f"\n[several writers] expected={len(expected)} found={len(found_rows)} stored={stored} duplicates={duplicates} "
        f"same_text_twice={same_text_twice} elapsed={elapsed:.1f}s"
    )
    assert stored == len(found_rows), f"{stored} rows stored for {len(found_rows)} ids: some id is stored twice"
    assert duplicates == 0
    assert same_text_twice == 0
    assert found == expected
    assert {source for source, _ in found.values()} == {"docs/seed.md", *SOURCES}
    assert mh.staged_keys() == []
    assert mh.local_staged_files() == []
