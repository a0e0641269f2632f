"""Triggerer failover for real: two ``airflow triggerer`` processes, the one running a job is SIGKILLed.

Airflow 3.3 (``airflow/models/trigger.py``, ``Trigger.assign_unassigned``): every triggerer loop
assigns to itself the triggers whose ``triggerer_id`` is NULL or a triggerer job whose
``latest_heartbeat`` is older than ``[triggerer] triggerer_health_check_threshold`` (30 s by default;
10 s here, heartbeat every 2 s). So after a ``kill -9`` the surviving triggerer starts the same trigger
again from the beginning within about the threshold; the job must be idempotent (writes are upserts by
deterministic ids) and its staged input must still be there (on shared storage: S3 here).

Each test starts a deferred job that runs long enough (embedding latency on the loopback server),
waits until it is mid-gather, kills the triggerer running it (found from the trigger row's
``triggerer_id`` -> ``job.pid``), and checks the task ends ``success`` in its first try, run by the
other triggerer, with exactly the expected data (read back with pymilvus).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from tests.conftest import require_standalone_executable
from tests.integration.multihost import MultiHost, record_figure
from tests.integration.readback import all_pks, wait_until

pytestmark = pytest.mark.integration

INGEST_CHUNKS = 20_000
INGEST_LATENCY = 0.05  # per embedding request of 100 chunks
DELETE_HELD_S = 5.0  # the slow proxy holds the delete request this long: the kill lands meanwhile
SEARCH_QUERIES = 500  # 32 embedding requests of 16 queries; the list (~30 KB) and the hits are staged


def failover(
    mh: MultiHost, dag_id: str, run_id: str, task_id: str, *, mid_run: Any, timeout: float = 300
) -> dict[str, Any]:
    """Kill the triggerer running the task's trigger once ``mid_run()``; the other must finish it."""
    stack = mh.stack
    trigger_id, first_job, first_name = mh.wait_for_assignment(dag_id, run_id, task_id)
    wait_until(mid_run, 120, f"{dag_id} reached the middle of its run")
    assert stack.task_states(dag_id, run_id)[task_id] == "deferred", stack.task_states(dag_id, run_id)
    killed_at = time.monotonic()
    mh.kill_triggerer(first_name)
    _, second_job, second_name = mh.wait_for_assignment(dag_id, run_id, task_id, not_job=first_job, timeout=120)
    taken_over_after = time.monotonic() - killed_at
    mh.stack.start_component(first_name)  # two triggerers again for the next test (boots while this run ends)
    state = stack.wait_for_run(dag_id, run_id, timeout=timeout)
    logs = stack.task_log(dag_id, run_id, task_id)
    assert state == "success", f"{dag_id} ended {state}\n{logs[-4000:]}"
    trigger_logs = sorted(p.name for p in stack.task_log_files(dag_id, run_id, task_id) if ".trigger." in p.name)
    mh.killed.append({"dag": dag_id, "killed": first_name, "took_over": second_name})
    mh.wait_for_triggerers(2)
    return {
        "trigger_id": trigger_id,
        "first": (first_job, first_name),
        "second": (second_job, second_name),
        "killed_at": mh.killed_at,
        "taken_over_after_s": round(taken_over_after, 1),
        "tries": stack.task_tries(dag_id, run_id, task_id),
        "trigger_logs": trigger_logs,
    }


def assert_nothing_staged_left(mh: MultiHost) -> None:
    assert mh.staged_keys() == [], "staged objects left in S3 after success"
    assert mh.local_staged_files() == [], "staged data went through a local directory"


