"""
Pass bulk data to the triggerer by reference: trigger kwargs are plaintext DB rows (64 KiB on MySQL).

The staging location is a local directory by default (only usable when worker and triggerer share it:
one host, or a volume mounted on every host), or any ``ObjectStoragePath`` URL such as
``s3://aws_conn_id@bucket/prefix`` when triggerers and workers run on different hosts. Configure it
with ``[milvus] staging_url`` or the operator's ``staging_url``.

Lifecycle of a staged object (every name is unique: ``<hint>-<sha16>-<uuid8>@<host>.json``):

- the worker stages the bulk input just before deferring, after ``check_staging`` proved the location
  writable, readable and deletable (a bad bucket, missing credentials or an unreachable endpoint fail the
  task there, not later in the triggerer);
- the triggerer reads it, and stages a large result the same way;
- ``execute_complete`` removes the input on success **and** on error, and the result once read;
- what no ``execute_complete`` removes (deferral timeout, a task cleared or killed while deferred, an event
  lost with its triggerer) is reclaimed by age: ``cleanup(staging_url, older_than=...)`` (e.g. from a daily
  maintenance task), or an object-store lifecycle rule that expires objects under the prefix after a day.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import socket
import tempfile
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from airflow_provider_milvus.exceptions import MilvusProviderError

STAGING_ENV = "AIRFLOW__MILVUS__STAGING_URL"
SHARED_STORAGE_HINT = "staging_url must be shared storage"
DEFAULT_CHECK_TIMEOUT = 30.0
# Executors whose tasks run on the scheduler's host; any other usually runs them on other hosts.
SINGLE_HOST_EXECUTORS = ("LocalExecutor", "SequentialExecutor", "DebugExecutor")
_NAME = re.compile(r"^(?P<stem>.+)@(?P<host>[A-Za-z0-9.\-]+)\.json$")

log = logging.getLogger(__name__)


class StagingError(MilvusProviderError):
    """The staging location cannot be used, or a staged object is gone."""


def default_staging_url() -> str:
    from airflow.configuration import conf

    configured = conf.get("milvus", "staging_url", fallback=None)
    return configured or os.path.join(tempfile.gettempdir(), "airflow-provider-milvus-staging")


@functools.lru_cache(maxsize=1)
def this_host() -> str:
    """Airflow's name for this host (``[core] hostname_callable``), as recorded in staged object names."""
    try:
        from airflow.utils.net import get_hostname

        name = get_hostname()
    except Exception:
        name = socket.gethostname()
    return re.sub(r"[^A-Za-z0-9.\-]", "-", name) or "unknown-host"


def host_of(reference: str) -> str | None:
    """Return the host that staged ``reference`` (recorded in its name), if known."""
    match = _NAME.match(reference.rsplit("/", 1)[-1])
    return match.group("host") if match else None


def stage_json(payload: Any, *, staging_url: str, name_hint: str) -> str:
    """Write ``payload`` as JSON under ``staging_url``; returns the reference to pass to a trigger."""
    data = json.dumps(payload, separators=(",", ":")).encode()
    hint = re.sub(r"[^A-Za-z0-9_.\-]", "_", name_hint)
    name = f"{hint}-{hashlib.sha256(data).hexdigest()[:16]}-{uuid.uuid4().hex[:8]}@{this_host()}.json"
    if _is_local(staging_url):
        directory = _local_path(staging_url)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            target = directory / name
            temporary = target.with_suffix(".tmp")
            temporary.write_bytes(data)
            temporary.replace(target)
        except OSError as error:
            raise StagingError(_unusable(staging_url, error, "write")) from None
        return str(target)
    try:
        target_path = _object_path(staging_url) / name
        target_path.write_bytes(data)
    except Exception as error:
        raise StagingError(_unusable(staging_url, error, "write")) from None
    return str(target_path)


def load_json(reference: str) -> Any:
    """Sync read of a staged payload; call it through ``asyncio.to_thread`` from a trigger."""
    if _is_local(reference):
        path = _local_path(reference)
        if not path.exists():
            raise StagingError(_missing_local(path, host_of(reference)))
        return json.loads(path.read_bytes())
    try:
        return json.loads(_object_path(reference).read_bytes())
    except FileNotFoundError:
        raise StagingError(
            f"Staged object {reference} no longer exists: it was removed before this task read it (by "
            "staging.cleanup or a lifecycle rule with too short an age, or by another run). Re-run the task."
        ) from None
    except Exception as error:
        raise StagingError(_unusable(reference, error, "read")) from None


