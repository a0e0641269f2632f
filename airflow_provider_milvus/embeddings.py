"""Dense embeddings from settings: an Airflow connection of type ``openai`` plus a model name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_milvus.exceptions import MilvusProviderError

if TYPE_CHECKING:
    from langchain_openai import OpenAIEmbeddings

    from airflow_provider_milvus.hooks.milvus import MilvusConnectionSettings

EMBEDDING_MAX_RETRIES = 6
EMBEDDING_TIMEOUT = 60.0


@dataclass(frozen=True)
class EmbeddingSettings:
    conn_id: str
    model: str | None = None
    dimensions: int | None = None

    @classmethod
    def choose(
        cls,
        milvus: MilvusConnectionSettings,
        *,
        conn_id: str | None,
        model: str | None,
        dimensions: int | None,
    ) -> EmbeddingSettings | None:
        """Operator arguments win over the Milvus connection's defaults; no conn id means BM25."""
        chosen_conn_id = conn_id or milvus.embedding_conn_id
        if not chosen_conn_id:
            return None
        return cls(
            conn_id=chosen_conn_id,
            model=model or milvus.embedding_model,
            dimensions=dimensions or milvus.embedding_dimensions,
        )


def build_embeddings(settings: EmbeddingSettings, conn: Any) -> OpenAIEmbeddings:
    """``OpenAIEmbeddings`` for an OpenAI-compatible endpoint; never downloads a tokenizer."""
    from langchain_openai import OpenAIEmbeddings

    extra = dict(conn.extra_dejson)
    model = settings.model or extra.get("model") or extra.get("embedding_model")
    if not model:
        raise MilvusProviderError(
            f"No embedding model for connection '{settings.conn_id}': set embedding_model on the operator, "
            "'Embedding model' on the Milvus connection, or 'model' in the openai connection's extra."
        )
    base_url = (conn.host or extra.get("base_url") or "").strip() or None
    if base_url and "://" not in base_url:
        base_url = f"https://{base_url}"
    return OpenAIEmbeddings(
        model=model,
        base_url=base_url,
        api_key=conn.password or "not-needed",
        dimensions=settings.dimensions,
        # The default path fetches a tiktoken file at run time; texts are already chunked.
        check_embedding_ctx_length=False,
        max_retries=int(extra.get("max_retries", EMBEDDING_MAX_RETRIES)),
        timeout=float(extra.get("timeout", EMBEDDING_TIMEOUT)),
        chunk_size=int(extra.get("chunk_size", 1000)),
    )