@pytest.fixture(scope="module")
def ingest(multihost: MultiHost, reader: Any) -> dict[str, Any]:
    """A deferred ingest of INGEST_CHUNKS chunks whose triggerer is killed after ~25 % of the batches."""
    mh = multihost
    collection = f"fo_{uuid.uuid4().hex[:10]}"
    mh.embeddings.reset_stats()
    mh.embeddings.latency = INGEST_LATENCY
    started = time.monotonic()
    requests_at_kill: list[int] = [0]
    try:
        run_id = mh.stack.trigger(
            "milvus_it_failover_add", {"collection": collection, "n": INGEST_CHUNKS, "prefix": "fo"}
        )

        def mid_gather() -> bool:  # 200 embedding requests in all (100 chunks each)
            requests_at_kill[0] = mh.embeddings.stats.requests
            return requests_at_kill[0] >= 50

        outcome = failover(mh, "milvus_it_failover_add", run_id, "add", mid_run=mid_gather)
    finally:
        mh.embeddings.latency = 0.0
    return {
        "collection": collection,
        "run_id": run_id,
        "outcome": outcome,
        "requests_at_kill": requests_at_kill[0],
        "requests": mh.embeddings.stats.requests,
        "elapsed_s": time.monotonic() - started,
        "trigger_rows": mh.stack.recorder.for_task("milvus_it_failover_add", run_id, "add"),
    }


def test_killed_triggerer_mid_ingest_other_takes_over_exactly_once_each(
    multihost: MultiHost, ingest: dict[str, Any], reader: Any
) -> None:
    mh, outcome = multihost, ingest["outcome"]
    # The staged input went through S3 (trigger kwargs hold an s3:// reference, never the documents).
    rows = ingest["trigger_rows"]
    assert rows
    assert "s3://staging_s3@" in rows[0].kwargs
    assert "fo document" not in rows[0].kwargs

    pks = all_pks(reader, ingest["collection"])
    expected = {f"fo-{i}" for i in range(INGEST_CHUNKS)}
    duplicates = len(pks) - len(set(pks))
    record_figure(
        "triggerer SIGKILL mid-ingest (2 triggerers, Airflow 3.3)", faults=1, expected=len(expected), found=len(pks)
    )
    record_figure(
        "",
        measure=(
            "triggerer failover, ingest",
            f"{INGEST_CHUNKS} chunks; killed {outcome['first'][1]} after "
            f"{ingest['requests_at_kill']} of 200 embedding batches; taken over by "
            f"{outcome['second'][1]} in {outcome['taken_over_after_s']} s; task success in "
            f"{ingest['elapsed_s']:.0f} s, try {outcome['tries']}; {len(pks)} entities, "
            f"{duplicates} duplicates",
        ),
    )
    print(
        f"\n[failover ingest] {outcome} requests_at_kill={ingest['requests_at_kill']} total_requests="
        f"{ingest['requests']} elapsed={ingest['elapsed_s']:.1f}s entities={len(pks)} duplicates={duplicates}"
    )
    assert duplicates == 0
    assert set(pks) == expected
    assert outcome["tries"] == 1, "the task was retried instead of its trigger being taken over"
    assert outcome["first"][0] != outcome["second"][0]
    assert ingest["requests"] > 200, "the surviving triggerer did not run the job again"
    summary = mh.stack.xcom("milvus_it_failover_add", ingest["run_id"], "add")
    print(f"[failover ingest] summary of the run that took over: {summary}")
    assert summary["chunks"] == INGEST_CHUNKS
    # The triggerer that took over wrote its own log for this trigger.
    assert any(f".trigger.{outcome['second'][0]}." in name for name in outcome["trigger_logs"]), outcome
    assert_nothing_staged_left(mh)


STANDALONE_CHUNKS = 10_000


