"""Pass bulk data to the triggerer by reference: trigger kwargs are plaintext DB rows (64 KiB on MySQL).

The staging location is a local directory by default (shared by worker and triggerer on one host),
or any ``ObjectStoragePath`` URL such as ``s3://bucket/prefix`` when the triggerer runs elsewhere.
Configure it with ``[milvus] staging_url`` or the operator's ``staging_url``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

STAGING_ENV = "AIRFLOW__MILVUS__STAGING_URL"


def default_staging_url() -> str:
    from airflow.configuration import conf

    configured = conf.get("milvus", "staging_url", fallback=None)
    return configured or os.path.join(tempfile.gettempdir(), "airflow-provider-milvus-staging")


def stage_json(payload: Any, *, staging_url: str, name_hint: str) -> str:
    """Write ``payload`` as JSON under ``staging_url``; returns the reference to pass to a trigger."""
    data = json.dumps(payload, separators=(",", ":")).encode()
    name = f"{name_hint}-{hashlib.sha256(data).hexdigest()[:16]}.json"
    if _is_local(staging_url):
        directory = Path(staging_url.removeprefix("file://"))
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / name
        temporary = target.with_suffix(".tmp")
        temporary.write_bytes(data)
        temporary.replace(target)
        return str(target)
    from airflow.sdk import ObjectStoragePath

    target_path = ObjectStoragePath(staging_url) / name
    target_path.write_bytes(data)
    return str(target_path)


def load_json(reference: str) -> Any:
    """Sync read of a staged payload; call it through ``asyncio.to_thread`` from a trigger."""
    if _is_local(reference):
        return json.loads(Path(reference.removeprefix("file://")).read_bytes())
    from airflow.sdk import ObjectStoragePath

    return json.loads(ObjectStoragePath(reference).read_bytes())


def remove(reference: str) -> None:
    if _is_local(reference):
        Path(reference.removeprefix("file://")).unlink(missing_ok=True)
        return
    from airflow.sdk import ObjectStoragePath

    path = ObjectStoragePath(reference)
    if path.exists():
        path.unlink()


def _is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")
