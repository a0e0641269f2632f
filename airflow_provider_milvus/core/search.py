"""
The search core: one Milvus request per batch of queries, batches in bounded parallel.

langchain-milvus 0.4 sends one query vector per request; Milvus takes many (``nq``). Each batch of
``batch_size`` queries is embedded in one request and searched in one request (dense, BM25, or a
hybrid RRF of both), with the filter applied, and the hits are mapped back to their queries in order.
Embedding and searching overlap: up to ``max_concurrency`` embedding requests and as many searches are
in flight, so later batches are embedded while earlier ones are searched.

Query vectors (computed upstream) skip the embedding stage: no embedding model is built or called,
their size is checked against the dense field before any search, and they search the dense field
only, also on a hybrid collection (a BM25 field needs text). A BM25-only collection refuses them.

A collection that embeds server-side (a ``TEXT_EMBEDDING`` function fills its dense field) is
searched with the query texts themselves on that field: Milvus embeds them with the collection's
model, and no client-side model is built or called. MMR needs the query vectors, which Milvus does
not return, so it is refused there.

Scores follow one convention for every metric, higher means more relevant: COSINE and IP as Milvus
returns them, BM25 as a positive score (Milvus Lite reports it negated), L2 as ``1 / (1 + distance)``,
hybrid as the RRF score.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from airflow_provider_milvus.core import staging
from airflow_provider_milvus.core.collection import check_dimension
from airflow_provider_milvus.core.filters import render_filter
from airflow_provider_milvus.core.gather import Progress, batched, pipelined_gather
from airflow_provider_milvus.core.jobs import CONSISTENCY_LEVELS, SEARCH_TYPES, SearchJob
from airflow_provider_milvus.core.ledger import DIGEST_FIELD
from airflow_provider_milvus.core.limits import MAX_NQ
from airflow_provider_milvus.core.queries import normalize_queries, top_k_problem
from airflow_provider_milvus.core.session import Session, open_session
from airflow_provider_milvus.exceptions import MilvusProviderError

if TYPE_CHECKING:
    from airflow_provider_milvus.core.schema import CollectionSchema, VectorField

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 48 * 1024 * 1024  # Milvus rejects requests over 64 MB; keep a margin for encoding


async def run_search(job: SearchJob) -> list[list[dict[str, Any]]]:
    """Hits per query: ``[{"id", "page_content", "metadata", "score"}]``, plain JSON for XCom."""
    if job.search_type not in SEARCH_TYPES:
        raise MilvusProviderError(f"search_type must be one of {SEARCH_TYPES}, got {job.search_type!r}.")
    if job.consistency_level is not None and job.consistency_level not in CONSISTENCY_LEVELS:
        raise MilvusProviderError(
            f"consistency_level must be one of {CONSISTENCY_LEVELS} (or None for the collection's own), "
            f"got {job.consistency_level!r}."
        )
    if not 1 <= job.batch_size <= MAX_NQ:
        raise MilvusProviderError(f"batch_size must be between 1 and {MAX_NQ} for searches.")
    problem = top_k_problem(job.k) or top_k_problem(job.fetch_k, "fetch_k")
    if problem:
        raise MilvusProviderError(problem)
    given = (
        job.queries if job.queries is not None else await asyncio.to_thread(staging.load_json, job.queries_ref or "")
    )
    queries = normalize_queries(given)
    if not queries.items:
        log.info("search %s: no queries", job.store.collection_name)
        return []
    expr = render_filter(job.expr, job.expr_params)
    name = job.store.collection_name
    # Index metrics only convert scores; without them Milvus searches with the index's own metric.
    metrics = job.search_type == "similarity_score"
    # Query vectors need no embedding model: none is built, so none can be called.
    async with open_session(job.store, create=False, embed=not queries.by_vector, metrics=metrics) as session:
        with session.errors(action=f"search collection '{name}'"):
            searcher = _Searcher(session, job, session.scoped(expr), by_vector=queries.by_vector)
            if queries.by_vector:
                check_query_vectors(session.schema, cast("list[list[float]]", queries.items))
            batches = batched(queries.items, searcher.queries_per_request())
            progress = Progress(f"search {name}", len(batches), logger=log)
            results = await pipelined_gather(
                batches,
                searcher.embed,
                searcher.search,
                max_concurrency=job.max_concurrency,
                progress=progress,
                size=len,
            )
    return [hits for batch_hits in results for hits in batch_hits]


class _Searcher:
    """How one job searches its collection: the mode, the fields and the request parameters."""

    def __init__(self, session: Session, job: SearchJob, expr: str, *, by_vector: bool = False) -> None:
        self.session = session
        self.job = job
        self.expr = expr
        self.by_vector = by_vector
        self.embeddings = session.embeddings
        schema = session.schema
        # Query texts go to Milvus as they are: its TEXT_EMBEDDING function embeds them.
        self.server_side = schema.embeds_server_side and not by_vector
        if by_vector:
            self.dense: VectorField | None = _dense_for_vectors(schema)
            self.bm25: str | None = None  # BM25 searches text: query vectors search the dense field alone
        elif self.server_side:
            self.dense, self.bm25 = schema.dense, schema.bm25_field
        else:
            self.dense = schema.dense if session.embeddings is not None else None
            self.bm25 = schema.bm25_field
        if self.dense is None and self.bm25 is None:
            raise MilvusProviderError(
                f"Collection '{schema.name}' has dense vectors only ({', '.join(f.name for f in schema.dense_fields)}); "
                "configure the embedding connection and model it was built with (embedding_conn_id / embedding_model)."
            )
        if job.search_type == "mmr" and self.server_side:
            raise MilvusProviderError(
                f"search_type='mmr' needs the query vectors, and collection '{schema.name}' embeds queries in "
                "Milvus (a TEXT_EMBEDDING function), which does not return them. Use 'similarity' or "
                "'similarity_score', or pass query vectors. Nothing was searched."
            )
        if job.search_type == "mmr" and self.dense is None:
            raise MilvusProviderError(
                "search_type='mmr' needs dense embeddings; this collection is searched with BM25 only."
            )
        self.output_fields = self._output_fields()

    def _output_fields(self) -> list[str]:
        schema = self.session.schema
        if self.job.output_fields is None:
            return schema.output_fields[1:]
        vectors = {f.name for f in schema.dense_fields} | set(schema.other_vector_fields) | {schema.bm25_field}
        asked = [f for f in self.job.output_fields if f in vectors]
        if asked:
            raise MilvusProviderError(f"output_fields {asked} are vector fields; hits never carry vectors.")
        return list(dict.fromkeys([schema.text, *self.job.output_fields]))

    def queries_per_request(self) -> int:
        if self.dense is None:
            return self.job.batch_size
        per_query = self.dense.dim * 4 * (2 if self.job.search_type == "mmr" else 1) + 1024
        return max(1, min(self.job.batch_size, MAX_REQUEST_BYTES // per_query))

    def consistency(self) -> dict[str, Any]:
        """``consistency_level`` for a search request, when the job overrides the collection's."""
        level = self.job.consistency_level
        return {"consistency_level": level} if level else {}

    def params(self, metric: str | None) -> dict[str, Any]:
        """Search parameters; no ``metric_type`` when the index's is unread (Milvus then uses the index's)."""
        params: dict[str, Any] = {"params": dict(self.job.search_params or {})}
        return {"metric_type": metric, **params} if metric else params

    async def embed(self, queries: Sequence[Any]) -> list[Any] | None:
        """
        Embed a batch of queries in one request (``None`` when the collection is searched with BM25 only).

        Query vectors are already embedded: they pass through, with no request. So do query texts of a
        collection that embeds server-side: Milvus embeds them.
        """
        if self.by_vector or self.server_side:
            return list(queries)
        if self.dense is None or self.embeddings is None:
            return None
        vectors = await self.embeddings.aembed_documents(list(queries))
        check_dimension(self.session.schema, len(vectors[0]), "the query embedding")
        return vectors

    async def search(self, queries: Sequence[Any], vectors: list[Any] | None) -> list[list[dict[str, Any]]]:
        """One Milvus request for a batch of queries (and their vectors, or texts Milvus embeds, from ``embed``)."""
        session, job, dense = self.session, self.job, self.dense
        if job.search_type == "mmr":
            return await self._mmr(list(queries), vectors or [])
        if dense is not None and vectors is not None and self.bm25 is not None:
            from pymilvus import AnnSearchRequest, RRFRanker

            candidates = max(job.k, job.fetch_k)  # per sub-search, so the fusion sees more than the top k
            requests = [
                AnnSearchRequest(
                    data=vectors,
                    anns_field=dense.name,
                    param=self.params(dense.metric),
                    limit=candidates,
                    expr=self.expr or None,
                ),
                AnnSearchRequest(
                    data=list(queries),
                    anns_field=self.bm25,
                    param={"metric_type": "BM25"},
                    limit=candidates,
                    expr=self.expr or None,
                ),
            ]
            result = await session.client.hybrid_search(
                session.name,
                requests,
                RRFRanker(),
                limit=job.k,
                output_fields=self.output_fields,
                timeout=session.timeout,
                **self.consistency(),
            )
            metric = "RRF"
        else:
            field: str | None
            data: list[Any]
            if dense is not None and vectors is not None:
                field, metric, data = dense.name, dense.metric or "COSINE", vectors
                sent = dense.metric
            else:
                field, metric, data = self.bm25, "BM25", list(queries)
                sent = metric
            result = await session.client.search(
                session.name,
                data=data,
                anns_field=field,
                search_params=self.params(sent),
                limit=job.k,
                filter=self.expr,
                output_fields=self.output_fields,
                timeout=session.timeout,
                **self.consistency(),
            )
        return [[self._hit(hit, metric) for hit in hits] for hits in result]

    async def _mmr(self, queries: list[Any], vectors: list[list[float]]) -> list[list[dict[str, Any]]]:
        session, job, dense = self.session, self.job, self.dense
        if dense is None:
            raise MilvusProviderError("search_type='mmr' needs dense embeddings.")
        result = await session.client.search(
            session.name,
            data=vectors,
            anns_field=dense.name,
            search_params=self.params(dense.metric),
            limit=job.fetch_k,
            filter=self.expr,
            output_fields=[*self.output_fields, dense.name],
            timeout=session.timeout,
            **self.consistency(),
        )
        return await asyncio.to_thread(self._select_mmr, dense.name, vectors, result)

    def _select_mmr(self, field: str, vectors: list[list[float]], result: Any) -> list[list[dict[str, Any]]]:
        import numpy as np
        from langchain_core.vectorstores.utils import maximal_marginal_relevance

        selected: list[list[dict[str, Any]]] = []
        for vector, hits in zip(vectors, result, strict=True):
            candidates = list(hits)
            if not candidates:
                selected.append([])
                continue
            embeddings = [hit["entity"][field] for hit in candidates]
            chosen = maximal_marginal_relevance(
                np.array(vector), embeddings, lambda_mult=self.job.lambda_mult, k=self.job.k
            )
            selected.append([self._hit(candidates[i], None) for i in chosen])
        return selected

    def _hit(self, hit: Any, metric: str | None) -> dict[str, Any]:
        schema = self.session.schema
        entity = dict(hit.get("entity") or {})
        text = entity.pop(schema.text, "")
        entity.pop(self.dense.name if self.dense else "", None)
        entity.pop(DIGEST_FIELD, None)  # the source ledger's, not the document's
        primary = hit.get(schema.primary, hit.get("id"))
        score = None
        if metric is not None and self.job.search_type == "similarity_score":
            score = relevance(metric, float(hit["distance"]))
        return {"id": primary, "page_content": text, "metadata": _json_safe(entity), "score": score}


