"""Issue 14's "nightly corpus" workload: a folder of real text files, ingested three times, ours vs the peer.

Corpus: ``--nightly-files`` text files (.py/.rst/.txt/.md, 6-24 KB) copied from this venv's
site-packages, picked by a hash of their path (deterministic, nothing downloaded). Runs, in order:

1. first run into an empty collection;
2. unchanged re-run;
3. re-run after 1% of the files were edited (one line inserted mid-file) and 1% deleted.

Ours: ``MilvusAddDocumentsOperator(source_url=<folder>, chunk_size=500, chunk_overlap=50,
replace_by="source", delete_missing=True).execute()`` (inline, the operator's whole path: read files,
split, id, plan, embed, write, remove stale and vanished rows). The peer: the same files read and split
into the same chunks (same loader, same splitter), then ``langchain_core.indexing.index`` with an
``InMemoryRecordManager`` kept across runs (as a persistent record DB would be) over a langchain-milvus
``Milvus`` store on the same server, ``cleanup="incremental"``, ``source_id_key="source"``, defaults
otherwise. The bare upsert: collection creation and the same read + split, then the raw embed -> ``upsert`` pipeline
(``limits.pipeline_insert``) at the operator's batch size and concurrency, into a fresh collection.

Metadata DB growth: ``airflow dags test`` of the example DAG ``milvus_nightly_ingest`` (``source_url``)
on a throwaway sqlite DB, three runs per corpus size, payload bytes of the DB after each run.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import sys
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import limits
from bench.embedding_service import API_KEY, MODEL, EmbeddingService
from bench.operators import EMBEDDING_CONN_ID, MILVUS_CONN_ID

CHUNK_SIZE, CHUNK_OVERLAP = 500, 50
SUFFIXES = (".py", ".rst", ".txt", ".md")
MIN_BYTES, MAX_BYTES = 6_000, 24_000
RUNS = ("first", "unchanged", "1% edited + 1% deleted")
DAGS = Path(__file__).resolve().parents[1] / "dags"  # the example DAGs; milvus_nightly_ingest for DB growth


@dataclass
class NightlyRow:
    method: str
    run: str
    seconds: float
    chunks: int = 0
    embedding_requests: int = 0
    embedding_inputs: int = 0
    written: int = 0  # chunks (re)written: upserted or added
    deleted: int = 0  # chunks deleted (stale + vanished)
    stale_round_trips: str = ""
    notes: str = ""

    @property
    def churn(self) -> int:
        return self.written + self.deleted


@dataclass
class NightlyResult:
    files: int = 0
    corpus_bytes: int = 0
    edited_chunks: int = 0  # chunks of the edited files after the edit
    edited_files: int = 0
    deleted_files: int = 0
    rows: list[NightlyRow] = field(default_factory=list)
    db_growth: list[dict[str, Any]] = field(default_factory=list)

    def find(self, method: str, run: str) -> NightlyRow | None:
        return next((r for r in self.rows if (r.method, r.run) == (method, run)), None)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"rows": [asdict(r) | {"churn": r.churn} for r in self.rows]}


OURS, PEER, BARE = "ours (operator)", "peer (LangChain index)", "bare upsert"


# -- corpus ------------------------------------------------------------------------------------------


def build_corpus(target: Path, files: int, *, suffix: str = "") -> int:
    """Copy ``files`` decodable text files from site-packages into ``target`` (names + ``suffix``); returns bytes."""
    site = Path(next(p for p in sys.path if p.endswith("site-packages")))
    candidates = []
    for path in site.rglob("*"):
        if path.suffix in SUFFIXES and path.is_file() and MIN_BYTES <= path.stat().st_size <= MAX_BYTES:
            rel = str(path.relative_to(site))
            if "dist-info" in rel or "bench" in Path(rel).parts[0]:
                continue
            candidates.append((hashlib.sha256(rel.encode()).hexdigest(), rel, path))
    candidates.sort()
    total = 0
    taken = 0
    for _, rel, path in candidates:
        if taken == files:
            break
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            continue
        if not text.strip():
            continue
        out = target / f"{rel}{suffix}"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
        total += len(text.encode())
        taken += 1
    return total


def mutate(target: Path, fraction: float = 0.01) -> tuple[list[str], list[str]]:
    """Edit ``fraction`` of the files (a line inserted mid-file) and delete another ``fraction``."""
    files = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
    step = max(1, round(1 / fraction))
    edited, deleted = files[0::step], files[step // 2 :: step]
    for rel in edited:
        path = target / rel
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        middle = len(lines) // 2
        lines.insert(middle, f"# nightly edit: this line was added to {rel} for the benchmark\n")
        path.write_text("".join(lines), encoding="utf-8")
    for rel in deleted:
        (target / rel).unlink()
    return edited, deleted


def chunk_documents(folder: Path) -> list[Any]:
    """The operator's loader and splitter (``load_documents`` + ``prepare_chunks``), as LangChain Documents."""
    from langchain_core.documents import Document

    from airflow_provider_milvus.core.documents import SplitOptions, prepare_chunks
    from airflow_provider_milvus.core.files import load_documents

    prepared = prepare_chunks(load_documents(str(folder)), split=SplitOptions(CHUNK_SIZE, CHUNK_OVERLAP))
    return [Document(page_content=c["text"], metadata=c["metadata"], id=c["id"]) for c in prepared.chunks]