@pytest.mark.standalone
def test_killed_triggerer_mid_ingest_on_standalone_leaves_each_id_once(multihost: MultiHost) -> None:
    """
    The mid-ingest kill against the real standalone 2.3.5 server, which keeps duplicate primary keys.

    On Milvus Lite (above) a write path that inserted twice would be deduplicated by the server; here the
    rerun by the surviving triggerer would leave a second copy of every chunk it wrote again.
    """
    from pymilvus import MilvusClient

    mh = multihost
    if mh.standalone_uri is None:
        require_standalone_executable()  # skips locally without the server, fails in CI
    collection = f"fs_{uuid.uuid4().hex[:10]}"
    requests = STANDALONE_CHUNKS // 100
    mh.embeddings.reset_stats()
    mh.embeddings.latency = 0.1
    started = time.monotonic()
    try:
        run_id = mh.stack.trigger(
            "milvus_it_failover_add",
            {"collection": collection, "n": STANDALONE_CHUNKS, "prefix": "fs", "milvus_conn_id": "milvus_standalone"},
        )
        at_kill = [0]

        def mid_gather() -> bool:
            at_kill[0] = mh.embeddings.stats.requests
            return at_kill[0] >= requests // 4

        outcome = failover(mh, "milvus_it_failover_add", run_id, "add", mid_run=mid_gather)
    finally:
        mh.embeddings.latency = 0.0
    reader = MilvusClient(uri=mh.standalone_uri)
    try:
        pks = all_pks(reader, collection)
        # count(*) counts every stored row; 2.3.5's queries return one row per primary key (test_several_writers).
        stored = int(reader.query(collection, filter="", output_fields=["count(*)"])[0]["count(*)"])
        reader.drop_collection(collection)
    finally:
        reader.close()
    print(
        f"\n[failover ingest, standalone] {outcome} requests_at_kill={at_kill[0]} total_requests="
        f"{mh.embeddings.stats.requests} elapsed={time.monotonic() - started:.1f}s entities={len(pks)} "
        f"duplicates={len(pks) - len(set(pks))} stored={stored}"
    )
    assert stored == STANDALONE_CHUNKS, f"{stored} rows stored for {STANDALONE_CHUNKS} ids"
    assert len(pks) - len(set(pks)) == 0
    assert set(pks) == {f"fs-{i}" for i in range(STANDALONE_CHUNKS)}
    assert outcome["tries"] == 1, "the task was retried instead of its trigger being taken over"
    assert outcome["first"][0] != outcome["second"][0]
    assert mh.embeddings.stats.requests > requests, "the surviving triggerer did not run the job again"
    assert_nothing_staged_left(mh)


@pytest.fixture(scope="module")
def ingested(ingest: dict[str, Any]) -> str:
    return ingest["collection"]


def test_killed_triggerer_mid_search_other_takes_over(multihost: MultiHost, ingested: str) -> None:
    mh = multihost
    mh.embeddings.reset_stats()
    mh.embeddings.latency = 0.3
    try:
        run_id = mh.stack.trigger(
            "milvus_it_failover_search", {"collection": ingested, "n": SEARCH_QUERIES, "prefix": "fo"}
        )
        outcome = failover(
            mh, "milvus_it_failover_search", run_id, "search", mid_run=lambda: mh.embeddings.stats.requests >= 8
        )
    finally:
        mh.embeddings.latency = 0.0
    hits = mh.stack.xcom("milvus_it_failover_search", run_id, "search")
    print(f"\n[failover search] {outcome} total_requests={mh.embeddings.stats.requests}")
    record_figure("triggerer SIGKILL mid-search", faults=1)
    record_figure(
        "",
        measure=(
            "triggerer failover, search",
            f"{SEARCH_QUERIES} queries; killed {outcome['first'][1]}, taken over by "
            f"{outcome['second'][1]} in {outcome['taken_over_after_s']} s; "
            f"{sum(len(h) == 3 for h in hits)} of {SEARCH_QUERIES} queries with 3 hits",
        ),
    )
    logs = "\n".join(mh.stack.process_log(name) for name in ("triggerer", "triggerer-2"))
    logs += mh.stack.task_log("milvus_it_failover_search", run_id, "search")
    assert "result_ref" in logs, "the hits were not staged"
    assert "s3://staging_s3@" in logs, "the hits were not staged on S3"
    assert outcome["tries"] == 1
    assert len(hits) == SEARCH_QUERIES
    assert all(len(per_query) == 3 for per_query in hits)
    assert all(hit["metadata"]["doc_id"].startswith("fo-") for per_query in hits for hit in per_query)
    assert_nothing_staged_left(mh)  # the staged queries and the staged (large) result are both gone


