"""
Source cost of a ``source_url`` ingest on object storage (issue 23): what an unchanged night reads.

Starts moto's S3 server (``testing/servers/s3_server.py``, its request log counts what the server answered),
Milvus Lite and the loopback embedding service (small latency, small vectors), uploads N small objects,
then runs ``MilvusAddDocumentsOperator(source_url="s3://...", replace_by="source", delete_missing=True)``
inline three times: the first run, an unchanged run, and a run after 1% of the objects changed and 1%
were deleted. Per run: wall time, object GETs and the bytes they returned (the sizes of the objects the
server answered GET for; werkzeug's log has no byte counts), LIST and HEAD requests, embedding inputs,
rows written and deleted, and the size of the task's XCom (its return value). Optionally one task vs
``--shards`` mapped shards (processes) on the first run. Run from the repository root::

    flock /tmp/bench.lock python -m bench.listing --sizes 1000,10000,100000 --dag-sizes 1000,10000,100000 \
        --out bench/results/listing.md
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import http.client
import json
import multiprocessing
import os
import re
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

BUCKET = "corpus"
REQUEST = re.compile(r'"(?:\x1b\[[0-9;]*m)*([A-Z]+) (\S+) HTTP/1\.1')


def body(i: int, version: int = 0) -> bytes:
    return f"Object {i} version {version}: a small document about listing metadata and {i % 97} vectors.".encode()


class Requests:
    """What moto's server answered since ``mark()``, read from its request log."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.offset = 0

    def mark(self) -> None:
        self.offset = self.log.stat().st_size

    def since(self) -> list[tuple[str, str]]:
        with self.log.open("rb") as handle:
            handle.seek(self.offset)
            return REQUEST.findall(handle.read().decode(errors="replace"))


def upload(server: Any, prefix: str, keys: list[int], version: int, sizes: dict[str, int]) -> None:
    """PUT the objects with boto3 (signed), 8 at a time: the changes between runs."""
    client = server.client()

    def put(i: int) -> None:
        data = body(i, version)
        client.put_object(Bucket=BUCKET, Key=f"{prefix}/doc{i:06d}.md", Body=data)
        sizes[f"doc{i:06d}.md"] = len(data)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(put, keys))


def populate(server: Any, prefix: str, count: int, sizes: dict[str, int]) -> None:
    """
    Create the corpus: plain HTTP PUTs (unsigned: moto accepts a new object so), 8 in flight on kept-alive connections.

    boto3 signs and parses each request and takes ~1.7x as long; moto's server (~2 ms a PUT) is the limit.
    Overwriting an object unsigned is refused (403), so changes go through ``upload``.
    """
    local = threading.local()

    def put(i: int) -> None:
        if not hasattr(local, "connection"):
            local.connection = http.client.HTTPConnection(server.host, server.port, timeout=60)
        data = body(i)
        local.connection.request("PUT", f"/{BUCKET}/{prefix}/doc{i:06d}.md", body=data)
        response = local.connection.getresponse()
        answer = response.read()
        if response.status != 200:
            raise RuntimeError(f"PUT {prefix}/doc{i:06d}.md: HTTP {response.status} {answer[:300]!r}")
        sizes[f"doc{i:06d}.md"] = len(data)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(put, range(count)))


def moto_list_seconds(server: Any, prefix: str) -> float:
    """
    Time moto's server takes to answer the LIST pages of ``prefix`` (what ``list_sources`` asks for).

    Raw HTTP on one kept-alive connection, bodies read, nothing parsed but the continuation token: the
    server's part of a listing, without any client (s3fs, aiobotocore, botocore's XML parser, ours).
    """
    connection = http.client.HTTPConnection(server.host, server.port, timeout=600)
    total, token = 0.0, ""
    while True:
        query = f"list-type=2&prefix={urllib.parse.quote(prefix + '/')}"
        if token:
            query += f"&continuation-token={urllib.parse.quote(token)}"
        started = time.monotonic()
        connection.request("GET", f"/{BUCKET}?{query}")
        data = connection.getresponse().read()
        total += time.monotonic() - started
        found = re.search(rb"<NextContinuationToken>([^<]+)</NextContinuationToken>", data)
        if not found:
            connection.close()
            return total
        token = found.group(1).decode()


