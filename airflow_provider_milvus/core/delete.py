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
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from airflow_provider_milvus.core.filters import render_filter, to_literal
from airflow_provider_milvus.core.ledger import forget_matching
from airflow_provider_milvus.core.session import Session, open_session
from airflow_provider_milvus.exceptions import MilvusProviderError

if TYPE_CHECKING:
    from airflow_provider_milvus.core.jobs import DeleteJob

log = logging.getLogger(__name__)

DELETE_BY_PKS = 1000  # matches up to this many are deleted by primary key, like the writes' deletes
MAX_FILTER_BYTES = 4 * 1024 * 1024  # long VARCHAR keys (up to 64 KB each) are deleted by the filter instead


async def run_delete(job: DeleteJob) -> dict[str, Any]:
    """Delete what ``expr`` matches (within the tenant), refusing empty and match-everything filters unless allowed."""
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
        with session.errors(action=f"evaluate filter {expr!r} on '{name}'"):
            pks, total = await asyncio.gather(_matching_pks(session, target), session.count(session.scope))
            matched = len(pks) if pks is not None else await session.count(target)
        if matched == total and total > 0 and not job.allow_delete_all:
            raise MilvusProviderError(
                f"Filter {expr!r} matches all {total} entities of '{name}'{_tenant(session.tenant)}. Refusing to "
                "empty it; narrow the filter or pass allow_delete_all=True."
            )
        log.info(
            "delete %s: filter %r matches %d of %d entities%s%s",
            name,
            target,
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
                await session.client.delete(name, filter=by_pks, timeout=session.timeout)
                remaining = 0
            else:
                reply = await session.client.delete(name, filter=target, timeout=session.timeout)
                remaining = 0 if reported_deletes(reply) == matched else await session.count(target)
    if remaining:
        raise MilvusProviderError(
            f"Deleted {matched - remaining} entities from '{name}' but {remaining} still match {expr!r}; re-run the task."
        )
    return _summary(name, started, matched=matched, deleted=matched, dry_run=False)


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
