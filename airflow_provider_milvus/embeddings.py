"""
Dense embeddings from settings: an Airflow embedding connection plus a model name.

Two kinds of connection work as ``embedding_conn_id``:

- ``openai`` (apache-airflow-providers-openai, or any connection with that type): host = base URL,
  password = API key, the model from the operator / Milvus connection / ``extra.model``;
- ``langchain`` (apache-airflow-providers-common-ai, extra ``[common-ai]``): host = base URL,
  password = API key, ``extra.embed_model`` = ``"provider:model"`` as LangChain's ``init_embeddings`` reads it
  (``openai:text-embedding-3-small``, ``ollama:nomic-embed-text``, ...), built by common-ai's ``LangChainHook``.

In both the API key is ``conn.password``, the secret callers must redact (:func:`embedding_secrets`).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_milvus.exceptions import MilvusProviderError

if TYPE_CHECKING:
    from langchain_core.embeddings import Embeddings

    from airflow_provider_milvus.settings import MilvusConnectionSettings

EMBEDDING_MAX_RETRIES = 6
EMBEDDING_TIMEOUT = 60.0
LANGCHAIN_CONN_TYPE = "langchain"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbeddingSettings:
    """Which embedding connection, model and output size an operator uses."""

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


def embedding_secrets(conn: Any) -> list[str]:
    """Values of ``conn`` that must never appear in logs, messages or trigger rows (the API key)."""
    return [conn.password] if conn.password else []


def embedding_identity(settings: EmbeddingSettings, conn: Any, embeddings: Embeddings) -> dict[str, Any]:
    """
    Return what makes these embeddings' vectors: kind of connection, model, dimensions (None: the model's).

    Recorded with every collection this package creates, and compared with it by every write and search.
    """
    return {
        "kind": conn.conn_type,
        "model": getattr(embeddings, "model", None) or settings.model,
        "dimensions": settings.dimensions,
    }


def build_embeddings(settings: EmbeddingSettings, conn: Any) -> Embeddings:
    """LangChain ``Embeddings`` for an ``openai`` or ``langchain`` connection; never downloads a tokenizer."""
    if conn.conn_type == LANGCHAIN_CONN_TYPE:
        return _langchain_embeddings(settings, conn)
    return _openai_embeddings(settings, conn)


def _openai_embeddings(settings: EmbeddingSettings, conn: Any) -> Embeddings:
    from langchain_openai import OpenAIEmbeddings
    from pydantic import SecretStr

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
    from openai import DefaultAsyncHttpxClient, DefaultHttpxClient

    max_retries = int(extra.get("max_retries", EMBEDDING_MAX_RETRIES))
    throttle = ThrottleLog(max_retries=max_retries)
    embeddings = OpenAIEmbeddings(
        model=model,
        base_url=base_url,
        # One TLS context per process: building one per client costs ~0.1 s of CPU on every task run.
        # One client (one connection pool, kept alive) per task run, shared by all its requests.
        http_client=DefaultHttpxClient(verify=_tls_context(), event_hooks={"response": [throttle.sync_hook]}),
        http_async_client=DefaultAsyncHttpxClient(verify=_tls_context(), event_hooks={"response": [throttle.hook]}),
        api_key=SecretStr(conn.password or "not-needed"),
        dimensions=settings.dimensions,
        # The default path fetches a tiktoken file at run time; texts are already chunked.
        check_embedding_ctx_length=False,
        max_retries=max_retries,
        timeout=float(extra.get("timeout", EMBEDDING_TIMEOUT)),
        chunk_size=int(extra.get("chunk_size", 1000)),
    )
    embeddings.client = LeanEmbeddingsResource(embeddings.client._client)
    embeddings.async_client = AsyncLeanEmbeddingsResource(embeddings.async_client._client)
    return embeddings


_AUTH = {"security": {"bearer_auth": True}}  # what the SDK's own embeddings.create sends: the API key as Bearer


class LeanEmbeddingsResource:
    """
    Stands in for the OpenAI SDK's ``client.embeddings`` under LangChain's ``OpenAIEmbeddings``.

    The request goes through the SDK client itself (``client.post``), so its connection pool, timeouts,
    retries with backoff, ``Retry-After`` and error classes (which ``MilvusProviderError`` maps) are the
    SDK's. What it skips is the SDK's per-request model machinery: transforming the params through
    typed dicts (recursing over every input text) and building a pydantic object per embedding, which
    LangChain then dumps back to a dict - about half of the client's CPU per 64-text request
    (docs/benchmark.md, first loads). ``create`` returns the response's JSON as a dict, which
    ``OpenAIEmbeddings`` reads as it is.
    """

    def __init__(self, client: Any) -> None:
        self._client = client  # the openai.OpenAI client (closed by whoever owns the embeddings)

    def create(self, *, input: list[str], **params: Any) -> dict[str, Any]:
        import httpx

        response = self._client.post("/embeddings", body=_body(input, params), cast_to=httpx.Response, options=_AUTH)
        return _parse(response.content)


class AsyncLeanEmbeddingsResource(LeanEmbeddingsResource):
    """:class:`LeanEmbeddingsResource` on ``openai.AsyncOpenAI``."""

    async def create(self, *, input: list[str], **params: Any) -> dict[str, Any]:  # type: ignore[override]
        import httpx

        response = await self._client.post(
            "/embeddings", body=_body(input, params), cast_to=httpx.Response, options=_AUTH
        )
        return _parse(response.content)


def _body(texts: list[str], params: dict[str, Any]) -> dict[str, Any]:
    # base64, as the SDK asks by default: a quarter of the JSON's size, decoded in C
    return {"input": texts, "encoding_format": "base64", **{k: v for k, v in params.items() if v is not None}}


def _parse(content: bytes) -> dict[str, Any]:
    """Parse ``{"data": [{"embedding": [...]}, ...]}`` in input order, base64 vectors decoded (little-endian float32)."""
    import array
    import base64
    import json

    data = sorted(json.loads(content)["data"], key=lambda item: item.get("index", 0))
    for item in data:
        vector = item["embedding"]
        if isinstance(vector, str):
            values = array.array("f")
            values.frombytes(base64.b64decode(vector))
            item["embedding"] = values.tolist()
    return {"data": data}


class ThrottleLog:
    """
    Logs, as a warning, each answer of the embedding API that the client will retry (429 and 5xx).

    The SDK retries them on its own (``max_retries``, its backoff or the server's ``Retry-After``) and
    says so only at INFO level; a throttled task should say why it is slow, how long the API asked it to
    wait, what the API's rate-limit headers report and what to change. At most one line every
    ``interval`` seconds, with the count of such answers since the last line.
    """

    def __init__(self, *, max_retries: int, interval: float = 5.0) -> None:
        self.max_retries = max_retries
        self.interval = interval
        self.suppressed = 0
        self.last = float("-inf")

    async def hook(self, response: Any) -> None:
        self.sync_hook(response)

    def sync_hook(self, response: Any) -> None:
        status = response.status_code
        if status != 429 and status < 500:
            return
        import time

        now = time.monotonic()
        if now - self.last < self.interval:
            self.suppressed += 1
            return
        self.last, count, self.suppressed = now, self.suppressed + 1, 0
        headers = response.headers
        limits = ", ".join(
            f"{name.removeprefix('x-ratelimit-')} {headers[name]}" for name in _RATE_HEADERS if name in headers
        )
        what = "throttled (HTTP 429)" if status == 429 else f"failed (HTTP {status})"
        advice = (
            "more requests or tokens per minute than the API allows: if this persists, lower max_concurrency "
            "or batch_size (README: Tuning)"
            if status == 429
            else "the client retries it"
        )
        log.warning(
            "Embedding API %s (%d such answer(s) since the last such line); asked to wait: %s; rate limits: %s; "
            "each request is retried up to %d times (max_retries) with backoff; %s.",
            what,
            count,
            _retry_after(headers),
            limits or "no x-ratelimit headers",
            self.max_retries,
            advice,
        )


def _retry_after(headers: Any) -> str:
    if headers.get("retry-after-ms"):
        return f"{headers['retry-after-ms']} ms (Retry-After-Ms)"
    value = headers.get("retry-after")
    if not value:
        return "not given (Retry-After)"
    return f"{value} s (Retry-After)" if value.replace(".", "", 1).isdigit() else f"until {value} (Retry-After)"


_RATE_HEADERS = (
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-requests",
    "x-ratelimit-reset-tokens",
)


@functools.cache
def _tls_context() -> Any:
    import httpx

    return httpx.create_ssl_context()


def _langchain_embeddings(settings: EmbeddingSettings, conn: Any) -> Embeddings:
    """Through common-ai's ``LangChainHook.get_embedding_model()``, on the connection already resolved."""
    try:
        from airflow.providers.common.ai.hooks.langchain import LangChainHook
    except ImportError as err:
        raise MilvusProviderError(
            f"Connection '{settings.conn_id}' is of type 'langchain': install "
            "apache-airflow-providers-common-ai[langchain] (pip install 'airflow-provider-milvus[common-ai]')."
        ) from err

    extra = dict(conn.extra_dejson)
    model = _langchain_model_id(settings, extra)
    kwargs: dict[str, Any] = {}
    if settings.dimensions:
        kwargs["dimensions"] = settings.dimensions
    if model.split(":", 1)[0] in {"openai", "azure_openai"}:
        # The default path fetches a tiktoken file at run time; texts are already chunked.
        kwargs["check_embedding_ctx_length"] = False
        kwargs["max_retries"] = int(extra.get("max_retries", EMBEDDING_MAX_RETRIES))
        kwargs["timeout"] = float(extra.get("timeout", EMBEDDING_TIMEOUT))

    class _ResolvedLangChainHook(LangChainHook):  # type: ignore[misc]
        """Uses the connection the caller resolved (asynchronously, in a trigger) instead of a second lookup."""

        @classmethod
        def get_connection(cls, conn_id: str) -> Any:
            return conn

    hook = _ResolvedLangChainHook(embed_conn_id=settings.conn_id, embed_model=model, embedding_kwargs=kwargs)
    try:
        return hook.get_embedding_model()
    except (ImportError, ValueError) as err:
        raise MilvusProviderError(
            f"Embedding connection '{settings.conn_id}' (type 'langchain', model '{model}'): {err}"
        ) from err


def _langchain_model_id(settings: EmbeddingSettings, extra: dict[str, Any]) -> str:
    """
    ``provider:model``: the operator's / Milvus connection's model wins over ``extra.embed_model``.

    A bare model name (``text-embedding-3-small``) takes the provider of the connection's ``embed_model``.
    """
    conn_model = str(extra.get("embed_model") or "")
    model = settings.model or conn_model
    if not model:
        raise MilvusProviderError(
            f"No embedding model for connection '{settings.conn_id}': set embed_model "
            "(e.g. 'openai:text-embedding-3-small') in the langchain connection's extra, or embedding_model "
            "on the operator or the Milvus connection."
        )
    if ":" not in model:
        provider = conn_model.split(":", 1)[0] if ":" in conn_model else ""
        if not provider:
            raise MilvusProviderError(
                f"Embedding model '{model}' for langchain connection '{settings.conn_id}' names no provider: "
                "write it as 'provider:model', e.g. 'openai:text-embedding-3-small'."
            )
        model = f"{provider}:{model}"
    return model
