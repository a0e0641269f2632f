"""The sharded example DAG on a real Airflow deployment: 4 mapped shards, then one cleanup, equal the corpus.

``dags/milvus_sharded_ingest.py`` as shipped (tests/integration/dags/milvus_it_sharded.py only shortens its
retry delay) runs on the multi-host deployment: a real scheduler whose LocalExecutor runs the 4 ``write_shard``
task instances as separate processes at once, Milvus Lite over gRPC, embeddings over HTTP on loopback (the
embedding connection is set on ``milvus_default``, as a deployment configures the example). The corpus is a
local folder of a few hundred small ``.md``/``.txt`` files under several subfolders, named at random.

After every run the collection is read back whole with pymilvus at Strong consistency and compared with the
corpus split as the example splits it (LangChain's ``RecursiveCharacterTextSplitter``, 500/50): the set of
(source, text) pairs, with no primary key or (source, text) pair stored twice and ``count(*)`` equal.

- the first run: each shard writes exactly the files that hash to it, the cleanup deletes and writes nothing;
- a shard's task process is SIGKILLed mid-write (after its first batch is stored, while the embedding server
  holds its last batch): Airflow retries it, the retry writes only what the killed try had not, and the
  collection equals the corpus;
- files vanish from every shard and a few are edited: the next run deletes the vanished ones (in the
  cleanup), embeds only the edited chunks (counted at the embedding server), and equals the new corpus.
"""

from __future__ import annotations

import os
import random
import signal
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_milvus.core.listing import shard_of

from tests.integration.readback import all_rows, stored_count, wait_until
from tests.integration.retries import unexplained_retries

if TYPE_CHECKING:
    from tests.integration.multihost import MultiHost

pytestmark = pytest.mark.integration

DAG_ID = "milvus_sharded_ingest"
SHARDS = 4
FILES = 320
BATCH = 64  # the example's batch_size: embedding requests (and writes) of 64 chunks
FOLDERS = ("guides", "guides/setup", "notes", "notes/2026/q1", "reference", "faq")
WORDS = (
    "river delta glacier basalt canyon harbor meadow lagoon tundra summit estuary plateau quarry "
    "orchard causeway ridge spring marsh fjord dune"
).split()

Chunks = set[tuple[str, str]]


def write_corpus(root: Path, *, seed: int) -> None:
    """FILES files in FOLDERS, named at random; most are one chunk, about one in seven is two to four."""
    rng = random.Random(seed)
    for _ in range(FILES):
        name = f"{rng.getrandbits(40):010x}"
        path = root / rng.choice(FOLDERS) / f"{name}{rng.choice(('.md', '.md', '.txt'))}"
        path.parent.mkdir(parents=True, exist_ok=True)
        paragraphs = 1 if rng.random() < 0.85 else rng.randint(3, 6)
        path.write_text("\n\n".join(paragraph(rng, name, p) for p in range(paragraphs)))
    (root / "notes" / "ignored.json").write_text('{"not": "matched by the example\'s glob"}')


def paragraph(rng: random.Random, name: str, number: int) -> str:
    """About 200 characters naming its file (the embedding server's hold finds a file's chunks by it)."""
    return f"Note {name} part {number}: " + " ".join(rng.choice(WORDS) for _ in range(25)) + "."


def sources(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.suffix in (".md", ".txt"))


def corpus_chunks(root: Path) -> dict[str, list[str]]:
    """Each file's chunks, split as the example splits (chunk_size=500, chunk_overlap=50)."""
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    splitter = RecursiveCharacterTextSplitter(chunk_size=500, chunk_overlap=50)
    return {source: splitter.split_text((root / source).read_text()) for source in sources(root)}


def as_pairs(chunks: dict[str, list[str]]) -> Chunks:
    return {(source, text) for source, texts in chunks.items() for text in texts}


def by_shard(names: list[str]) -> dict[int, list[str]]:
    shards: dict[int, list[str]] = {index: [] for index in range(SHARDS)}
    for name in names:
        shards[shard_of(name, SHARDS)].append(name)
    return shards


def stored_pairs(reader: Any, collection: str) -> Chunks:
    """The collection's (source, text) pairs, after checking nothing is stored twice."""
    rows = all_rows(reader, collection, ["pk", "source", "text"])
    pairs = Counter((row["source"], row["text"]) for row in rows)
    pks = Counter(row["pk"] for row in rows)
    assert [pk for pk, n in pks.items() if n > 1] == [], "a primary key is stored twice"
    assert [pair for pair, n in pairs.items() if n > 1] == [], "a chunk is stored twice under two ids"
    assert stored_count(reader, collection) == len(rows), "count(*) differs from the rows read back"
    return set(pairs)


