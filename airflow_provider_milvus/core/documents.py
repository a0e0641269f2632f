"""
Turn operator input into chunks with stable primary keys, rejecting bad input before anything is written.

An id never depends on where a document sits in the input list: it comes from ``ids``, from
``metadata[id_key]``, or from a hash of what identifies the chunk (its source, its text, and which
occurrence of that text it is within its own document). Re-running with the input reordered,
extended or repeated therefore writes the same primary keys. Derived ids are 32 hex digits; an INT64
collection gets them as 63-bit numbers (``core/rows.py``).

``normalize_documents`` and the ``check_*`` functions run in the worker, when the operator executes,
so bad input fails before deferring; ``prepare_chunks`` (splitting and ids, CPU work) runs in the
write core, in a thread, after the source ledger has named the sources it can skip.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_milvus.exceptions import MilvusProviderError

SOURCE_KEYS = ("source", "path", "file", "url")
VECTOR_KEYS = ("vector", "embedding")
# Metadata keys Milvus keeps for itself: "$meta" is the dynamic field (a row setting it fails mid-write).
RESERVED_METADATA_KEYS = frozenset({"$meta"})
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1


@dataclass(frozen=True)
class SplitOptions:
    """Recursive character splitting; ``chunk_size=None`` keeps documents whole (0 is refused, not "whole")."""

    chunk_size: int | None = None
    chunk_overlap: int = 0

    def __post_init__(self) -> None:
        check_split(self.chunk_size, self.chunk_overlap)


def check_split(chunk_size: Any, chunk_overlap: Any) -> None:
    """``chunk_size`` is None (no splitting) or at least 1; ``chunk_overlap`` is 0 or more, and less than it."""
    if chunk_size is not None and (not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1):
        raise MilvusProviderError(
            f"chunk_size={chunk_size!r}: give the chunk length in characters (1 or more), or leave chunk_size "
            "unset (None) to keep each document whole."
        )
    if not isinstance(chunk_overlap, int) or isinstance(chunk_overlap, bool) or chunk_overlap < 0:
        raise MilvusProviderError(f"chunk_overlap={chunk_overlap!r}: give 0 or more characters.")
    if chunk_size is not None and chunk_overlap >= chunk_size:
        raise MilvusProviderError(
            f"chunk_overlap={chunk_overlap} must be smaller than chunk_size={chunk_size}: neighbouring chunks "
            "share that many characters."
        )


@dataclass
class PreparedChunks:
    """``[{"id", "text", "metadata"[, "vector"]}]`` plus how many identical duplicates were dropped."""

    chunks: list[dict[str, Any]] = field(default_factory=list)
    documents: int = 0
    duplicates: int = 0


def prepare_chunks(
    documents: Any,
    *,
    ids: Sequence[str | int] | None = None,
    id_key: str | None = None,
    split: SplitOptions = SplitOptions(),
    tenant: str | None = None,
    scope_key: str | None = None,
    normalized: bool = False,
) -> PreparedChunks:
    """
    Normalise, split and id documents; a ``tenant`` goes into derived ids (primary keys are unique per collection).

    ``scope_key`` (the write's ``replace_by``) names the metadata key whose value derived ids hash as the
    source, so two sources never share an id; without it the first of ``SOURCE_KEYS`` present is used.
    ``normalized=True``: the documents are ``normalize_documents`` output already (the operator normalised
    and checked them in the worker; the write core takes them as they are).

    Identical documents (same id, text and metadata) are written once and counted as duplicates;
    two different chunks with the same id are an error.
    """
    docs = documents if normalized else normalize_documents(documents)
    check_ids(docs, ids, split)
    prepared = PreparedChunks(documents=len(docs))
    first_at: dict[str | int, int] = {}
    for position, doc in enumerate(docs):
        if split.chunk_size and "vector" in doc:
            raise MilvusProviderError(
                f"Document {position} carries its own vector, so it cannot be split (chunk_size): its "
                "vector belongs to the whole text."
            )
        occurrences: dict[str, int] = {}
        for chunk_index, text in enumerate(_split(doc["page_content"], split)):
            metadata = dict(doc["metadata"])
            if split.chunk_size:
                metadata.setdefault("chunk_index", chunk_index)
            occurrence = occurrences.get(text, 0)
            occurrences[text] = occurrence + 1
            chunk_id = _choose_id(
                doc,
                position,
                chunk_index,
                occurrence,
                text,
                ids=ids,
                id_key=id_key,
                split=split,
                tenant=tenant,
                scope_key=scope_key,
            )
            chunk = {"id": chunk_id, "text": text, "metadata": metadata}
            if ids is None and not id_key:
                chunk["derived"] = True  # a content hash: INT64 collections get it as a 63-bit number
            if "vector" in doc:
                chunk["vector"] = doc["vector"]
            if chunk_id in first_at:
                earlier = prepared.chunks[first_at[chunk_id]]
                if earlier == chunk:
                    prepared.duplicates += 1
                    continue
                raise MilvusProviderError(
                    f"Two different chunks have the id '{chunk_id}' (documents up to {position}): ids must be "
                    "unique within one task. Give the documents distinct sources, ids or id_key values."
                )
            first_at[chunk_id] = len(prepared.chunks)
            prepared.chunks.append(chunk)
    return prepared


def check_ids(documents: Sequence[Any], ids: Sequence[str | int] | None, split: SplitOptions) -> None:
    """``ids`` name whole documents: one each, and no splitting."""
    if ids is None:
        return
    if split.chunk_size:
        raise MilvusProviderError("'ids' name whole documents; they cannot be combined with splitting.")
    if len(ids) != len(documents):
        raise MilvusProviderError(f"Got {len(ids)} ids for {len(documents)} documents; pass one id per document.")


def estimate_chunks(documents: Sequence[dict[str, Any]], split: SplitOptions) -> int:
    """Roughly how many chunks splitting will make (a job's size, before the core splits it)."""
    if not split.chunk_size:
        return len(documents)
    step = max(split.chunk_size - split.chunk_overlap, 1)
    return sum(max(1, -(-len(d["page_content"]) // step)) for d in documents)


def normalize_documents(documents: Any) -> list[dict[str, Any]]:
    """Accept strings, ``{"page_content"|"text", "metadata"[, "vector"]}`` dicts, or LangChain ``Document``s."""
    if documents is None:
        return []
    if isinstance(documents, (str, dict)):
        documents = [documents]
    if not isinstance(documents, Sequence):
        raise MilvusProviderError(
            f"'documents' must be a list of strings or {{'page_content', 'metadata'}} dicts, "
            f"got {type(documents).__name__}."
        )
    normalized = []
    for position, doc in enumerate(documents):
        vector = None
        text: Any
        metadata: Any
        if isinstance(doc, str):
            text, metadata = doc, {}
        elif isinstance(doc, dict):
            text = doc.get("page_content", doc.get("text"))
            metadata = doc.get("metadata") or {}
            vector = next((doc[k] for k in VECTOR_KEYS if doc.get(k) is not None), None)
        elif hasattr(doc, "page_content"):
            text, metadata = doc.page_content, dict(doc.metadata or {})
            if getattr(doc, "id", None):
                metadata.setdefault("id", doc.id)
        else:
            raise MilvusProviderError(f"Document {position} is a {type(doc).__name__}; expected a string or a dict.")
        if not isinstance(text, str) or not text.strip():
            raise MilvusProviderError(
                f"Document {position} has no text: 'page_content' must be a non-empty string (got {text!r:.60})."
            )
        if not isinstance(metadata, dict):
            raise MilvusProviderError(f"Document {position}: 'metadata' must be a dict, got {type(metadata).__name__}.")
        _check_metadata(metadata, position)
        entry: dict[str, Any] = {"page_content": text, "metadata": metadata}
        if vector is not None:
            entry["vector"] = _check_vector(vector, position)
        normalized.append(entry)
    return normalized


def derive_id(source: str, occurrence: int, text: str, tenant: str | None = None) -> str:
    """32 hex digits of SHA-256 over what identifies a chunk; no list position goes in."""
    identity = f"{source}\x1f{occurrence}\x1f{text}"
    if tenant is not None:  # two tenants' identical documents are two records
        identity = f"{tenant}\x1e{identity}"
    return hashlib.sha256(identity.encode()).hexdigest()[:32]


def _split(text: str, split: SplitOptions) -> list[str]:
    if not split.chunk_size:
        return [text]
    return [chunk for chunk in _splitter(split.chunk_size, split.chunk_overlap).split_text(text) if chunk.strip()]


@functools.cache
def _splitter(chunk_size: int, chunk_overlap: int) -> Any:
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    return RecursiveCharacterTextSplitter(chunk_size=chunk_size, chunk_overlap=chunk_overlap)


def _choose_id(
    doc: dict[str, Any],
    position: int,
    chunk_index: int,
    occurrence: int,
    text: str,
    *,
    ids: Sequence[str | int] | None,
    id_key: str | None,
    split: SplitOptions,
    tenant: str | None,
    scope_key: str | None,
) -> str | int:
    if ids is not None:
        return _caller_id(ids[position], f"ids[{position}]")
    if id_key:
        if id_key not in doc["metadata"]:
            raise MilvusProviderError(f"Document {position} has no metadata key '{id_key}' (id_key).")
        base = _caller_id(doc["metadata"][id_key], f"Document {position} metadata '{id_key}'")
        return f"{base}#{chunk_index}" if split.chunk_size else base
    # The occurrence (not the chunk's position) tells apart repeated texts of one document, so an
    # edit re-ids only the chunks whose text changed.
    if scope_key and scope_key in doc["metadata"]:
        source = _source_text(doc["metadata"][scope_key])
    else:
        source = next((str(doc["metadata"][k]) for k in SOURCE_KEYS if k in doc["metadata"]), "")
    return derive_id(source, occurrence, text, tenant)


def _source_text(value: Any) -> str:
    """Return the source part of an id: a string as it is (ids stay as they were), a number apart from its text."""
    return value if isinstance(value, str) else "\x1d" + json.dumps(value)


def _caller_id(value: Any, where: str) -> str | int:
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        raise MilvusProviderError(f"{where}: an id must be a non-empty string or an integer, got {value!r:.60}.")
    return value


def _check_vector(vector: Any, position: int) -> list[float]:
    if (
        not isinstance(vector, (list, tuple))
        or not vector
        or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in vector)
    ):
        raise MilvusProviderError(f"Document {position}: 'vector' must be a non-empty list of numbers.")
    return [float(x) for x in vector]


def _check_metadata(metadata: dict[str, Any], position: int) -> None:
    """
    JSON-able, string keys, no reserved key, every integer within INT64: what any Milvus field can take.

    Milvus stores integers as 64-bit, in INT64 fields and in JSON (the dynamic field) alike: pymilvus
    fails on a larger one with "data type is inconsistent" after earlier batches were written.
    """
    reserved = RESERVED_METADATA_KEYS.intersection(metadata)
    if reserved:
        raise MilvusProviderError(
            f"Document {position}: metadata key {sorted(reserved)[0]!r} is reserved by Milvus (the dynamic "
            "field's own name). Rename it; nothing was written."
        )
    _check_jsonable(metadata, position)
    for key, value in metadata.items():  # JSON-able, so no cycle: the walk ends
        found = _big_integer(value)
        if found is not None:
            where, number = found
            raise MilvusProviderError(
                f"Document {position}: metadata '{key}'{where} = {number} is outside the INT64 range "
                f"({INT64_MIN} to {INT64_MAX}) that Milvus stores integers in. Pass it as a string (or a float); "
                "nothing was written."
            )


def _check_jsonable(metadata: dict[str, Any], position: int) -> None:
    try:  # one call for the whole dict; key by key only to name what is wrong
        json.dumps(metadata, allow_nan=False)
        if all(isinstance(key, str) for key in metadata):
            return
    except (TypeError, ValueError):
        pass
    for key, value in metadata.items():
        if not isinstance(key, str):
            raise MilvusProviderError(f"Document {position}: metadata key {key!r} is not a string.")
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as error:
            raise MilvusProviderError(
                f"Document {position}: metadata '{key}' is not JSON-able ({type(value).__name__}: {error}). "
                "Convert it to a string, number, bool, list or dict first."
            ) from None


def _big_integer(value: Any, where: str = "") -> tuple[str, int] | None:
    """Return the first integer outside INT64 in ``value`` (nested lists and dicts too) and where it is, or None."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (where, value) if not INT64_MIN <= value <= INT64_MAX else None
    if isinstance(value, dict):
        items: Any = ((f"{where}[{k!r}]", v) for k, v in value.items())
    elif isinstance(value, (list, tuple)):
        items = ((f"{where}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for inner_where, inner in items:
        found = _big_integer(inner, inner_where)
        if found is not None:
            return found
    return None


def check_text_sizes(chunks: list[dict[str, Any]], max_bytes: int, field: str = "text") -> None:
    """Reject (never truncate) chunks longer than the collection's VARCHAR text field, in UTF-8 bytes."""
    for chunk in chunks:
        size = len(chunk["text"].encode())
        if size > max_bytes:
            raise MilvusProviderError(
                f"Chunk {chunk['id']!r:.80} has {size} bytes of text; the collection's text field '{field}' holds "
                f"at most {max_bytes}. Set chunk_size to split documents; nothing was truncated and nothing was "
                "written."
            )