def ingest(prefix: str, collection: str, **kwargs: Any) -> dict[str, Any]:
    from airflow_provider_milvus.operators.milvus import MilvusAddDocumentsOperator

    return MilvusAddDocumentsOperator(
        task_id="ingest",
        milvus_conn_id="bench_milvus",
        embedding_conn_id="bench_embeddings",
        collection_name=collection,
        source_url=f"s3://{BUCKET}/{prefix}",
        source_conn_id="bench_s3",
        replace_by="source",
        batch_size=500,
        max_concurrency=4,
        deferrable=False,
        **kwargs,
    ).execute(context={})


def create(collection: str) -> None:
    """Create ``collection`` with one unrelated row, as a collection that exists before the night."""
    from airflow_provider_milvus.operators.milvus import MilvusAddDocumentsOperator

    MilvusAddDocumentsOperator(
        task_id="create",
        milvus_conn_id="bench_milvus",
        embedding_conn_id="bench_embeddings",
        collection_name=collection,
        documents=[{"page_content": "created before the night", "metadata": {"source": "__created__"}}],
        replace_by="source",
        deferrable=False,
    ).execute(context={})


def warm_up(_: int) -> None:
    import pymilvus  # noqa: F401

    import airflow_provider_milvus.operators.milvus  # noqa: F401


def shard_run(args: tuple[str, str, int, int]) -> dict[str, Any]:
    prefix, collection, index, count = args
    return ingest(prefix, collection, shard_index=index, shard_count=count)


def measure(
    server: Any, requests: Requests, embeddings: Any, sizes: dict[str, int], prefix: str, work: Any
) -> dict[str, Any]:
    requests.mark()
    embeddings.reset()
    started = time.monotonic()
    summary = work()
    wall = time.monotonic() - started
    seen = requests.since()
    gets = [path for method, path in seen if method == "GET" and path.startswith(f"/{BUCKET}/{prefix}/")]
    summaries = summary if isinstance(summary, list) else [summary]
    from airflow_provider_milvus.core.files import list_sources

    listed = time.monotonic()  # the listing alone, once more after the run: its share of the wall time
    list_sources(f"s3://{BUCKET}/{prefix}", conn_id="bench_s3")
    listing_s = time.monotonic() - listed
    return {
        "wall_s": wall,
        "listing_s": listing_s,
        "moto_list_s": moto_list_seconds(server, prefix),
        "gets": len(gets),
        "bytes": sum(sizes.get(path.rsplit("/", 1)[-1], 0) for path in gets),
        "lists": sum(1 for method, path in seen if method == "GET" and "list-type=2" in path),
        "heads": sum(1 for method, _ in seen if method == "HEAD"),
        "embedded": embeddings.stats().get("inputs", 0),
        "written": sum(s.get("written", 0) for s in summaries),
        "deleted": sum(s.get("stale_deleted", 0) + s.get("vanished_deleted", 0) for s in summaries),
        "xcom_bytes": max(len(json.dumps(s)) for s in summaries),
    }


