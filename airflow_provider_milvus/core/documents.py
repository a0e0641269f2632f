"""Turn operator input into chunks with stable primary keys, rejecting bad input before anything is written.

Runs in the worker (it is CPU work), never in the triggerer.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from airflow_provider_milvus.core.collection import PK_MAX_LENGTH
from airflow_provider_milvus.exceptions import MilvusProviderError

SOURCE_KEYS = ("source", "path", "file", "url")


@dataclass(frozen=True)
class SplitOptions:
    """Recursive character splitting; ``chunk_size=None`` keeps documents whole."""

    chunk_size: int | None = None
    chunk_overlap: int = 0


def prepare_chunks(
    documents: Any,
    *,
    ids: Sequence[str] | None = None,
    id_key: str | None = None,
    split: SplitOptions = SplitOptions(),
    text_max_bytes: int | None = None,
) -> list[dict[str, Any]]:
    """
    Normalise, split and id documents: ``[{"id", "text", "metadata"}, ...]``.

    Ids come from ``ids``, from ``metadata[id_key]``, or from a hash of source + chunk position +
    content, so re-running the same input yields the same primary keys.
    """
    docs = normalize_documents(documents)
    if ids is not None:
        if split.chunk_size:
            raise MilvusProviderError("'ids' name whole documents; they cannot be combined with splitting.")
        if len(ids) != len(docs):
            raise MilvusProviderError(f"Got {len(ids)} ids for {len(docs)} documents; pass one id per document.")
    chunks: list[dict[str, Any]] = []
    for position, doc in enumerate(docs):
        for chunk_index, text in enumerate(_split(doc["page_content"], split)):
            metadata = dict(doc["metadata"])
            if split.chunk_size:
                metadata.setdefault("chunk_index", chunk_index)
            chunk_id = _choose_id(doc, position, chunk_index, text, ids=ids, id_key=id_key, split=split)
            chunks.append({"id": chunk_id, "text": text, "metadata": metadata})
    _check_chunks(chunks, text_max_bytes)
    return chunks


def normalize_documents(documents: Any) -> list[dict[str, Any]]:
    """Accept strings, ``{"page_content", "metadata"}`` dicts, or LangChain ``Document`` objects."""
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
        if isinstance(doc, str):
            text, metadata = doc, {}
        elif isinstance(doc, dict):
            text = doc.get("page_content", doc.get("text"))
            metadata = doc.get("metadata") or {}
        elif hasattr(doc, "page_content"):
            text, metadata = doc.page_content, dict(doc.metadata or {})
            if getattr(doc, "id", None):
                metadata.setdefault("id", doc.id)
        else:
            raise MilvusProviderError(f"Document {position} is a {type(doc).__name__}; expected a string or a dict.")
        if not isinstance(text, str) or not text.strip():
            raise MilvusProviderError(
                f"Document {position} has no text: 'page_content' must be a non-empty string "
                f"(got {text!r:.60})."
            )
        if not isinstance(metadata, dict):
            raise MilvusProviderError(f"Document {position}: 'metadata' must be a dict, got {type(metadata).__name__}.")
        _check_metadata(metadata, position)
        normalized.append({"page_content": text, "metadata": metadata})
    return normalized


def derive_id(source: str, chunk_index: int, text: str) -> str:
    digest = hashlib.sha256(f"{source}\x1f{chunk_index}\x1f{text}".encode()).hexdigest()
    return digest[:32]


def _split(text: str, split: SplitOptions) -> list[str]:
    if not split.chunk_size:
        return [text]
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    splitter = RecursiveCharacterTextSplitter(chunk_size=split.chunk_size, chunk_overlap=split.chunk_overlap)
    return [chunk for chunk in splitter.split_text(text) if chunk.strip()]


def _choose_id(
    doc: dict[str, Any],
    position: int,
    chunk_index: int,
    text: str,
    *,
    ids: Sequence[str] | None,
    id_key: str | None,
    split: SplitOptions,
) -> str:
    if ids is not None:
        return str(ids[position])
    if id_key:
        if id_key not in doc["metadata"]:
            raise MilvusProviderError(f"Document {position} has no metadata key '{id_key}' (id_key).")
        base = str(doc["metadata"][id_key])
        return f"{base}#{chunk_index}" if split.chunk_size else base
    source = next((str(doc["metadata"][k]) for k in SOURCE_KEYS if k in doc["metadata"]), f"#{position}")
    return derive_id(source, chunk_index, text)


def _check_metadata(metadata: dict[str, Any], position: int) -> None:
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


def check_text_sizes(chunks: list[dict[str, Any]], max_bytes: int) -> None:
    """Reject (never truncate) chunks longer than the collection's VARCHAR text field, in UTF-8 bytes."""
    for chunk in chunks:
        size = len(chunk["text"].encode())
        if size > max_bytes:
            raise MilvusProviderError(
                f"Chunk {chunk['id']} has {size} bytes of text; the collection's text field holds at most "
                f"{max_bytes}. Set chunk_size to split documents; nothing was truncated and nothing was written."
            )


def _check_chunks(chunks: list[dict[str, Any]], text_max_bytes: int | None) -> None:
    seen: dict[str, int] = {}
    for position, chunk in enumerate(chunks):
        if len(chunk["id"].encode()) > PK_MAX_LENGTH:
            raise MilvusProviderError(f"Chunk {position}: id is longer than {PK_MAX_LENGTH} bytes.")
        if chunk["id"] in seen:
            raise MilvusProviderError(
                f"Chunks {seen[chunk['id']]} and {position} have the same id '{chunk['id']}'. "
                "Ids must be unique within one task."
            )
        seen[chunk["id"]] = position
    if text_max_bytes is not None:
        check_text_sizes(chunks, text_max_bytes)
