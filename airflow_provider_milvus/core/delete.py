"""
The delete core: one delete request, guarded, with exact counts.

Round trips: the filter's matches and the scope's total (which only feeds the match-everything guard)
are read concurrently, then one delete. Up to ``DELETE_BY_PKS`` matches are read as primary keys (with
Strong consistency) and deleted by those keys: the filter is evaluated once, the deleted count is the
number of keys, and a delete by keys is cheap (Milvus evaluates a filter delete by querying its keys
first). More matches are counted and deleted by the filter. That delete's reply confirms the count
without a further request when it reports exactly that many rows. It can over-report, never
under-report: for a primary-key expression Milvus Lite answers with the pks it was given and a real
server's ``delete_count`` counts the given pks, not deleted rows (milvus#51566). Only when the reply
disagrees is what still matches counted, and anything left is an error.

Deletes by ``ids`` (LangChain's ``delete(ids=...)``) resolve them against the collection's own primary
key field and type (INT64 or VARCHAR), so nobody quotes ``doc_id in [...]`` by hand. Which of them exist
(within the tenant) is read first, 1,000 keys per query, concurrently with the guard's total: only
those are deleted and counted; the others are reported as not found, never as deleted.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_milvus.core import staging
from airflow_provider_milvus.core.filters import render_filter, short_filter, to_literal
from airflow_provider_milvus.core.gather import bounded_gather
from airflow_provider_milvus.core.ledger import forget_matching
from airflow_provider_milvus.core.limits import MAX_QUERY_ROWS
from airflow_provider_milvus.core.session import Session, open_session
from airflow_provider_milvus.exceptions import MilvusProviderError

if TYPE_CHECKING:
    from airflow_provider_milvus.core.jobs import DeleteJob
    from airflow_provider_milvus.core.schema import CollectionSchema

log = logging.getLogger(__name__)

DELETE_BY_PKS = 1000  # matches up to this many are deleted by primary key, like the writes' deletes
MAX_FILTER_BYTES = 4 * 1024 * 1024  # long VARCHAR keys (up to 64 KB each) are deleted by the filter instead
MAX_REPORTED_MISSING = 1000  # ids not found, listed in the result (all of them are counted)
_INTEGER = re.compile(r"^[+-]?\d+$")


async def run_delete(job: DeleteJob) -> dict[str, Any]:
    """Delete what ``expr`` matches (within the tenant), refusing empty and match-everything filters unless allowed."""
    if job.ids is not None or job.ids_ref is not None:
        return await _delete_ids(job)
    started = time.monotonic()
    name = job.store.collection_name
    expr = render_filter(job.expr, job.expr_params)
    if not expr and not job.allow_delete_all:
        raise MilvusProviderError(
            f"Refusing to delete from '{name}' with an empty filter expression (it would delete "
            "everything). Pass a filter, or allow_delete_all=True to empty the collection."
        )
    async with open_session(job.store, create=False, embed=False, metrics=False) as session:
        target = session.scoped(expr) or session.everything
        with session.errors(action=f"evaluate filter {short_filter(expr)} on '{name}'"):
            pks, total = await asyncio.gather(_matching_pks(session, target), session.count(session.scope))
            matched = len(pks) if pks is not None else await session.count(target)
        if matched == total and total > 0 and not job.allow_delete_all:
            raise MilvusProviderError(
                f"Filter {short_filter(expr)} matches all {total} entities of '{name}'{_tenant(session.tenant)}. "
                "Refusing to empty it; narrow the filter or pass allow_delete_all=True."
            )
        # A filter can be megabytes (a long list of values): INFO shows its start and length, DEBUG all of it.
        log.debug("delete %s: filter %r", name, target)
        log.info(
            "delete %s: filter %s matches %d of %d entities%s%s",
            name,
            short_filter(target),
            matched,
            total,
            _tenant(session.tenant),
            " (dry run)" if job.dry_run else "",
        )
        if job.dry_run or not matched:
            return _summary(name, started, matched=matched, deleted=0, dry_run=job.dry_run)
        with session.errors(action=f"delete from '{name}'"):
            await forget_matching(session, target)  # the source ledger re-checks the sources losing rows
            by_pks = f"{session.schema.primary} in {to_literal(pks)}" if pks is not None else ""
            if by_pks and len(by_pks.encode()) <= MAX_FILTER_BYTES:
                await session.client.delete(session.name, filter=by_pks, timeout=session.timeout)
                remaining = 0
            else:
                reply = await session.client.delete(session.name, filter=target, timeout=session.timeout)
                remaining = 0 if reported_deletes(reply) == matched else await session.count(target)
    if remaining:
        raise MilvusProviderError(
            f"Deleted {matched - remaining} entities from '{name}' but {remaining} still match "
            f"{short_filter(expr)}; re-run the task."
        )
    return _summary(name, started, matched=matched, deleted=matched, dry_run=False)


async def _delete_ids(job: DeleteJob) -> dict[str, Any]:
    """
    Delete the rows whose primary keys are ``ids`` (within the tenant); report the ids that do not exist.

    Same guard as a filter: ids that name every row in scope need ``allow_delete_all``.
    """
    started = time.monotonic()
    name = job.store.collection_name
    if job.expr or job.expr_params:
        raise MilvusProviderError("Pass expr (a filter) or ids, not both.")
    given = job.ids if job.ids is not None else await asyncio.to_thread(staging.load_json, job.ids_ref or "")
    check_given_ids(given)
    async with open_session(job.store, create=False, embed=False, metrics=False) as session:
        keys = resolve_ids(session.schema, given)
        primary = session.schema.primary
        batches = _key_batches(keys)

        async def existing(batch: Sequence[Any]) -> list[Any]:
            rows = await session.query(session.scoped(_in(primary, batch)), [primary], MAX_QUERY_ROWS)
            return [row[primary] for row in rows]

        with session.errors(action=f"look up {len(keys)} ids in '{name}'"):
            found_batches, total = await asyncio.gather(
                bounded_gather(batches, existing, max_concurrency=job.max_concurrency),
                session.count(session.scope),
            )
        found = {key for batch in found_batches for key in batch}
        present = [key for key in keys if key in found]
        missing = [key for key in keys if key not in found]
        if present and len(present) == total and not job.allow_delete_all:
            raise MilvusProviderError(
                f"The {len(keys)} ids name all {total} entities of '{name}'{_tenant(session.tenant)}. Refusing to "
                "empty it; pass allow_delete_all=True if that is meant."
            )
        log.info(
            "delete %s: %d of %d ids found among %d entities%s, %d not found%s%s",
            name,
            len(present),
            len(keys),
            total,
            _tenant(session.tenant),
            len(missing),
            f" (first: {short_filter(to_literal(missing[:10]))})" if missing else "",
            " (dry run)" if job.dry_run else "",
        )
        if present and not job.dry_run:
            with session.errors(action=f"delete {len(present)} ids from '{name}'"):
                # Scoped too: on a real server another tenant's row can carry the same primary key.
                await bounded_gather(
                    _key_batches(present),
                    lambda batch: session.client.delete(
                        session.name, filter=session.scoped(_in(primary, batch)), timeout=session.timeout
                    ),
                    max_concurrency=job.max_concurrency,
                )
    return _summary(
        name,
        started,
        requested=len(keys),
        matched=len(present),
        deleted=0 if job.dry_run else len(present),
        not_found=len(missing),
        missing_ids=missing[:MAX_REPORTED_MISSING],
        dry_run=job.dry_run,
    )


def check_given_ids(ids: Any) -> list[str | int]:
    """``ids`` as given: a list of strings or integers (their type is checked against the key's in ``resolve_ids``)."""
    if not isinstance(ids, (list, tuple)):
        raise MilvusProviderError(
            f"ids must be a list of primary keys (or an XCom of one), got {type(ids).__name__}: {ids!r:.80}."
        )
    for position, key in enumerate(ids):
        if isinstance(key, bool) or not isinstance(key, (str, int)) or key == "":
            raise MilvusProviderError(
                f"ids[{position}] = {key!r:.60} is not a primary key: ids must be non-empty strings or integers."
            )
    return list(ids)


def resolve_ids(schema: CollectionSchema, ids: Sequence[str | int]) -> list[str | int]:
    """
    Type the ids as the collection's primary key, distinct and in order.

    INT64 keys take integers and integer strings (``"42"``), VARCHAR keys take strings and integers (as
    their decimal string); anything else is an error that names the key field and its type.
    """
    keys: dict[str | int, None] = {}
    for position, given in enumerate(ids):
        key: str | int = given
        if schema.int_ids:
            if isinstance(given, str) and _INTEGER.match(given.strip()):
                key = int(given)
            if not isinstance(key, int) or not -(1 << 63) <= key < (1 << 63):
                raise MilvusProviderError(
                    f"ids[{position}] = {given!r:.60} cannot be a key of '{schema.name}': its primary key "
                    f"'{schema.primary}' is INT64, so ids must be integers."
                )
        else:
            key = str(given)
        keys[key] = None
    return list(keys)


def _in(field: str, keys: Sequence[str | int]) -> str:
    return f"{field} in {to_literal(list(keys))}"


def _key_batches(keys: list[str | int]) -> list[list[str | int]]:
    """At most ``DELETE_BY_PKS`` keys and ``MAX_FILTER_BYTES`` of filter per request."""
    batches: list[list[str | int]] = []
    size = 0
    for key in keys:
        length = len(to_literal(key).encode()) + 2
        if not batches or len(batches[-1]) >= DELETE_BY_PKS or size + length > MAX_FILTER_BYTES:
            batches.append([])
            size = 0
        batches[-1].append(key)
        size += length
    return batches


async def _matching_pks(session: Session, target: str) -> list[Any] | None:
    """
    Read the primary keys ``target`` matches; ``None`` when there are more than ``DELETE_BY_PKS``.

    Distinct keys: Milvus Lite returns a row once per repeat in ``pk in ["a", "a"]``; ``count(*)`` does not.
    """
    primary = session.schema.primary
    rows = await session.query(target, [primary], DELETE_BY_PKS + 1)
    return list(dict.fromkeys(row[primary] for row in rows)) if len(rows) <= DELETE_BY_PKS else None


def reported_deletes(reply: Any) -> int | None:
    """
    How many rows a delete reply says it removed: Milvus Lite lists pks, a server sends ``delete_count``.

    A list counts distinct pks (``pk in ["a", "a"]`` lists "a" twice); an unknown reply is ``None``.
    """
    if isinstance(reply, list):
        return len(set(reply))
    if isinstance(reply, dict):
        return int(reply.get("delete_count", 0))  # pymilvus omits a zero count
    return None


def _tenant(tenant: str | None) -> str:
    return f" for tenant {tenant!r}" if tenant is not None else ""


def _summary(collection: str, started: float, **counts: Any) -> dict[str, Any]:
    return {
        "operation": "delete",
        "collection": collection,
        **counts,
        "elapsed_s": round(time.monotonic() - started, 3),
    }