def run_size(
    args: Any, size: int, s3: Any, requests: Requests, embeddings: Any, collection: str
) -> list[tuple[int, str, dict]]:
    """Upload ``size`` objects, then the first, unchanged and 1%-changed runs (and one task vs shards)."""
    prefix = f"n{size}"
    sizes: dict[str, int] = {}
    started = time.monotonic()
    populate(s3, prefix, size, sizes)
    print(f"{size}: uploaded in {time.monotonic() - started:.0f} s", flush=True)
    rows: list[tuple[int, str, dict]] = []
    nightly = functools.partial(ingest, prefix, collection, delete_missing=True)
    for label in ("first run", "unchanged"):
        rows.append((size, label, measure(s3, requests, embeddings, sizes, prefix, nightly)))
        print(size, rows[-1], flush=True)
    step = 100  # 1% changed, another 1% deleted
    upload(s3, prefix, list(range(0, size, step)), 1, sizes)
    client = s3.client()
    for i in range(1, size, step):
        client.delete_object(Bucket=BUCKET, Key=f"{prefix}/doc{i:06d}.md")
    rows.append((size, "1% changed + 1% deleted", measure(s3, requests, embeddings, sizes, prefix, nightly)))
    print(size, rows[-1], flush=True)
    if args.shards and size == args.shard_size:
        for name in (f"{collection}_one", f"{collection}_shards"):  # created before timing: shards must not race
            create(name)
        one = functools.partial(ingest, prefix, f"{collection}_one")
        rows.append((size, "first run, one task", measure(s3, requests, embeddings, sizes, prefix, one)))
        jobs = [(prefix, f"{collection}_shards", index, args.shards) for index in range(args.shards)]
        spawn = multiprocessing.get_context("spawn")  # aiobotocore and gRPC clients are not fork-safe
        with concurrent.futures.ProcessPoolExecutor(args.shards, mp_context=spawn) as pool:
            list(pool.map(warm_up, range(args.shards)))  # imports, outside the timing
            sharded = functools.partial(lambda: list(pool.map(shard_run, jobs)))
            label = f"first run, {args.shards} shard processes"
            rows.append((size, label, measure(s3, requests, embeddings, sizes, prefix, sharded)))
        print(size, rows[-2:], flush=True)
    return rows


DAG_ID = "bench_listing_ingest"
DAG_FILE = f"""
import pendulum
from airflow.sdk import DAG, Param

from airflow_provider_milvus.operators.milvus import MilvusAddDocumentsOperator

with DAG(
    dag_id="{DAG_ID}",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    params={{"prefix": Param("", type="string"), "collection": Param("", type="string")}},
):
    MilvusAddDocumentsOperator(
        task_id="ingest",
        milvus_conn_id="bench_milvus",
        embedding_conn_id="bench_embeddings",
        collection_name="{{{{ params.collection }}}}",
        source_url="s3://{BUCKET}/{{{{ params.prefix }}}}",
        source_conn_id="bench_s3",
        replace_by="source",
        delete_missing=True,
        batch_size=500,
        max_concurrency=4,
        deferrable=False,
    )
"""


class DagTests:
    """``airflow dags test`` of a one-task DAG running the benchmark's operator, on one throwaway sqlite DB."""

    def __init__(self, home: Path) -> None:
        from testing.airflow_cli import AirflowCLI

        dags = home / "dags"
        dags.mkdir(parents=True)
        (dags / f"{DAG_ID}.py").write_text(DAG_FILE)
        self.cli = AirflowCLI(
            home=home,
            dags_folder=dags,
            env_overrides={k: v for k, v in os.environ.items() if k.startswith("AIRFLOW_CONN_")},
        )
        self.cli.migrate()
        self.day = 0

    def run(self, requests: Requests, prefix: str, collection: str) -> dict[str, Any]:
        """One DAG run: its growth of the metadata DB (row and index payload), its XCom bytes, its object GETs."""
        from bench.nightly import _db_bytes, _xcom_bytes

        db = self.cli.home / "airflow.db"
        before, xcom_before = _db_bytes(db), _xcom_bytes(db)
        self.day += 1
        requests.mark()
        started = time.monotonic()
        conf = json.dumps({"prefix": prefix, "collection": collection})
        self.cli.run("dags", "test", DAG_ID, f"2026-01-{self.day:02d}", "-c", conf, timeout=3600)
        seconds = time.monotonic() - started
        gets = [
            path for method, path in requests.since() if method == "GET" and path.startswith(f"/{BUCKET}/{prefix}/")
        ]
        return {
            "growth_bytes": _db_bytes(db) - before,
            "xcom_bytes": _xcom_bytes(db) - xcom_before,
            "gets": len(gets),
            "dags_test_s": seconds,
        }


