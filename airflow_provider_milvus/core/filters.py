"""
Milvus filter templating done safely on the client.

``expr="source in {sources} and ingested_at < {cutoff}"`` with ``expr_params={"sources": [...], "cutoff": 1700000000}``
has the same syntax as Milvus's server-side filter templating, which Milvus Lite lacks. Each value is
encoded as a Milvus literal (strings JSON-escaped), so user data can never change the expression.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from airflow_provider_milvus.exceptions import MilvusProviderError

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def render_filter(expr: str | None, params: Mapping[str, Any] | None = None) -> str:
    """Substitute ``{name}`` placeholders with literals; unknown or unused names are errors."""
    expr = (expr or "").strip()
    params = dict(params or {})
    used: set[str] = set()

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in params:
            raise MilvusProviderError(
                f"Filter placeholder '{{{name}}}' has no value in expr_params (have: {sorted(params)})."
            )
        used.add(name)
        return to_literal(params[name], name)

    rendered = _PLACEHOLDER.sub(substitute, expr)
    unused = set(params) - used
    if unused:
        raise MilvusProviderError(f"expr_params {sorted(unused)} are not used by the filter expression {expr!r}.")
    return rendered


def to_literal(value: Any, name: str = "value") -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise MilvusProviderError(f"expr_params '{name}' must be a finite number, got {value}.")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        return "[" + ", ".join(to_literal(item, name) for item in items) + "]"
    raise MilvusProviderError(
        f"expr_params '{name}' has unsupported type {type(value).__name__}; use str, int, float, bool or a list."
    )


def short_filter(expr: str, limit: int = 200) -> str:
    """
    ``expr`` quoted for a log line or an error; a long one (ids, value lists) as its start and its length.

    The whole filter goes to DEBUG logs only: a delete by 100,000 ids is megabytes of filter.
    """
    if len(expr) <= limit:
        return repr(expr)
    return f"{expr[: limit // 2]!r}... ({len(expr)} chars)"


def check_field_name(name: str) -> str:
    if not _IDENTIFIER.match(name):
        raise MilvusProviderError(f"{name!r} is not a valid Milvus field name.")
    return name
