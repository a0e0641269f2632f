"""The trigger that runs a Milvus job's async core in the triggerer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_milvus.core import staging
from airflow_provider_milvus.core.operations import run_job
from airflow_provider_milvus.exceptions import MilvusProviderError

# The triggerer logs every event and MySQL caps trigger rows at 64 KiB: bigger results go by reference.
MAX_INLINE_EVENT_BYTES = 32 * 1024


class MilvusOperationTrigger(BaseTrigger):
    """
    Run one Milvus job (``write``, ``delete``, ``search``, ``rebuild`` or ``rollback``) and yield a single event.

    :param operation: Which async core to run.
    :param job: The job as plain data: conn ids and references, never secrets or bulk documents.
    :param staging_url: Where to put a result too large for the event.
    """

    def __init__(self, *, operation: str, job: dict[str, Any], staging_url: str) -> None:
        super().__init__()
        self.operation = operation
        self.job = job
        self.staging_url = staging_url

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{self.__class__.__module__}.{self.__class__.__qualname__}",
            {"operation": self.operation, "job": self.job, "staging_url": self.staging_url},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            result = await run_job(self.operation, self.job)
            event = await asyncio.to_thread(self._success_event, result)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            message = str(error) if isinstance(error, MilvusProviderError) else f"{type(error).__name__}: {error}"
            event = {"status": "error", "message": message}
        yield TriggerEvent(event)

    def _success_event(self, result: Any) -> dict[str, Any]:
        encoded = json.dumps(result, separators=(",", ":"))
        if len(encoded.encode()) <= MAX_INLINE_EVENT_BYTES:
            return {"status": "success", "result": result}
        reference = staging.stage_json(result, staging_url=self.staging_url, name_hint=f"{self.operation}-result")
        return {"status": "success", "result_ref": reference}