# -- the three methods -------------------------------------------------------------------------------


def ours(folder: Path, collection: str, batch_size: int, max_concurrency: int) -> tuple[float, dict[str, Any]]:
    from airflow_provider_milvus.operators.milvus import MilvusAddDocumentsOperator

    operator = MilvusAddDocumentsOperator(
        task_id="nightly",
        milvus_conn_id=MILVUS_CONN_ID,
        embedding_conn_id=EMBEDDING_CONN_ID,
        collection_name=collection,
        source_url=str(folder),
        chunk_size=CHUNK_SIZE,
        chunk_overlap=CHUNK_OVERLAP,
        replace_by="source",
        delete_missing=True,
        batch_size=batch_size,
        max_concurrency=max_concurrency,
        deferrable=False,
    )
    started = time.perf_counter()
    result = operator.execute(context={})
    return time.perf_counter() - started, result


class Peer:
    """LangChain's indexing API over a langchain-milvus store; the record manager lives across runs."""

    def __init__(self, uri: str, embedding_url: str, collection: str) -> None:
        from langchain_core.indexing import InMemoryRecordManager

        self.uri, self.embedding_url, self.collection = uri, embedding_url, collection
        self.records = InMemoryRecordManager(namespace=f"milvus/{collection}")
        self.records.create_schema()

    def _store(self) -> Any:
        from langchain_milvus import Milvus
        from langchain_openai import OpenAIEmbeddings

        embeddings = OpenAIEmbeddings(
            model=MODEL, base_url=self.embedding_url, api_key=API_KEY, check_embedding_ctx_length=False, max_retries=6
        )
        return Milvus(
            embedding_function=embeddings,
            collection_name=self.collection,
            connection_args={"uri": self.uri},
            auto_id=False,
        )

    def run(self, folder: Path) -> tuple[float, dict[str, Any], Counter[str]]:
        from langchain_core.indexing import index

        calls: Counter[str] = Counter()
        started = time.perf_counter()
        store = self._store()
        original_delete = store.delete

        def counted_delete(*args: Any, **kwargs: Any) -> Any:
            calls["delete"] += 1
            return original_delete(*args, **kwargs)

        store.delete = counted_delete  # type: ignore[method-assign]
        docs = chunk_documents(folder)
        for doc in docs:
            doc.id = None  # the indexing API derives its own ids (content + metadata hash)
        result = index(docs, self.records, store, cleanup="incremental", source_id_key="source")
        seconds = time.perf_counter() - started
        store.client.close()
        return seconds, dict(result), calls


def bare_upsert(
    folder: Path, uri: str, embedding_url: str, collection: str, dimensions: int, batch_size: int, max_concurrency: int
) -> tuple[float, int]:
    started = time.perf_counter()
    limits.create_collection(uri, collection, dimensions)  # timed: ours and the peer create theirs too
    docs = chunk_documents(folder)
    rows = [{"pk": d.id, "text": d.page_content, **d.metadata} for d in docs]
    limits.pipeline_insert(
        uri, embedding_url, collection, rows, batch=batch_size, concurrency=max_concurrency, upsert=True
    )
    return time.perf_counter() - started, len(rows)


