"""Errors that tell the user what to fix, with secrets scrubbed out."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Protocol

from airflow.exceptions import AirflowException


class _Endpoint(Protocol):
    """What error messages need of the connection settings: where, and which secrets to scrub."""

    @property
    def uri(self) -> str: ...

    @property
    def secrets(self) -> list[str]: ...


REDACTED = "***"

# gRPC/OpenSSL words for a TLS handshake that failed (https:// to a plain port, a wrong CA, ...).
TLS_NEEDLES: tuple[str, ...] = (
    "tls handshake failed",
    "handshake failed",
    "ssl_error",
    "ssl routines",
    "wrong_version_number",
    "wrong version number",
    "certificate verify failed",
    "certificate_verify_failed",
    "ssl handshake",
)
TLS_HINT = (
    "The TLS handshake failed: the server answered, but not with the TLS the client expected. For a server "
    "without TLS use http:// (and turn 'Use TLS' off); use https:// only if the server has TLS enabled, and "
    "set the CA certificate path (and TLS server name) for a private CA."
)

# Substrings of Milvus/gRPC messages and the advice a user needs for them.
_HINTS: list[tuple[tuple[str, ...], str]] = [
    (
        # 104 is SPARSE_FLOAT_VECTOR: servers before 2.5 cannot index the BM25 output field.
        ("create index on 104 field", "sparse float vector is not supported", "is not supported now"),
        "This Milvus server has no BM25 full-text search (it needs Milvus 2.5+ or Milvus Lite 3). "
        "Configure an embedding connection (embedding_conn_id) for dense vectors instead.",
    ),
    (
        # Before "did not answer": a failed handshake also reads "failed to connect ... unavailable".
        # Specific needles only: a collection or host name may well contain "tls" or "ssl".
        TLS_NEEDLES,
        TLS_HINT,
    ),
    (
        ("fail connecting", "failed to connect", "connection refused", "unavailable", "deadline exceeded", "timeout"),
        "Milvus did not answer. Check the connection's URI and port, that the server is running and "
        "reachable from this worker/triggerer, and whether it expects TLS (https://) or plain (http://).",
    ),
    (
        # Before the credentials hint: parser messages say "unexpected token", which is not about auth.
        (
            "cannot parse expression",
            "unexpected token",
            "unexpected character",
            "invalid expression",
            "failed to create query plan",
        ),
        "The filter expression is invalid. Check its syntax and field names (Milvus boolean expression "
        'syntax, e.g. source == "a.md" and year > 2020); pass values through expr_params.',
    ),
    (
        ("auth", "credential", "invalid token", "password", "unauthenticated", "permission denied", "privilege"),
        "Milvus rejected the credentials. Check the connection's token (user:password or API key).",
    ),
    (
        ("database not found", "database not exist", "database" + " not exist"),
        "The database does not exist. Check the connection's Database field.",
    ),
]


class MilvusProviderError(AirflowException):
    """A Milvus task failed for a reason the user can act on."""

    @classmethod
    def from_exception(cls, error: BaseException, secrets: Iterable[str], action: str) -> MilvusProviderError:
        if isinstance(error, MilvusProviderError):
            return cls(redact(str(error), secrets))
        detail = _rejected_call_detail(error) or getattr(error, "message", None) or str(error) or type(error).__name__
        embedding_hint = embedding_api_hint(error)
        if embedding_hint is not None:
            # Not a Milvus problem: Milvus hints (e.g. "rejected the credentials") would mislead.
            message = f"Could not {action}: the embedding API failed: {type(error).__name__}: {detail}"
            return cls(redact(_join(message, embedding_hint), secrets))
        message = f"Could not {action}: {type(error).__name__}: {detail}"
        return cls(redact(_join(message, hint_for(message)), secrets))


def _rejected_call_detail(error: BaseException) -> str | None:
    """
    Return the server's own words when pymilvus hides a rejected call behind its generic "Fail connecting ...".

    pymilvus raises the same CONNECT_FAILED message for a wrong token, a failed TLS handshake and a
    server that is down; only the chained ``grpc.RpcError`` (UNAUTHENTICATED / PERMISSION_DENIED, or
    UNAVAILABLE whose details name the handshake) tells them apart.
    """
    cause = error.__cause__
    code, details = getattr(cause, "code", None), getattr(cause, "details", None)
    if not (callable(code) and callable(details)):
        return None
    try:
        status, text = code(), details()
    except Exception:  # not a finished gRPC call
        return None
    name = getattr(status, "name", "")
    if name == "UNAVAILABLE" and any(needle in str(text).lower() for needle in TLS_NEEDLES):
        # The same generic "Fail connecting" hides a TLS mismatch; gRPC's details name the handshake.
        return f"{name}: {text}"
    if name not in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
        return None
    return f"{name}: {text}" if text else name


def _join(message: str, hint: str | None) -> str:
    """One readable paragraph: UIs and notifications collapse newlines."""
    if not hint:
        return message
    message = message.rstrip()
    return f"{message}{'' if message.endswith(('.', '!', '?')) else '.'} {hint}"


def embedding_api_hint(error: BaseException) -> str | None:
    """Advice for an error raised by the OpenAI-compatible embedding client, None for anything else."""
    if not (type(error).__module__ or "").startswith("openai"):
        return None
    status = getattr(error, "status_code", None)
    if status in (401, 403):
        return (
            f"The embedding API rejected the API key (HTTP {status}). Check the password (API key) of the "
            "embedding connection (embedding_conn_id)."
        )
    if status == 429:
        return (
            "The embedding API kept rate-limiting (HTTP 429) after all retries. Lower max_concurrency or "
            "batch_size, or raise max_retries in the embedding connection's extra, then re-run the task."
        )
    if status is None or status >= 500:
        what = f"HTTP {status}" if status else "no response"
        return (
            f"The embedding API was unavailable ({what}) after all retries. Check the embedding connection's "
            "base URL and the service's status, then re-run the task (writes are idempotent upserts)."
        )
    return (
        f"The embedding API rejected the request (HTTP {status}). Check the embedding model name and "
        "embedding_dimensions."
    )


def hint_for(message: str) -> str | None:
    lowered = message.lower()
    for needles, hint in _HINTS:
        if any(needle in lowered for needle in needles):
            return hint
    return None


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret and len(secret) >= 3:
            text = text.replace(secret, REDACTED)
    return text


@contextlib.contextmanager
def describe_milvus_error(settings: _Endpoint | None, *, action: str, secrets: Iterable[str] = ()) -> Iterator[None]:
    """Re-raise anything from pymilvus/langchain/openai as a ``MilvusProviderError`` that names the problem."""
    try:
        yield
    except MilvusProviderError as error:
        raise MilvusProviderError(redact(str(error), [*secrets, *(settings.secrets if settings else [])])) from None
    except Exception as error:
        secrets = [*secrets, *(settings.secrets if settings else [])]
        where = f" at {settings.uri}" if settings else ""
        raise MilvusProviderError.from_exception(error, secrets, f"{action}{where}") from None
