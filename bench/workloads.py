"""Test data exactly like the tutorial's ``generate_test_documents`` and queries, with fixed ids."""

from __future__ import annotations

import random
from dataclasses import dataclass

from langchain_core.documents import Document

TUTORIAL_ADDS = (10, 100)
TUTORIAL_SEARCHES = 100
TUTORIAL_CORPUS = 1000
TUTORIAL_DELETES = (10, 100)
SEARCH_K = 3


@dataclass(frozen=True)
class Workload:
    """
    ``kind`` is add | search | search_by_vector | delete | ingest (``search@100k``: over a 100k collection).

    ``n`` items; ``search_by_vector`` searches query vectors computed upstream (no embedding call).
    """

    kind: str
    n: int

    @property
    def label(self) -> str:
        if self.base == "search_by_vector":
            return f"search {self.n:,} by vector"
        noun = {"add": "docs", "search": "queries", "delete": "deletes", "ingest": "chunks"}[self.base]
        suffix = f" over {self.kind.split('@')[1]}" if "@" in self.kind else ""
        return f"{self.base} {self.n:,} {noun}{suffix}"

    @property
    def base(self) -> str:
        return self.kind.split("@")[0]


def documents(count: int, *, start: int = 0, prefix: str = "doc", seed: int = 0) -> list[Document]:
    """Tutorial documents; ``metadata["id"]`` (``doc_<i>``) is the primary key and the delete key."""
    rng = random.Random(seed + start)
    return [
        Document(
            page_content=f"This is test document {i} with some random content: {rng.random()}",
            metadata={"id": f"{prefix}_{i}", "score": rng.random(), "category": f"cat_{i % 5}"},
        )
        for i in range(start, start + count)
    ]


def seed_document() -> Document:
    """Written before timing so every method starts on an existing (created, indexed, loaded) collection."""
    return documents(1, prefix="seed")[0]


def queries(count: int) -> list[str]:
    return [f"test document {i % 50}" for i in range(count)]


def delete_ids(count: int, *, start: int) -> list[str]:
    return [f"doc_{i}" for i in range(start, start + count)]