# -- metadata DB growth ------------------------------------------------------------------------------


def db_growth(files: int, embeddings: EmbeddingService, uri: str, home: Path) -> list[dict[str, Any]]:
    """Three ``airflow dags test milvus_nightly_ingest`` runs (first, unchanged, 1% edited/deleted), fresh sqlite DB.

    The example DAG as shipped (``dags/``, its own batch size and concurrency), its ``milvus_default``
    connection pointed at the benchmark's Milvus with the benchmark's embedding connection; the corpus
    files get a ``.txt`` suffix because the DAG reads ``**/*.md`` and ``**/*.txt``.
    """
    import json

    from testing.airflow_cli import AirflowCLI

    corpus = home / f"corpus-{files}"
    build_corpus(corpus, files, suffix=".txt")
    collection = f"bench_dagtest_{files}_{uuid.uuid4().hex[:6]}"
    milvus_default = json.dumps(
        {
            "conn_type": "milvus",
            "host": uri,
            "extra": {"embedding_conn_id": EMBEDDING_CONN_ID, "embedding_model": MODEL},
        }
    )
    cli = AirflowCLI(
        home=home / f"airflow-{files}",
        dags_folder=DAGS,
        env_overrides={k: v for k, v in os.environ.items() if k.startswith("AIRFLOW_CONN_")}
        | {"AIRFLOW_CONN_MILVUS_DEFAULT": milvus_default},
    )
    cli.migrate()
    db = cli.home / "airflow.db"
    rows = []
    before = _db_bytes(db)
    conf = json.dumps({"corpus_dir": str(corpus), "collection": collection})
    try:
        for day, run in zip(("2026-01-01", "2026-01-02", "2026-01-03"), RUNS):
            if run == RUNS[2]:
                mutate(corpus)
            embeddings.reset()
            started = time.perf_counter()
            cli.run("dags", "test", "milvus_nightly_ingest", day, "-c", conf)
            seconds = time.perf_counter() - started
            after = _db_bytes(db)
            rows.append(
                {
                    "files": files,
                    "chunks": _result_chunks(db),
                    "run": run,
                    "db_bytes_before": before,
                    "db_bytes_after": after,
                    "growth_bytes": after - before,
                    "xcom_bytes": _xcom_bytes(db),
                    "dags_test_s": round(seconds, 1),
                    "embedding_inputs": embeddings.stats()["inputs"],
                }
            )
            before = after
    finally:
        _drop(uri, [collection])
    return rows


def _db_bytes(db: Path) -> int:
    """Bytes of row and index payload the sqlite DB holds (``dbstat``), after a checkpoint of any WAL.

    Payload, not file or page size: small rows fill the slack of existing pages, so pages rarely move.
    """
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return int(conn.execute("SELECT COALESCE(SUM(payload), 0) FROM dbstat").fetchone()[0])


def _result_chunks(db: Path) -> int | None:
    """The chunk count of the latest run's operator result (its XCom), to show the corpus size."""
    import json

    with sqlite3.connect(db) as conn:
        row = conn.execute(
            "SELECT value FROM xcom WHERE key = 'return_value' ORDER BY timestamp DESC LIMIT 1"
        ).fetchone()
    try:
        value = json.loads(row[0]) if row else None
        value = json.loads(value) if isinstance(value, str) else value
        return int(value["chunks"]) if isinstance(value, dict) else None
    except (TypeError, ValueError, KeyError):
        return None