def _dense_for_vectors(schema: CollectionSchema) -> VectorField:
    """Choose the dense field query vectors search; a BM25-only collection has none and says what it takes."""
    if schema.has_dense:
        return schema.dense  # several dense fields: the error names vector_field
    if schema.bm25_field:
        raise MilvusProviderError(
            f"Collection '{schema.name}' is searched with BM25 full-text only ('{schema.bm25_field}' from "
            f"'{schema.text}'): it has no dense vector field, so it cannot be searched by vector. Pass the "
            "queries as text instead. Nothing was searched."
        )
    raise MilvusProviderError(
        f"Collection '{schema.name}' has no dense vector field (FLOAT_VECTOR) to search by vector. Nothing was searched."
    )


def check_query_vectors(schema: CollectionSchema, vectors: Sequence[Sequence[float]]) -> None:
    """Every query vector has the dense field's size; the first that does not is named, before any search."""
    dense = schema.dense
    for position, vector in enumerate(vectors):
        if len(vector) != dense.dim:
            raise MilvusProviderError(
                f"Dimension mismatch: query {position} is a {len(vector)}-dimensional vector but collection "
                f"'{schema.name}' field '{dense.name}' stores {dense.dim}-dimensional vectors. Embed the queries "
                "with the model the collection was built with. Nothing was searched."
            )


def relevance(metric: str, distance: float) -> float:
    """Higher means more relevant, whatever the metric."""
    if metric == "L2":
        return 1.0 / (1.0 + distance)
    if metric == "BM25":
        return abs(distance)
    return distance


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return str(value)