def run_example(mh: MultiHost, root: Path, collection: str) -> str:
    run_id = mh.stack.trigger(DAG_ID, {"corpus_dir": str(root), "collection": collection, "shards": SHARDS})
    assert_succeeds(mh, run_id)
    return run_id


def assert_succeeds(mh: MultiHost, run_id: str) -> None:
    state = mh.stack.wait_for_run(DAG_ID, run_id, timeout=240)
    assert state == "success", (
        f"{DAG_ID} ended {state}: {mh.stack.task_states(DAG_ID, run_id)}, shards "
        f"{mh.stack.mapped_states(DAG_ID, run_id, 'write_shard')}\n"
        f"{mh.stack.task_log(DAG_ID, run_id, 'write_shard')[-3000:]}"
    )


def shard_summaries(mh: MultiHost, run_id: str) -> dict[int, dict[str, Any]]:
    return {index: mh.stack.xcom(DAG_ID, run_id, "write_shard", map_index=index) for index in range(SHARDS)}


@pytest.fixture(scope="module")
def first_run(multihost: MultiHost, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The example DAG's first run over a fresh corpus and collection (test 3 changes both afterwards)."""
    root = tmp_path_factory.mktemp("sharded-corpus")
    write_corpus(root, seed=23)
    collection = f"sh_{uuid.uuid4().hex[:10]}"
    multihost.embeddings.reset_stats()
    started = time.monotonic()
    run_id = run_example(multihost, root, collection)
    return {
        "root": root,
        "collection": collection,
        "run_id": run_id,
        "chunks": corpus_chunks(root),
        "embedded": multihost.embeddings.stats.inputs,
        "elapsed_s": time.monotonic() - started,
    }


def test_first_run_of_four_shards_writes_each_file_once_and_the_cleanup_nothing(
    multihost: MultiHost, first_run: dict[str, Any], reader: Any
) -> None:
    mh, run_id, chunks = multihost, first_run["run_id"], first_run["chunks"]
    expected = as_pairs(chunks)
    shards = by_shard(list(chunks))
    print(
        f"\n[sharded, first run] {len(chunks)} files, {len(expected)} chunks, shards "
        f"{[len(s) for s in shards.values()]} files, {first_run['elapsed_s']:.1f} s"
    )
    assert stored_pairs(reader, first_run["collection"]) == expected
    assert unexplained_retries(mh.stack, DAG_ID, run_id) == []
    assert mh.stack.xcom(DAG_ID, run_id, "plan_shards") == [
        {"shard_index": i, "shard_count": SHARDS} for i in range(SHARDS)
    ]
    # Each shard wrote exactly the files that hash to it: the parts are disjoint and cover the corpus.
    summaries = shard_summaries(mh, run_id)
    assert {i: s["documents"] for i, s in summaries.items()} == {i: len(files) for i, files in shards.items()}
    assert {i: s["written"] for i, s in summaries.items()} == {
        i: sum(len(chunks[f]) for f in files) for i, files in shards.items()
    }
    assert all(shards.values()), "a shard had no file: the corpus does not exercise all 4"
    # Every chunk embedded once, by its own shard; the server also answered the new collection's dimension
    # probe, once per shard that found the collection missing (one at least, the one that created it).
    assert sum(s["embedded"] for s in summaries.values()) == len(expected)
    assert len(expected) + 1 <= first_run["embedded"] <= len(expected) + SHARDS
    # The cleanup read no file (every one was just written by a shard), wrote and deleted nothing.
    cleanup = mh.stack.xcom(DAG_ID, run_id, "remove_vanished")
    assert (cleanup["skipped_sources"], cleanup["written"], cleanup["embedded"]) == (len(chunks), 0, 0), cleanup
    assert (cleanup["vanished_sources"], cleanup["vanished_deleted"], cleanup["stale_deleted"]) == (0, 0, 0), cleanup


KILLED = 1  # the shard whose task process is killed


def test_a_shard_killed_mid_write_is_retried_and_the_collection_equals_the_corpus(
    multihost: MultiHost, tmp_path_factory: pytest.TempPathFactory, reader: Any
) -> None:
    mh = multihost
    root = tmp_path_factory.mktemp("sharded-kill")
    write_corpus(root, seed=2323)
    collection = f"sk_{uuid.uuid4().hex[:10]}"
    chunks = corpus_chunks(root)
    # The killed shard's chunks in the order it writes them (files sorted by source, batches of 64): the
    # embedding server holds the request carrying its last file, so every earlier batch gets written first.
    shard_files = by_shard(list(chunks))[KILLED]
    order = [(source, text) for source in shard_files for text in chunks[source]]
    last_file = shard_files[-1]
    held = [i for i, (source, _) in enumerate(order) if source == last_file]
    assert len(order) > BATCH, f"shard {KILLED} has one batch only: nothing to kill mid-write"
    assert held[0] >= (len(order) - 1) // BATCH * BATCH, "the held file is not alone in the last batch"
    held_batch = len(order) - (len(order) - 1) // BATCH * BATCH
    before_held = len(order) - held_batch
    in_shard = f"source in {shard_files!r}".replace("'", '"')

    def shard_rows() -> int:
        return stored_count(reader, collection, filter=in_shard) if reader.has_collection(collection) else 0

    mh.embeddings.reset_stats()
    mh.embeddings.hold(f"Note {Path(last_file).stem} ")
    try:
        run_id = mh.stack.trigger(DAG_ID, {"corpus_dir": str(root), "collection": collection, "shards": SHARDS})
        wait_until(
            lambda: mh.embeddings.stats.held > 0 and shard_rows() == before_held,
            120,
            f"shard {KILLED} stored its first {before_held} chunks while its last batch is held",
            interval=0.2,
        )
        pid = mh.stack.task_process(DAG_ID, run_id, "write_shard", KILLED)
        assert pid is not None, "no task process for the shard"
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        stored_at_kill = shard_rows()
    finally:
        mh.embeddings.release()
    assert_succeeds(mh, run_id)
    retried_after = time.monotonic() - killed_at

    expected = as_pairs(chunks)
    found = stored_pairs(reader, collection)
    retry = mh.stack.xcom(DAG_ID, run_id, "write_shard", map_index=KILLED)
    print(
        f"\n[sharded, kill] shard {KILLED}: {len(order)} chunks, killed (pid {pid}) with {stored_at_kill} stored "
        f"and {held_batch} held; run success {retried_after:.1f} s after the kill; retry {retry}"
    )
    assert found == expected
    assert stored_at_kill == before_held > 0  # the kill landed mid-write
    # Airflow retried the killed shard (its first try failed), and only it.
    tries = {i: mh.stack.task_tries(DAG_ID, run_id, "write_shard", i) for i in range(SHARDS)}
    assert tries == {i: 2 if i == KILLED else 1 for i in range(SHARDS)}, tries
    retried = unexplained_retries(mh.stack, DAG_ID, run_id)
    assert len(retried) == 1, retried
    assert f"{DAG_ID}.write_shard {run_id} try 1 ended " in retried[0], retried
    # The retry wrote only what the killed try had not: the held batch.
    assert (retry["documents"], retry["written"], retry["embedded"]) == (len(shard_files), held_batch, held_batch)
    assert retry["unchanged"] == stored_at_kill


def test_files_vanished_and_edited_across_shards_leave_the_new_corpus_and_embed_only_the_edits(
    multihost: MultiHost, first_run: dict[str, Any], reader: Any
) -> None:
    mh, root = multihost, first_run["root"]
    before = first_run["chunks"]
    rng = random.Random(5)
    shards = by_shard(sorted(before))
    vanished = [name for files in shards.values() for name in rng.sample(files, len(files) // 10)]
    edited = [name for files in shards.values() for name in rng.sample([f for f in files if f not in vanished], 2)]
    for name in vanished:
        (root / name).unlink()
    for name in edited:
        path = root / name
        path.write_text(path.read_text() + f" Edited {name} for the second night.")
    after = corpus_chunks(root)
    new_chunks = as_pairs(after) - as_pairs(before)

    mh.embeddings.reset_stats()
    run_id = run_example(mh, root, first_run["collection"])

    found = stored_pairs(reader, first_run["collection"])
    summaries = shard_summaries(mh, run_id)
    cleanup = mh.stack.xcom(DAG_ID, run_id, "remove_vanished")
    print(
        f"\n[sharded, second night] {len(vanished)} files vanished, {len(edited)} edited "
        f"({len(new_chunks)} new chunks); embedded {mh.embeddings.stats.inputs}; cleanup {cleanup}"
    )
    assert found == as_pairs(after)
    assert {name for name, _ in found}.isdisjoint(vanished)
    assert unexplained_retries(mh.stack, DAG_ID, run_id) == []
    assert {shard_of(name, SHARDS) for name in vanished} == set(range(SHARDS))  # vanished from every shard
    # Only the edited chunks were embedded; every unchanged file was left unread on its listing.
    assert mh.embeddings.stats.inputs == len(new_chunks) > 0
    assert sum(s["skipped_sources"] for s in summaries.values()) == len(after) - len(edited)
    assert sum(s["written"] for s in summaries.values()) == len(new_chunks)
    # The shards delete nothing; the cleanup deleted the vanished files' chunks and nothing else.
    assert sum(s["vanished_deleted"] for s in summaries.values()) == 0
    assert cleanup["vanished_sources"] == len(vanished), cleanup
    assert cleanup["vanished_deleted"] == sum(len(before[name]) for name in vanished), cleanup
    assert (cleanup["written"], cleanup["embedded"]) == (0, 0), cleanup