def _xcom_bytes(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT COALESCE(SUM(LENGTH(value)), 0) FROM xcom").fetchone()
    return int(row[0])


# -- the workload ------------------------------------------------------------------------------------


def run_nightly(
    uri: str,
    embeddings: EmbeddingService,
    *,
    files: int,
    batch_size: int,
    max_concurrency: int,
    workdir: Path,
    db_sizes: tuple[int, ...] = (),
) -> NightlyResult:
    result = NightlyResult(files=files)
    ours_dir, peer_dir = workdir / "ours", workdir / "peer"
    result.corpus_bytes = build_corpus(ours_dir, files)
    shutil.copytree(ours_dir, peer_dir)
    suffix = uuid.uuid4().hex[:6]
    ours_collection, peer_collection, bare_collection = (
        f"bench_nightly_{w}_{suffix}" for w in ("ours", "peer", "bare")
    )
    peer = Peer(uri, embeddings.base_url, peer_collection)
    print(f"nightly corpus: {files} files, {result.corpus_bytes / 1e6:.1f} MB", flush=True)
    try:
        for run in RUNS:
            if run == RUNS[2]:
                edited, deleted = mutate(ours_dir)
                assert mutate(peer_dir) == (edited, deleted)
                result.edited_files, result.deleted_files = len(edited), len(deleted)
                edited_set = set(edited)
                result.edited_chunks = sum(1 for d in chunk_documents(ours_dir) if d.metadata["source"] in edited_set)
            embeddings.reset()
            seconds, summary = ours(ours_dir, ours_collection, batch_size, max_concurrency)
            stats = embeddings.stats()
            trips = summary.get("round_trips", {})
            row = NightlyRow(
                OURS,
                run,
                seconds,
                chunks=summary["chunks"],
                embedding_requests=stats["requests"],
                embedding_inputs=stats["inputs"],
                written=summary["written"],
                deleted=summary.get("stale_deleted", 0) + summary.get("vanished_deleted", 0),
                stale_round_trips=f"{trips.get('lookup', 0)} lookup + {trips.get('delete', 0)} delete",
                notes=f"unchanged {summary.get('unchanged', 0)}, embedded {summary.get('embedded', 0)}, "
                f"vanished sources {summary.get('vanished_sources', 0)}, write batches {trips.get('write', 0)}",
            )
            result.rows.append(row)
            _print(row)
            embeddings.reset()
            seconds, outcome, calls = peer.run(peer_dir)
            stats = embeddings.stats()
            row = NightlyRow(
                PEER,
                run,
                seconds,
                chunks=outcome["num_added"] + outcome["num_updated"] + outcome["num_skipped"],
                embedding_requests=stats["requests"],
                embedding_inputs=stats["inputs"],
                written=outcome["num_added"] + outcome["num_updated"],
                deleted=outcome["num_deleted"],
                stale_round_trips=f"{calls['delete']} delete",
                notes=", ".join(f"{k} {v}" for k, v in outcome.items()),
            )
            result.rows.append(row)
            _print(row)
            if run == RUNS[0]:
                embeddings.reset()
                seconds, chunks = bare_upsert(
                    ours_dir,
                    uri,
                    embeddings.base_url,
                    bare_collection,
                    embeddings.dimensions,
                    batch_size,
                    max_concurrency,
                )
                stats = embeddings.stats()
                row = NightlyRow(
                    BARE,
                    run,
                    seconds,
                    chunks=chunks,
                    embedding_requests=stats["requests"],
                    embedding_inputs=stats["inputs"],
                    written=chunks,
                    notes="create collection + read + split + raw embed -> upsert pipeline, no bookkeeping",
                )
                result.rows.append(row)
                _print(row)
    finally:
        _drop(uri, [ours_collection, peer_collection, bare_collection])
    for size in db_sizes:
        print(f"metadata DB growth: airflow dags test, {size} files", flush=True)
        result.db_growth += db_growth(size, embeddings, uri, workdir / "dagtest")
        for entry in result.db_growth[-3:]:
            print(f"  {entry}", flush=True)
    return result


def _print(row: NightlyRow) -> None:
    print(
        f"  {row.method:<24} {row.run:<24} {row.seconds:8.2f} s  chunks {row.chunks:,}  emb req "
        f"{row.embedding_requests:,} inputs {row.embedding_inputs:,}  written {row.written:,} deleted "
        f"{row.deleted:,}  stale trips {row.stale_round_trips}  {row.notes}",
        flush=True,
    )


def _drop(uri: str, names: list[str]) -> None:
    from pymilvus import MilvusClient

    client = MilvusClient(uri=uri)
    try:
        for name in names:
            if client.has_collection(name):
                client.drop_collection(name)
    finally:
        client.close()
