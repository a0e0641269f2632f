"""
Running a job in the worker: ``run_job`` on a short-lived event loop, bounded in time, cleaned up after.

The operators decide whether a job defers to the triggerer or runs here; both paths await the same
``run_job``. Only this path owns its loop, so only it may close the loop's pymilvus channels.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from airflow_provider_milvus.core.operations import run_job
from airflow_provider_milvus.exceptions import MilvusProviderError

if TYPE_CHECKING:
    from airflow_provider_milvus.core.jobs import Job

T = TypeVar("T")


def run_inline(job: Job, *, timeout: timedelta) -> Any:
    """Run ``job`` to completion here (``asyncio.run``); past ``timeout`` it is cancelled and reported."""
    try:
        return asyncio.run(_run_on_own_loop(job, timeout.total_seconds()))
    except TimeoutError:
        raise MilvusProviderError(
            f"{job.operation} on '{job.store.collection_name}' did not finish within {timeout}."
        ) from None


def run_in_worker(work: Coroutine[Any, Any, T]) -> T:
    """Run core work that is not a job (the listing check before a write) here, the same way, cleaned up after."""
    return asyncio.run(_closing_loop_connections(work))


async def _closing_loop_connections(work: Coroutine[Any, Any, T]) -> T:
    try:
        return await work
    finally:
        await _close_loop_connections()


async def _run_on_own_loop(job: Job, seconds: float) -> Any:
    """
    Run ``job`` on this short-lived loop, then close the loop's pymilvus channels.

    pymilvus keeps one connection manager per loop id and never drops it: without this, every inline
    run leaves an open gRPC channel bound to a closed loop behind (one per task in a long-lived process).
    Never done in the trigger: the triggerer's loop and its channels are shared by every trigger.
    """
    try:
        return await asyncio.wait_for(run_job(job.operation, job.to_dict()), seconds)
    finally:
        await _close_loop_connections()


async def _close_loop_connections() -> None:
    with contextlib.suppress(Exception):
        from pymilvus.client.connection_manager import AsyncConnectionManager

        await AsyncConnectionManager.get_instance().close_all()
        with AsyncConnectionManager._instances_lock:
            AsyncConnectionManager._instances.pop(id(asyncio.get_running_loop()), None)
