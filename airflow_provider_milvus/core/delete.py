"""
The delete core: one delete-by-filter request, guarded, with exact counts.

Round trips: the match count and the scope's total are read concurrently (the total only feeds the
match-everything guard), then one ``delete(filter=...)``, then one count of what still matches. The
deleted count is ``matched - remaining``: Milvus Lite answers a delete with the pks it was given and a
real server's ``delete_count`` counts given pks, not deleted rows (milvus#51566), so neither is used.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from airflow_provider_milvus.core.filters import render_filter
from airflow_provider_milvus.core.session import open_session
from airflow_provider_milvus.exceptions import MilvusProviderError

if TYPE_CHECKING:
    from airflow_provider_milvus.core.jobs import DeleteJob

log = logging.getLogger(__name__)


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
            matched, total = await asyncio.gather(session.count(target), session.count(session.scope))
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
            await session.client.delete(name, filter=target, timeout=session.timeout)
            remaining = await session.count(target)
    if remaining:
        raise MilvusProviderError(
            f"Deleted {matched - remaining} entities from '{name}' but {remaining} still match {expr!r}; re-run the task."
        )
    return _summary(name, started, matched=matched, deleted=matched, dry_run=False)


def _tenant(tenant: str | None) -> str:
    return f" for tenant {tenant!r}" if tenant is not None else ""


def _summary(collection: str, started: float, **counts: Any) -> dict[str, Any]:
    return {
        "operation": "delete",
        "collection": collection,
        **counts,
        "elapsed_s": round(time.monotonic() - started, 3),
    }