def dag_runs(
    args: Any, dags: DagTests, size: int, s3: Any, requests: Requests, prefix: str, collection: str
) -> list[tuple[int, str, dict[str, Any]]]:
    """
    DAG runs at ``size`` objects: unchanged and another 1% changed + 1% deleted, on the collection the timed runs
    left; a first run on a fresh collection only up to ``--dag-first-max`` objects (it costs what the timed first
    run did, ~5 ms an object on Milvus Lite).
    """
    rows: list[tuple[int, str, dict[str, Any]]] = []
    if size <= args.dag_first_max:
        rows.append((size, "first run", dags.run(requests, prefix, f"{collection}_dag")))
    rows.append((size, "unchanged", dags.run(requests, prefix, collection)))
    upload(s3, prefix, list(range(50, size, 100)), 2, {})  # another 1% changed, another 1% deleted
    client = s3.client()
    for i in range(51, size, 100):
        client.delete_object(Bucket=BUCKET, Key=f"{prefix}/doc{i:06d}.md")
    rows.append((size, "1% changed + 1% deleted", dags.run(requests, prefix, collection)))
    print("dags test", size, rows, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--shards", type=int, default=4, help="one task vs this many shard processes (0: skip)")
    parser.add_argument("--shard-size", type=int, default=10000, help="corpus size of the one-vs-shards comparison")
    parser.add_argument("--latency", type=float, default=0.01)
    parser.add_argument("--dag-sizes", default="", help="corpus sizes whose DAG runs (airflow dags test) are measured")
    parser.add_argument("--dag-first-max", type=int, default=10000, help="largest corpus of a first DAG run")
    parser.add_argument("--out", default="bench/results/listing.md")
    args = parser.parse_args()
    os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="bench-listing-"))
    from airflow_provider_milvus.local_server import start_local_server, stop_local_server
    from bench.embedding_service import API_KEY, EmbeddingService
    from bench.machine import _cpu_model, describe_commit, load_average

    from testing.servers.s3_server import S3Server

    commit, load_start = describe_commit(), load_average()
    work = Path(tempfile.mkdtemp(prefix="bench-listing-"))
    server = start_local_server(str(work / "milvus"))
    rows: list[tuple[int, str, dict[str, Any]]] = []
    dag_rows: list[tuple[int, str, dict[str, Any]]] = []
    try:
        with (
            S3Server(log_path=work / "moto.log") as s3,
            EmbeddingService(dimensions=8, latency=args.latency, latency_per_input=0.0) as embeddings,
        ):
            s3.create_bucket(BUCKET)
            os.environ["AIRFLOW_CONN_BENCH_S3"] = s3.connection_json()
            os.environ["AIRFLOW_CONN_BENCH_MILVUS"] = json.dumps(
                {"conn_type": "milvus", "host": server.uri, "extra": {"timeout": 600}}
            )
            os.environ["AIRFLOW_CONN_BENCH_EMBEDDINGS"] = json.dumps(
                {"conn_type": "openai", "host": embeddings.base_url, "password": API_KEY, "extra": {"model": "m"}}
            )
            warm: dict[str, int] = {}  # imports and first connections, outside the timed runs
            upload(s3, "warmup", list(range(10)), 0, warm)
            ingest("warmup", f"warmup_{uuid.uuid4().hex[:6]}")
            dag_sizes = {int(n) for n in args.dag_sizes.split(",") if n}
            dags = DagTests(work / "airflow") if dag_sizes else None
            for size in (int(n) for n in args.sizes.split(",") if n):
                requests, collection = Requests(work / "moto.log"), f"listing_{size}_{uuid.uuid4().hex[:6]}"
                rows.extend(run_size(args, size, s3, requests, embeddings, collection))
                if dags is not None and size in dag_sizes:
                    dag_rows.extend(dag_runs(args, dags, size, s3, requests, f"n{size}", collection))
                write_results(args, rows, dag_rows, commit=commit, load_start=load_start, cpu=_cpu_model())
    finally:
        stop_local_server(str(work / "milvus"))