def remove(reference: str) -> bool:
    """Delete a staged object; best effort (what is left is reclaimed by ``cleanup``/lifecycle rules)."""
    try:
        if _is_local(reference):
            _local_path(reference).unlink(missing_ok=True)
            return True
        path = _object_path(reference)
        if path.exists():
            path.unlink()
        return True
    except Exception as error:
        log.warning(
            "Could not remove staged %s (%s); cleanup() or a lifecycle rule reclaims it", reference, _describe(error)
        )
        return False


def check_staging(staging_url: str, *, timeout: float | None = None) -> None:
    """
    Prove, before deferring, that ``staging_url`` can be written, read and deleted from here.

    Raises ``StagingError`` naming the URL and the problem (unknown bucket, no or wrong credentials,
    unreachable endpoint, missing filesystem support) within ``timeout`` seconds
    (``[milvus] staging_check_timeout``, default 30). A local directory with an executor that runs
    tasks on other hosts only gets a warning: it works when the directory is a volume shared by every host.
    """
    if _is_local(staging_url):
        _warn_if_multi_host(staging_url)
        probe = _local_path(staging_url) / f".probe-{uuid.uuid4().hex[:8]}@{this_host()}.json"
        try:
            probe.parent.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"{}")
            probe.unlink()
        except OSError as error:
            raise StagingError(_unusable(staging_url, error, "probe")) from None
        return
    if timeout is None:
        from airflow.configuration import conf

        timeout = conf.getfloat("milvus", "staging_check_timeout", fallback=DEFAULT_CHECK_TIMEOUT)
    # A daemon thread, not an executor: a probe stuck on a silent endpoint must not hold the process at exit.
    outcome: list[BaseException | None] = []
    done = threading.Event()

    def run_probe() -> None:
        try:
            _probe_object_storage(staging_url)
            outcome.append(None)
        except BaseException as error:
            outcome.append(error)
        finally:
            done.set()

    threading.Thread(target=run_probe, name="milvus-staging-check", daemon=True).start()
    if not done.wait(timeout):
        raise StagingError(
            _unusable(
                staging_url, TimeoutError(f"no answer within {timeout:g} s (endpoint unreachable or too slow)"), "probe"
            )
        )
    failure = outcome[0]
    if isinstance(failure, StagingError):
        raise failure
    if failure is not None:
        raise StagingError(_unusable(staging_url, failure, "probe")) from None


def cleanup(staging_url: str, *, older_than: timedelta = timedelta(hours=24)) -> list[str]:
    """
    Remove staged objects (and probes, partial writes) older than ``older_than``; returns their references.

    Staged objects of running deferrals are younger than their deferral timeout (2 h by default): keep
    ``older_than`` above the longest ``timeout`` of the deferred Milvus tasks.
    """
    cutoff = time.time() - older_than.total_seconds()
    removed: list[str] = []
    if _is_local(staging_url):
        directory = _local_path(staging_url)
        if not directory.is_dir():
            return removed
        for path in directory.iterdir():
            if path.is_file() and path.suffix in (".json", ".tmp") and path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
                removed.append(str(path))
        return removed
    root = _object_path(staging_url)
    if not root.exists():
        return removed
    for path in root.iterdir():
        if not path.name.endswith((".json", ".tmp")) or not path.is_file():
            continue
        if _modified(path) < cutoff:
            path.unlink()
            removed.append(str(path))
    return removed


# ----- helpers ------------------------------------------------------------------------------------


def _is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def _local_path(url: str) -> Path:
    return Path(url.removeprefix("file://"))


def _object_path(url: str) -> Any:
    from airflow.sdk import ObjectStoragePath

    return ObjectStoragePath(url)