def delete_request_markers(collection: str, expr: str) -> list[bytes]:
    """Bytes only a DeleteRequest for ``expr`` on ``collection`` carries, as sent (gRPC sends it uncompressed).

    Its ``expr`` field has another field number than a QueryRequest's (the count and key look-ups that
    precede the delete carry the same filter).
    """
    from pymilvus.grpc_gen import milvus_pb2

    markers = [
        milvus_pb2.DeleteRequest(collection_name=collection).SerializeToString(),
        milvus_pb2.DeleteRequest(expr=expr).SerializeToString(),
    ]
    assert markers[1] != milvus_pb2.QueryRequest(expr=expr).SerializeToString()
    return markers


def test_killed_triggerer_mid_delete_other_takes_over(multihost: MultiHost, ingested: str, reader: Any) -> None:
    """A delete is one Milvus request: kill the triggerer while it is in flight (held by a slow proxy)."""
    from airflow_provider_milvus.core.filters import render_filter

    mh = multihost
    matched = int(
        reader.query(ingested, filter='group == "g0"', output_fields=["count(*)"], consistency_level="Strong")[0][
            "count(*)"
        ]
    )
    assert matched == len([i for i in range(INGEST_CHUNKS) if i % 3 == 0])
    # The DAG's filter as the provider renders it; no tenant, so the delete request carries it as is.
    markers = delete_request_markers(ingested, render_filter("group == {g}", {"g": "g0"}))
    mh.slow_milvus.reset()
    mh.slow_milvus.hold(markers, DELETE_HELD_S)
    try:
        run_id = mh.stack.trigger(
            "milvus_it_failover_delete", {"collection": ingested, "group": "g0", "milvus_conn_id": "milvus_slow"}
        )
        outcome = failover(
            mh,
            "milvus_it_failover_delete",
            run_id,
            "delete",
            mid_run=lambda: mh.slow_milvus.holding(markers) is not None,
        )
    finally:
        mh.slow_milvus.hold([], 0.0)  # hold nothing from now on (``held`` is read below)
    requests = [c for c in mh.slow_milvus.held if all(m in c.data for m in markers)]
    pks = all_pks(reader, ingested)
    expected = {f"fo-{i}" for i in range(INGEST_CHUNKS) if i % 3 != 0}
    summary = mh.stack.xcom("milvus_it_failover_delete", run_id, "delete")
    killed_at = outcome["killed_at"]
    # In flight at the kill: the first triggerer had sent it (it reached the proxy before SIGKILL) and
    # Milvus had not received it (the proxy forwarded it after SIGKILL, or never).
    first = requests[0] if requests else None
    in_flight = first is not None and first.received_at <= killed_at and (first.forwarded_at or killed_at) >= killed_at
    print(f"\n[failover delete] {outcome} matched={matched} summary={summary} delete requests={len(requests)}")
    record_figure("triggerer SIGKILL mid-delete", faults=1, expected=len(expected), found=len(pks))
    if first is None:
        when = "no delete request seen by the proxy"
    else:
        forwarded = (
            "never forwarded"
            if first.forwarded_at is None
            else f"forwarded {first.forwarded_at - killed_at:+.2f} s from it"
        )
        when = (
            f"its delete request {'in flight' if in_flight else 'NOT in flight'} (reached the proxy "
            f"{first.received_at - killed_at:+.2f} s from the SIGKILL, {forwarded})"
        )
    # What the run that took over still found says whether the first delete reached Milvus after all.
    first_delete = "had been applied" if summary["matched"] == 0 else "was never applied"
    record_figure(
        "",
        measure=(
            "triggerer failover, delete",
            f"{matched} to delete, killed {outcome['first'][1]} with {when}; "
            f"taken over by {outcome['second'][1]} in {outcome['taken_over_after_s']} s, whose delete matched "
            f"{summary['matched']} (the first delete {first_delete}); {len(pks)} entities left, "
            f"{len(expected)} expected",
        ),
    )
    assert first is not None, "the delete request never went through the slow proxy"
    assert in_flight, f"the delete was not in flight at the kill: {when}"
    # One delete request from the killed triggerer, and one from the other unless nothing was left to delete.
    assert len(requests) == (1 if summary["matched"] == 0 else 2), len(requests)
    assert summary["matched"] in (0, matched), summary
    assert outcome["tries"] == 1
    assert len(pks) == len(set(pks))
    assert set(pks) == expected
    assert_nothing_staged_left(mh)


