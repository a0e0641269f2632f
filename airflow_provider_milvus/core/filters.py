"""
Milvus filter templating done safely on the client.

``expr="source in {sources} and ingested_at < {cutoff}"`` with ``expr_params={"sources": [...], "cutoff": 1700000000}``
has the same syntax as Milvus's server-side filter templating, which Milvus Lite lacks. Each value is
encoded as a Milvus literal (strings JSON-escaped), so user data can never change the expression.
A placeholder written inside quotes (``source == "{s}"``) is refused: its value would be pasted into
a string literal it could end, and the literal already has its quotes from ``to_literal``.
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
    _refuse_quoted_placeholders(expr)
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


def _refuse_quoted_placeholders(expr: str) -> None:
    """Refuse ``{name}`` inside a string literal, showing the expression with the placeholder written bare."""
    for start, end in _string_literals(expr):
        match = _PLACEHOLDER.search(expr, start + 1, end - 1)
        if match is None:
            continue
        literal = expr[start:end]
        bare = expr[:start] + match.group(0) + expr[end:] if literal[1:-1] == match.group(0) else None
        example = f"expr={bare!r}" if bare else f"expr='source == {match.group(0)}'"
        raise MilvusProviderError(
            f"Filter placeholder '{match.group(0)}' is inside quotes ({literal}) in {expr!r}. Write placeholders "
            f"without quotes, {example} with expr_params={{{match.group(1)!r}: ...}}: the value is then quoted and "
            "escaped as a literal, so it cannot change the expression. Put a whole value, prefix included, into "
            "expr_params."
        )


def _string_literals(expr: str) -> list[tuple[int, int]]:
    """``(start, end)`` of every quoted literal ('...' or "...", backslash escapes), end past the closing quote."""
    spans: list[tuple[int, int]] = []
    position = 0
    while position < len(expr):
        quote = expr[position]
        if quote not in "'\"":
            position += 1
            continue
        cursor = position + 1
        while cursor < len(expr) and expr[cursor] != quote:
            cursor += 2 if expr[cursor] == "\\" else 1
        spans.append((position, min(cursor + 1, len(expr))))
        position = cursor + 1
    return spans


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
