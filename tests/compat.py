"""Test helpers that differ between the supported Airflow releases (3.0.6 .. 3.x)."""

from __future__ import annotations

try:  # Airflow 3.1+: the Task SDK's serde, what the worker uses for trigger kwargs
    from airflow.sdk import serde
except ImportError:  # Airflow 3.0
    from airflow.serialization import serde  # type: ignore[no-redef]

__all__ = ["serde"]
