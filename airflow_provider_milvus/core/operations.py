"""
The entry point of the async core, shared by the worker (``asyncio.run``) and the triggerer.

Each job is plain data (conn ids, collection, sizes), so it can travel as trigger kwargs; ``run_job``
rebuilds it and awaits its core. Every core opens one ``AsyncMilvusClient`` on the current loop and
closes it at the end; sync work goes through ``asyncio.to_thread``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from airflow_provider_milvus.core.checks import check_job
from airflow_provider_milvus.core.delete import run_delete
from airflow_provider_milvus.core.jobs import DeleteJob, Job, RebuildJob, RollbackJob, SearchJob, StoreConfig, WriteJob
from airflow_provider_milvus.core.rebuild import run_rebuild, run_rollback
from airflow_provider_milvus.core.search import run_search
from airflow_provider_milvus.core.write import run_write

OPERATIONS: dict[str, tuple[type[Job], Callable[[Any], Awaitable[Any]]]] = {
    "write": (WriteJob, run_write),
    "delete": (DeleteJob, run_delete),
    "search": (SearchJob, run_search),
    "rebuild": (RebuildJob, run_rebuild),
    "rollback": (RollbackJob, run_rollback),
}

__all__ = ["DeleteJob", "Job", "RebuildJob", "RollbackJob", "SearchJob", "StoreConfig", "WriteJob", "run_job"]


async def run_job(operation: str, job_data: dict[str, Any]) -> Any:
    """Rebuild the job from plain data, check its names and tenant (before connecting), and run its core."""
    job_type, runner = OPERATIONS[operation]
    job = job_type.from_dict(job_data)
    check_job(job)
    return await runner(job)
