"""
What a search task was given to search for: text queries or query vectors, checked before any request.

``queries`` takes a string, a vector (a list of numbers), a ``{"vector": [...]}`` item (what common-ai's
``LlamaIndexEmbeddingOperator`` emits per chunk, also ``{"embedding": [...]}``), or a list of any one of
these kinds. Text queries are embedded (or matched with BM25); vectors are searched as they are, with
no embedding call. One task searches by text or by vector, never both: a mixed list is refused (on a
hybrid collection the two kinds are even searched differently, text by dense + BM25, vectors by dense).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from airflow_provider_milvus.core.limits import MAX_TOP_K
from airflow_provider_milvus.exceptions import MilvusProviderError

VECTOR_KEYS = ("vector", "embedding")  # the keys common-ai's and this provider's documents use


@dataclass(frozen=True)
class Queries:
    """Normalized queries: ``items`` are all strings or all lists of floats; ``single`` was one query."""

    items: list[str] | list[list[float]]
    by_vector: bool
    single: bool


def normalize_queries(value: Any) -> Queries:
    """
    Text queries or query vectors from what a task was given; a clear error for anything else.

    A list of numbers is one vector (one query, like one string); a list of lists is many. Checked
    here, without any request: empty queries, non-numeric or non-finite numbers, and a mix of text
    and vectors. Vector sizes need the collection's schema: the search core checks them.
    """
    if value is None:
        return Queries([], by_vector=False, single=False)
    value = _as_list(value)
    if isinstance(value, str):
        return Queries([_text(value, 0)], by_vector=False, single=True)
    if isinstance(value, dict) or (isinstance(value, (list, tuple)) and value and _is_number(value[0])):
        return Queries([_vector(value, 0)], by_vector=True, single=True)
    if not isinstance(value, (list, tuple)):
        raise MilvusProviderError(
            f"queries must be a string, a vector (a list of numbers) or a list of them, got {type(value).__name__}."
        )
    items = [_as_list(item) for item in value]
    if not items:
        return Queries([], by_vector=False, single=False)
    texts = [i for i, item in enumerate(items) if isinstance(item, str)]
    if texts and len(texts) < len(items):
        other = next(i for i, item in enumerate(items) if not isinstance(item, str))
        raise MilvusProviderError(
            f"queries mixes text (query {texts[0]}) and {_kind(items[other])} (query {other}). A task searches by "
            "text or by vector: split them into two tasks."
        )
    if texts:
        return Queries([_text(item, i) for i, item in enumerate(items)], by_vector=False, single=False)
    return Queries([_vector(item, i) for i, item in enumerate(items)], by_vector=True, single=False)


def top_k_problem(k: Any, name: str = "k") -> str | None:
    """Say what is wrong with ``k`` (hits per query) or ``fetch_k``, or None: an integer from 1 to Milvus's cap."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_TOP_K:
        return (
            f"{name} must be an integer from 1 to {MAX_TOP_K} (hits per query; Milvus caps a search's limit "
            f"at {MAX_TOP_K}), got {k!r}."
        )
    return None


def _as_list(value: Any) -> Any:
    """Numpy arrays (and other array types) as plain lists."""
    return value.tolist() if hasattr(value, "tolist") and not isinstance(value, (str, bytes)) else value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _kind(item: Any) -> str:
    return "a vector" if isinstance(item, (list, tuple, dict)) else f"a {type(item).__name__}"


def _text(query: str, position: int) -> str:
    if not query.strip():
        raise MilvusProviderError(f"Query {position} is an empty string; a text query must have some text.")
    return query


def _vector(item: Any, position: int) -> list[float]:
    if isinstance(item, dict):
        key = next((k for k in VECTOR_KEYS if item.get(k) is not None), None)
        if key is None and "chunks" in item:
            raise MilvusProviderError(
                f"Query {position} is a dict with 'chunks' (an embedding operator's whole output): pass its "
                'chunks, e.g. queries=embed.output["chunks"].'
            )
        if key is None:
            raise MilvusProviderError(
                f"Query {position} is a dict without a 'vector' (keys: {sorted(item)[:8]}); query items must be "
                "strings, vectors (lists of numbers) or {'vector': [...]} dicts."
            )
        item = _as_list(item[key])
    if not isinstance(item, (list, tuple)):
        raise MilvusProviderError(
            f"Query {position} is a {type(item).__name__}; queries must be strings or vectors (lists of numbers)."
        )
    if not item:
        raise MilvusProviderError(f"Query {position} is an empty vector; a query vector needs numbers.")
    for index, number in enumerate(item):
        if not _is_number(number):
            raise MilvusProviderError(
                f"Query {position}'s vector has a non-numeric value at position {index} ({number!r:.40}, a "
                f"{type(number).__name__}); query vectors must be lists of numbers. Nothing was searched."
            )
        if not math.isfinite(number):
            raise MilvusProviderError(
                f"Query {position}'s vector has {number} at position {index}; query vectors must be finite numbers."
            )
    return [float(number) for number in item]