SLOW_TASKS = 4
SLOW_CHUNKS_PER_TASK = 50_000


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_slow_four_big_ingests_one_triggerer_killed(multihost: MultiHost, reader: Any) -> None:
    """200k chunks in 4 deferred tasks; once all four are deferred, the triggerer running most is killed."""
    mh, stack = multihost, multihost.stack
    mh.wait_for_triggerers(2)
    mh.embeddings.reset_stats()
    mh.embeddings.latency = INGEST_LATENCY
    runs: dict[str, str] = {}
    started = time.monotonic()
    total_requests = SLOW_TASKS * SLOW_CHUNKS_PER_TASK // 100
    try:
        for n in range(SLOW_TASKS):
            collection = f"fo_slow{n}_{uuid.uuid4().hex[:8]}"
            runs[collection] = stack.trigger(
                "milvus_it_failover_add", {"collection": collection, "n": SLOW_CHUNKS_PER_TASK, "prefix": f"s{n}"}
            )
        for run_id in runs.values():
            mh.wait_for_assignment("milvus_it_failover_add", run_id, "add", timeout=600)
        running = {
            c: mh.trigger_of("milvus_it_failover_add", r, "add")
            for c, r in runs.items()
            if stack.task_states("milvus_it_failover_add", r).get("add") == "deferred"
        }
        by_triggerer: dict[str, int] = {}
        for _, job_id in running.values():
            name = mh.triggerer_name(job_id) if job_id is not None else None
            if name:
                by_triggerer[name] = by_triggerer.get(name, 0) + 1
        victim = max(by_triggerer, key=lambda name: by_triggerer[name])
        victim_job = next(job for _, job in running.values() if job is not None and mh.triggerer_name(job) == victim)
        moved = [c for c, (_, job) in running.items() if job == victim_job]
        assert moved, running
        requests_at_kill = mh.embeddings.stats.requests
        mh.kill_triggerer(victim)
        killed_at = time.monotonic()
        for collection in moved:
            mh.wait_for_assignment("milvus_it_failover_add", runs[collection], "add", not_job=victim_job, timeout=120)
        taken_over_after = time.monotonic() - killed_at
        stack.start_component(victim)
        states = {c: stack.wait_for_run("milvus_it_failover_add", r, timeout=1800) for c, r in runs.items()}
    finally:
        mh.embeddings.latency = 0.0
    elapsed = time.monotonic() - started
    found = 0
    for collection, run_id in runs.items():
        n = list(runs).index(collection)
        pks = all_pks(reader, collection)
        found += len(pks)
        assert states[collection] == "success", stack.task_log("milvus_it_failover_add", run_id, "add")[-3000:]
        assert stack.task_tries("milvus_it_failover_add", run_id, "add") == 1
        assert len(pks) == len(set(pks))
        assert set(pks) == {f"s{n}-{i}" for i in range(SLOW_CHUNKS_PER_TASK)}
        reader.drop_collection(collection)
    expected = SLOW_TASKS * SLOW_CHUNKS_PER_TASK
    record_figure("triggerer SIGKILL mid-ingest, 4 tasks (slow)", faults=1, expected=expected, found=found)
    record_figure(
        "",
        measure=(
            "triggerer failover, 4 x 50k (slow)",
            f"{expected} chunks in {SLOW_TASKS} tasks; {by_triggerer} triggers per triggerer; killed "
            f"{victim} after {requests_at_kill} of {total_requests} batches; {len(moved)} triggers "
            f"taken over in {taken_over_after:.1f} s; all success in {elapsed:.0f} s",
        ),
    )
    print(
        f"\n[slow failover] assignments={by_triggerer} victim={victim} moved={len(moved)} "
        f"taken_over_after={taken_over_after:.1f}s requests={mh.embeddings.stats.requests} elapsed={elapsed:.0f}s "
        f"found={found}/{expected}"
    )
    assert_nothing_staged_left(mh)