def write_results(
    args: Any,
    rows: list[tuple[int, str, dict[str, Any]]],
    dag_rows: list[tuple[int, str, dict[str, Any]]],
    *,
    commit: str,
    load_start: str,
    cpu: str,
) -> None:
    from bench.machine import load_average

    first = {size: m["wall_s"] for size, label, m in rows if label == "first run"}
    lines = [
        "# Listing decides: source cost of an object-storage ingest (issue 23)",
        "",
        f"- command: `flock /tmp/bench.lock python -m bench.listing {' '.join(sys.argv[1:])}`",
        f"- commit: {commit}",
        f"- machine: {os.cpu_count()} cores ({cpu}), shared with other work (load {load_start} at start, "
        f"{load_average()} at end)",
        "- object storage: moto's S3 server on loopback (`testing/servers/s3_server.py`); requests counted from its "
        "request log; bytes = sizes of the objects it answered GET for; objects uploaded by plain HTTP PUTs, 8 in "
        "flight (not timed)",
        "- `listing alone s`: `list_sources` of the same URL timed once more right after the run (not part of "
        "`wall s`); `moto LIST s`: the same LIST pages asked of moto's server by raw HTTP (bodies read, not parsed): "
        "the server's part of the listing, the rest of `listing alone s` is the client's (s3fs, aiobotocore, "
        "botocore's XML parsing, ours); `rest s` = `wall s` - `listing alone s`: reading the ledger, verifying it, "
        "reading, embedding and writing what changed",
        f"- Milvus Lite (gRPC, loopback); embeddings: `bench/embedding_service.py`, 8 dims, {args.latency} s/request",
        "- the operator: `MilvusAddDocumentsOperator(source_url='s3://...', replace_by='source', delete_missing=True, "
        "batch_size=500, max_concurrency=4)` inline, in one process after a warm-up run; one chunk per object; "
        "one task vs shards: each on a collection created (one row) before timing, shards as spawned processes "
        "whose imports are done before timing",
        "",
        "| objects | run | wall s | % of first run | listing alone s | moto LIST s | rest s | rest % of first run "
        "| GETs | bytes read | LISTs | HEADs | embedding inputs | rows written | rows deleted | XCom bytes |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for size, label, m in rows:
        share = f"{100 * m['wall_s'] / first[size]:.1f}%" if size in first else ""
        rest = max(m["wall_s"] - m["listing_s"], 0.0)
        rest_share = f"{100 * rest / first[size]:.1f}%" if size in first else ""
        lines.append(
            f"| {size:,} | {label} | {m['wall_s']:.2f} | {share} | {m['listing_s']:.2f} | {m['moto_list_s']:.2f} "
            f"| {rest:.2f} | {rest_share} | {m['gets']:,} | {m['bytes']:,} | {m['lists']:,} | {m['heads']:,} "
            f"| {m['embedded']:,} | {m['written']:,} | {m['deleted']:,} | {m['xcom_bytes']:,} |"
        )
    if dag_rows:
        lines += [
            "",
            "## Metadata DB and XCom growth per DAG run",
            "",
            f"- `airflow dags test {DAG_ID}` (one task: the operator above, same options) on one throwaway sqlite "
            "metadata DB, after the timed runs of each corpus size, against the collection they left: an unchanged "
            "run, then another 1% changed + 1% deleted; a first run on a fresh collection up to "
            f"{args.dag_first_max:,} objects",
            "- DB growth: bytes of row and index payload the DB gained in the run (sqlite `dbstat`, after a WAL "
            "checkpoint); XCom bytes: what the run added to the `xcom` table",
            "",
            "| objects | run | DB growth bytes | XCom bytes | GETs | dags test s |",
            "|---:|---|---:|---:|---:|---:|",
        ]
        for size, label, m in dag_rows:
            lines.append(
                f"| {size:,} | {label} | {m['growth_bytes']:,} | {m['xcom_bytes']:,} | {m['gets']:,} "
                f"| {m['dags_test_s']:.1f} |"
            )
    Path(args.out).write_text("\n".join(lines) + "\n")  # after each corpus size: a late failure keeps the rest
    print(Path(args.out).read_text(), flush=True)


if __name__ == "__main__":
    main()
