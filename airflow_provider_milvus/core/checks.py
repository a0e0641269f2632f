"""
What every job is checked for before it connects: the collection's name and the tenant it is scoped to.

One place for every operation (add, upsert, delete, search), called by the operators before they run
or defer and by ``run_job`` in the core (the triggerer's path), so a job can never reach Milvus with:

- a collection name a real Milvus refuses. Milvus Lite accepts ``my-coll``, ``1abc`` or ``café``; a
  Milvus server rejects them, so a DAG tested on Lite would fail only in production. A write with a
  source ledger (``replace_by``) also creates ``<name>__sources``, whose name must fit as well: checked
  before the data is written, not after.
- a tenant value that would widen the task to every tenant. ``partition_key_value=""`` (a template
  that rendered empty) used to mean "no tenant": a delete or a search then reached every tenant.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from airflow_provider_milvus.core.ledger import ledger_name
from airflow_provider_milvus.exceptions import MilvusProviderError

if TYPE_CHECKING:
    from airflow_provider_milvus.core.jobs import Job, StoreConfig

# Milvus's rule (proxy ValidateCollectionName, 2.3 to 2.5): ASCII letters, digits and underscores, not
# starting with a digit, at most proxy.maxNameLength (255) bytes.
MAX_NAME_BYTES = 255
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_job(job: Job) -> None:
    """Refuse a job whose collection names or tenant value a real Milvus, or the tenant scope, cannot take."""
    check_store(job.store)
    if ledger_name_needed(job):
        check_collection_name(
            ledger_name(job.store.collection_name),
            why=f"the source ledger of '{job.store.collection_name}' (replace_by with track_sources)",
        )


def ledger_name_needed(job: Job) -> bool:
    """Tell whether the job writes a source ledger, ``<name>__sources`` (``replace_by`` with ``track_sources``)."""
    return bool(getattr(job, "replace_by", None) and getattr(job, "track_sources", False))


def check_store(config: StoreConfig) -> None:
    check_collection_name(config.collection_name)
    check_tenant(config.partition_key_value)


def check_collection_name(name: object, *, why: str = "") -> str:
    """Return ``name`` when a Milvus server accepts it as a collection name; else say what to change."""
    if not isinstance(name, str) or not name:
        raise MilvusProviderError(f"collection_name must be a non-empty string, got {name!r:.80}.")
    what = f"Collection name {name!r:.300}" + (f", {why}," if why else "")
    size = len(name.encode())
    if size > MAX_NAME_BYTES:
        hint = " Shorten collection_name, or set track_sources=False." if why else " Shorten it."
        raise MilvusProviderError(
            f"{what} is {size} bytes; Milvus allows at most {MAX_NAME_BYTES}.{hint} Nothing was written."
        )
    if not _NAME.fullmatch(name):
        rule = (
            "must start with a letter or an underscore"
            if _NAME.fullmatch(f"_{name[1:]}")
            else "may hold only ASCII letters, digits and underscores"
        )
        raise MilvusProviderError(
            f"{what} is refused by Milvus servers: a collection name {rule} (Milvus Lite is laxer, a server is "
            f"not). Use e.g. {_suggest(name)!r}. Nothing was written."
        )
    return name


def check_tenant(value: object) -> str | None:
    """``None`` (no tenant) or a non-blank string; anything else would scope the task to every tenant."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise MilvusProviderError(
            f"partition_key_value must be a string (the tenant's partition-key value), got "
            f'{type(value).__name__} {value!r:.60}. Convert it, e.g. partition_key_value="{value!s:.60}".'
        )
    if not value.strip():
        raise MilvusProviderError(
            f"partition_key_value is {'empty' if not value else 'blank'} ({value!r}): a tenant-scoped task "
            "would reach every tenant. Check the template or parameter that renders it (e.g. "
            "{{ params.tenant }} without a value); leave partition_key_value unset for a task without tenants."
        )
    return value


def _suggest(name: str) -> str:
    fixed = re.sub(r"[^A-Za-z0-9_]", "_", name.encode("ascii", "replace").decode().replace("?", "_"))
    return fixed if _NAME.fullmatch(fixed) else f"_{fixed}"
