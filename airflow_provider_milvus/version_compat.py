"""
Compatibility with every supported Airflow 3 release, in one module.

The rest of the package imports ``BaseHook`` / ``BaseOperator`` from here, never from ``airflow.sdk``:

- ``airflow.sdk`` only exports ``BaseHook`` since Airflow 3.1 (apache/airflow#51873); 3.0 has it in
  ``airflow.hooks.base``. ``apache-airflow-providers-common-compat`` maps both (its ``sdk`` module).
- ``BaseHook.aget_connection`` only exists since 3.1, and before 3.3.2 it masks secrets with a synchronous
  call to the supervisor that can deadlock on a busy event loop. common-compat's ``get_async_connection``
  (apache/airflow#57143) picks the safe path per version. Where the native method is not safe, the
  ``BaseHook`` exported here overrides ``aget_connection`` with that helper, so callers write
  ``await Hook.aget_connection(conn_id)`` on every version.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.connection import get_async_connection
from airflow.providers.common.compat.sdk import BaseHook as _SdkBaseHook, BaseOperator


def get_base_airflow_version_tuple() -> tuple[int, int, int]:
    from airflow import __version__
    from packaging.version import Version

    airflow_version = Version(__version__)
    return airflow_version.major, airflow_version.minor, airflow_version.micro


AIRFLOW_V_3_3_2_PLUS = get_base_airflow_version_tuple() >= (3, 3, 2)

if TYPE_CHECKING or AIRFLOW_V_3_3_2_PLUS:
    BaseHook = _SdkBaseHook
else:

    class BaseHook(_SdkBaseHook):  # type: ignore[no-redef]
        """``BaseHook`` whose ``aget_connection`` never blocks or deadlocks the event loop."""

        @classmethod
        async def aget_connection(cls, conn_id: str) -> Any:
            # hook=_SdkBaseHook: resolve through the base lookup (env vars, secrets backends, API),
            # in a worker thread where it is synchronous; passing cls would recurse into this method.
            return await get_async_connection(conn_id, hook=_SdkBaseHook)


__all__ = [
    "AIRFLOW_V_3_3_2_PLUS",
    "BaseHook",
    "BaseOperator",
    "get_async_connection",
]