def _probe_object_storage(staging_url: str) -> None:
    root = _object_path(staging_url)
    if root.conn_id:
        from airflow_provider_milvus.version_compat import BaseHook

        try:
            BaseHook.get_connection(root.conn_id)
        except Exception as error:
            if type(error).__name__ != "AirflowNotFoundException":
                raise
            raise StagingError(
                f"Staging location {staging_url} is not usable (connection '{root.conn_id}' is not defined; "
                "during probe). Define it (e.g. an 'aws' connection with the endpoint and keys) or fix [milvus] "
                "staging_url (or the operator's staging_url)."
            ) from None
    probe = root / f".probe-{uuid.uuid4().hex[:8]}@{this_host()}.json"
    written = False
    try:
        probe.write_bytes(b"{}")
        written = True
        if probe.read_bytes() != b"{}":
            raise StagingError(f"Staging location {staging_url} returned other bytes than were written to {probe}.")
        probe.unlink()
        written = False
    finally:
        if written:
            remove(str(probe))


def _modified(path: Any) -> float:
    info = path.fs.info(path.path)
    for key in ("LastModified", "mtime", "last_modified", "created"):
        value = info.get(key)
        if value is None:
            continue
        return value.timestamp() if hasattr(value, "timestamp") else float(value)
    return time.time()  # unknown age: keep it


def _warn_if_multi_host(staging_url: str) -> None:
    from airflow.configuration import conf

    executor = conf.get("core", "executor", fallback="LocalExecutor") or "LocalExecutor"
    others = [name for name in executor.split(",") if name.strip().rsplit(".", 1)[-1] not in SINGLE_HOST_EXECUTORS]
    if others:
        log.warning(
            "Staging location %s is a local directory but the executor (%s) runs tasks on other hosts than "
            "the triggerer: %s (a volume mounted on every worker and triggerer host, or an object storage "
            "URL such as s3://aws_conn_id@bucket/prefix in [milvus] staging_url).",
            staging_url,
            executor,
            SHARED_STORAGE_HINT,
        )


def _missing_local(path: Path, staged_on: str | None) -> str:
    here = this_host()
    if staged_on and staged_on != here:
        where = f"It was staged on host '{staged_on}' and this is host '{here}'"
    else:
        where = f"It was staged on this host ('{here}') and is gone: removed, or written in another container"
    return (
        f"Staged file {path} does not exist here. {where}: {SHARED_STORAGE_HINT} (a volume mounted at the same "
        "path on every worker and triggerer host, or an object storage URL such as "
        "s3://aws_conn_id@bucket/prefix in [milvus] staging_url) when workers and triggerers run on different "
        "hosts."
    )


def _describe(error: BaseException) -> str:
    name = type(error).__name__
    text = str(error)
    lowered = f"{name} {text}".lower()
    if "no filesystem registered" in lowered:
        return (
            f"{text}; object storage URLs need the filesystem's provider, e.g. "
            "apache-airflow-providers-amazon and s3fs for s3://"
        )
    if "isn't defined" in lowered or "airflownotfoundexception" in lowered:
        return f"connection not found: {text}"
    if "bucket does not exist" in lowered or "nosuchbucket" in lowered:
        return f"the bucket does not exist ({text})"
    if "unable to locate credentials" in lowered or "nocredentials" in lowered or "partialcredentials" in lowered:
        return "no credentials: give the connection an access key (login/password) or an IAM role"
    if any(
        word in lowered
        for word in (
            "accessdenied",
            "access denied",
            "forbidden",
            "invalidaccesskeyid",
            "signaturedoesnotmatch",
            "permissionerror",
            "invalidtoken",
        )
    ):
        return f"access denied: check the credentials and permissions of the connection ({name}: {text})"
    if any(
        word in lowered
        for word in (
            "could not connect",
            "connection refused",
            "endpointconnectionerror",
            "connecttimeout",
            "name or service not known",
            "timed out",
            "no answer within",
            "cannot connect",
        )
    ):
        return f"the endpoint is unreachable ({text})"
    return f"{name}: {text}"


def _unusable(url: str, error: BaseException, action: str) -> str:
    return (
        f"Staging location {url} is not usable ({_describe(error)}; during {action}). Deferred Milvus tasks "
        "pass bulk inputs and large results to the triggerer through [milvus] staging_url (or the operator's "
        "staging_url): fix the URL, bucket or connection, or run the task with deferrable=False."
    )
