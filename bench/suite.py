"""The workloads x methods matrix: set up each trial untimed, time it, sample memory and in-flight."""

from __future__ import annotations

import statistics
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bench import limits, operators, tutorial
from bench.measure import MB, Row, RssSampler
from bench.workloads import TUTORIAL_CORPUS, Workload, delete_ids, documents, queries

if TYPE_CHECKING:
    from bench.embedding_service import EmbeddingService
    from bench.operators import Tuning

SYNC, GATHER, OPERATOR, LIMIT = "(a) sync loop", "(b) unbounded gather", "(c) operator core", "(d) limit"
METHODS = (SYNC, GATHER, OPERATOR, LIMIT)

Trial = Callable[[], float]  # the timed part; returns seconds


@dataclass
class Suite:
    milvus_uri: str
    embeddings: EmbeddingService
    tuning: Tuning
    repeat: int = 3
    large_repeat: int = 1
    large_n: int = 100_000
    rows: list[Row] = field(default_factory=list)
    _collections: list[str] = field(default_factory=list)
    _notes: dict[str, str] = field(default_factory=dict)

    # -- bookkeeping ------------------------------------------------------------------------------

    def _collection(self, method: str, workload: Workload) -> str:
        name = f"b_{method[1]}_{workload.kind.replace('@', '_')}_{workload.n}_{uuid.uuid4().hex[:6]}"
        self._collections.append(name)
        return name

    def _drop_collections(self) -> None:
        from pymilvus import MilvusClient

        client = MilvusClient(uri=self.milvus_uri)
        try:
            for name in self._collections:
                if client.has_collection(name):
                    client.drop_collection(name)
        finally:
            client.close()
        self._collections.clear()

    def reps_for(self, method: str, workload: Workload) -> int:
        if method == SYNC:
            return 1
        return self.large_repeat if workload.n >= self.large_n else self.repeat

    def measure(self, workload: Workload, method: str, trial: Callable[[], Trial]) -> Row:
        """Median of ``reps`` trials; peak RSS and peak in-flight embedding requests over all of them."""
        seconds, peak_rss, peak_in_flight = [], 0, 0
        self._notes.pop(method, None)
        try:
            for _ in range(self.reps_for(method, workload)):
                timed_part = trial()
                self.embeddings.reset()
                with RssSampler() as rss:
                    seconds.append(timed_part())
                peak_rss = max(peak_rss, rss.peak)
                peak_in_flight = max(peak_in_flight, self.embeddings.stats()["peak_in_flight"])
        finally:
            self._drop_collections()
        row = Row(
            workload.kind,
            workload.n,
            method,
            statistics.median(seconds),
            len(seconds),
            seconds,
            peak_rss_mb=peak_rss / MB,
            peak_in_flight=peak_in_flight,
            notes=self._notes.get(method, ""),
        )
        self.rows.append(row)
        print(
            f"  {workload.label:<24} {method:<22} {row.seconds:9.3f} s  {row.items_per_s:10.1f}/s"
            f"  rss {row.peak_rss_mb:6.0f} MB  in-flight {peak_in_flight}",
            flush=True,
        )
        return row

    def extrapolate(self, workload: Workload, method: str, base: Row) -> Row:
        row = Row(
            workload.kind,
            workload.n,
            method,
            base.seconds * workload.n / base.n,
            0,
            extrapolated_from=base.n,
            notes=f"linear from {base.workload} {base.n:,}",
        )
        self.rows.append(row)
        print(f"  {workload.label:<24} {method:<22} ~{row.seconds:8.1f} s  (extrapolated from {base.n:,})")
        return row

    def find(self, kind: str, n: int, method: str) -> Row | None:
        return next((r for r in self.rows if (r.workload, r.n, r.method) == (kind, n, method)), None)

    # -- trials: each builds its collection untimed and returns the timed part ---------------------

    def _tutorial_trial(self, method: str, workload: Workload, corpus: list, run: Callable) -> Callable[[], Trial]:
        def trial() -> Trial:
            name = self._collection(method, workload)
            tutorial.prepare(self.milvus_uri, self.embeddings.base_url, name, corpus)
            store = tutorial.make_store(self.milvus_uri, self.embeddings.base_url, name)
            return lambda: run(store)

        return trial

    def _operator_trial(self, workload: Workload, corpus: list, run: Callable[[str], float]) -> Callable[[], Trial]:
        def trial() -> Trial:
            name = self._collection(OPERATOR, workload)
            operators.prepare(name, corpus)
            return lambda: run(name)

        return trial

    def _limit_trial(
        self,
        workload: Workload,
        corpus: list,
        pipeline: Callable[[str], float],
        stages: dict[str, Callable[[str], float]],
        ceiling: float | None = None,
    ) -> Callable[[], Trial]:
        """The raw pipeline is the limit; each stage alone (and the computed embedding ceiling) goes in the notes."""

        def trial() -> Trial:
            name = self._collection(LIMIT, workload)
            limits.create_collection(self.milvus_uri, name, self.embeddings.dimensions)
            if corpus:
                rows = limits.rows_for(corpus, self.embeddings.dimensions)
                limits.milvus_insert(self.milvus_uri, name, rows, batch=1000, concurrency=1)

            def timed_part() -> float:
                seconds = pipeline(name)
                notes = [f"{stage} alone {run(name):.3f}s" for stage, run in stages.items()]
                if ceiling:
                    notes.append(f"computed embedding ceiling {ceiling:,.0f}/s")
                self._notes[LIMIT] = "raw pipeline; " + ", ".join(notes)
                return seconds

            return timed_part

        return trial

    # -- workloads --------------------------------------------------------------------------------

    def run_write(self, workload: Workload, methods: tuple[str, ...]) -> None:
        """Tutorial adds and bulk ingest: documents into an existing, empty collection."""
        docs = documents(workload.n)
        batch, conc = self.tuning.write_batch_size, self.tuning.write_max_concurrency
        if SYNC in methods:
            self.measure(workload, SYNC, self._tutorial_trial(SYNC, workload, [], lambda s: tutorial.sync_add(s, docs)))
        if GATHER in methods:
            self.measure(
                workload, GATHER, self._tutorial_trial(GATHER, workload, [], lambda s: tutorial.gather_add(s, docs))
            )
        self.measure(
            workload, OPERATOR, self._operator_trial(workload, [], lambda n: operators.add(n, docs, self.tuning))
        )
        rows = limits.rows_for(docs, self.embeddings.dimensions)
        texts = [d.page_content for d in docs]
        url = self.embeddings.base_url
        self.measure(
            workload,
            LIMIT,
            self._limit_trial(
                workload,
                [],
                lambda name: limits.pipeline_insert(self.milvus_uri, url, name, rows, batch=batch, concurrency=conc),
                {
                    "embeddings": lambda _: limits.hammer_embeddings(url, texts, batch=batch, concurrency=conc),
                    "milvus": lambda name: limits.milvus_insert(
                        self.milvus_uri,
                        name,
                        [r | {"pk": f"again-{r['pk']}"} for r in rows],
                        batch=batch,
                        concurrency=conc,
                    ),
                },
                self.embeddings.ceiling(batch, conc),
            ),
        )

    def run_search(
        self,
        workload: Workload,
        corpus_n: int = TUTORIAL_CORPUS,
        *,
        measure_sync_up_to: int = 100,
        measure_gather_up_to: int = 1000,
        batch_size: int | None = None,
        repeat: int | None = None,
    ) -> None:
        """
        Searches (k=3) over a ``corpus_n``-document collection: the tutorial's 100 over 1,000, and larger.

        Above 1,000 documents one collection is populated once (untimed, read-only) for every method;
        (a) and (b) run on the first ``measure_*_up_to`` queries and are extrapolated to the rest.
        """
        import dataclasses

        from testing.servers.embeddings_server import embed_text

        tuning = dataclasses.replace(self.tuning, search_batch_size=batch_size or self.tuning.search_batch_size)
        saved_repeat, self.repeat = self.repeat, repeat or self.repeat
        qs = queries(workload.n)
        batch, conc = tuning.search_batch_size, tuning.search_max_concurrency
        url = self.embeddings.base_url
        vectors = [embed_text(q, self.embeddings.dimensions) for q in qs]
        shared = corpus_n > TUTORIAL_CORPUS  # read-only: one populated collection for every method and trial
        if shared:
            name = f"b_search_{corpus_n}_{uuid.uuid4().hex[:6]}"
            limits.create_collection(self.milvus_uri, name, self.embeddings.dimensions)
            for start in range(0, corpus_n, 10_000):
                rows = limits.rows_for(
                    documents(min(10_000, corpus_n - start), start=start), self.embeddings.dimensions
                )
                limits.milvus_insert(self.milvus_uri, name, rows, batch=2000, concurrency=2)
            limits.flush(self.milvus_uri, name)
            setup = lambda method: lambda: name
            corpus = []
        else:
            corpus = documents(corpus_n)
            setup = None
        try:
            sync_qs = qs[:measure_sync_up_to]
            sync_load = Workload(workload.kind, len(sync_qs)) if len(sync_qs) < len(qs) else workload
            sync_row = self.measure(
                sync_load,
                SYNC,
                self._search_trial(SYNC, sync_load, corpus, setup, lambda s: tutorial.sync_search(s, sync_qs)),
            )
            if sync_load is not workload:
                self.extrapolate(workload, SYNC, sync_row)
            gather_qs = qs[:measure_gather_up_to]
            gather_load = Workload(workload.kind, len(gather_qs)) if len(gather_qs) < len(qs) else workload
            gather_row = self.measure(
                gather_load,
                GATHER,
                self._search_trial(GATHER, gather_load, corpus, setup, lambda s: tutorial.gather_search(s, gather_qs)),
            )
            if gather_load is not workload:
                self.extrapolate(workload, GATHER, gather_row)
            op_trial = (
                (lambda: lambda: operators.search(name, qs, tuning))
                if shared
                else self._operator_trial(workload, corpus, lambda n: operators.search(n, qs, tuning))
            )
            self.measure(workload, OPERATOR, op_trial)
            pipeline = lambda n: limits.pipeline_search(self.milvus_uri, url, n, qs, batch=batch, concurrency=conc)
            stages = {
                "milvus": lambda n: limits.milvus_search(self.milvus_uri, n, vectors, batch=batch, concurrency=conc),
                "embeddings": lambda _: limits.hammer_embeddings(url, qs, batch=batch, concurrency=conc),
            }
            if shared:

                def limit_trial() -> Trial:
                    def timed_part() -> float:
                        seconds = pipeline(name)
                        notes = [f"{stage} alone {run(name):.3f}s" for stage, run in stages.items()]
                        self._notes[LIMIT] = f"raw pipeline, batch {batch}; " + ", ".join(notes)
                        return seconds

                    return timed_part

                self.measure(workload, LIMIT, limit_trial)
            else:
                self.measure(
                    workload,
                    LIMIT,
                    self._limit_trial(workload, corpus, pipeline, stages, self.embeddings.ceiling(batch, conc)),
                )
        finally:
            self.repeat = saved_repeat
            if shared:
                self._collections.append(name)
                self._drop_collections()

    def _search_trial(self, method: str, workload: Workload, corpus: list, setup, run: Callable) -> Callable[[], Trial]:
        if setup is None:
            return self._tutorial_trial(method, workload, corpus, run)

        def trial() -> Trial:
            store = tutorial.make_store(self.milvus_uri, self.embeddings.base_url, setup(method)())
            return lambda: run(store)

        return trial

    def run_search_by_vector(self, workload: Workload, corpus_n: int = TUTORIAL_CORPUS) -> None:
        """
        The tutorial's ``similarity_search_by_vector`` (k=3) over 1,000 documents: vectors computed upstream.

        (a) one ``similarity_search_by_vector`` per vector, (b) a gather of ``asimilarity_search_by_vector``,
        (c) one ``SearchJob`` of the vectors (nq-batched, no embedding model), (d) raw nq-batched searches
        of the same vectors at (c)'s batch size and concurrency. No method calls the embedding API.
        """
        from testing.servers.embeddings_server import embed_text

        vectors = [embed_text(q, self.embeddings.dimensions) for q in queries(workload.n)]
        corpus = documents(corpus_n)
        batch, conc = self.tuning.search_batch_size, self.tuning.search_max_concurrency
        self.measure(
            workload,
            SYNC,
            self._tutorial_trial(SYNC, workload, corpus, lambda s: tutorial.sync_search_by_vector(s, vectors)),
        )
        self.measure(
            workload,
            GATHER,
            self._tutorial_trial(GATHER, workload, corpus, lambda s: tutorial.gather_search_by_vector(s, vectors)),
        )
        self.measure(
            workload,
            OPERATOR,
            self._operator_trial(workload, corpus, lambda n: operators.search(n, vectors, self.tuning)),
        )
        self.measure(
            workload,
            LIMIT,
            self._limit_trial(
                workload,
                corpus,
                lambda n: limits.milvus_search(self.milvus_uri, n, vectors, batch=batch, concurrency=conc),
                {},
            ),
        )

    def run_delete(self, workload: Workload) -> None:
        """Deletes by metadata expression from a 1,000-document collection (fresh for every trial)."""
        corpus, ids = documents(TUTORIAL_CORPUS), delete_ids(workload.n, start=0)
        self.measure(
            workload, SYNC, self._tutorial_trial(SYNC, workload, corpus, lambda s: tutorial.sync_delete(s, ids))
        )
        self.measure(
            workload, GATHER, self._tutorial_trial(GATHER, workload, corpus, lambda s: tutorial.gather_delete(s, ids))
        )
        self.measure(
            workload, OPERATOR, self._operator_trial(workload, corpus, lambda n: operators.delete(n, ids, self.tuning))
        )
        self.measure(
            workload,
            LIMIT,
            self._limit_trial(workload, corpus, lambda name: limits.milvus_delete(self.milvus_uri, name, ids), {}),
        )
