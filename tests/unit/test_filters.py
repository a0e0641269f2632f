from __future__ import annotations

import pytest

from airflow_provider_milvus.core.filters import render_filter, to_literal
from airflow_provider_milvus.exceptions import MilvusProviderError


def test_placeholders_become_escaped_literals():
    rendered = render_filter("source in {sources} and n >= {n}", {"sources": ["a.md", "b.md"], "n": 3})
    assert rendered == 'source in ["a.md", "b.md"] and n >= 3'


def test_quotes_in_values_cannot_break_out_of_the_string_literal():
    rendered = render_filter("source == {s}", {"s": 'x" or pk != "'})
    assert rendered == 'source == "x\\" or pk != \\""'


def test_booleans_and_floats_use_milvus_spelling():
    assert to_literal(True) == "true"
    assert to_literal(1.5) == "1.5"


def test_missing_parameter_is_named():
    with pytest.raises(MilvusProviderError, match="'{cutoff}' has no value"):
        render_filter("ingested_on < {cutoff}", {})


def test_unused_parameter_is_refused():
    with pytest.raises(MilvusProviderError, match="not used"):
        render_filter("n > 1", {"n": 1})


def test_unsupported_value_type_is_refused():
    with pytest.raises(MilvusProviderError, match="unsupported type dict"):
        render_filter("n == {n}", {"n": {"a": 1}})


def test_non_finite_number_is_refused():
    with pytest.raises(MilvusProviderError, match="finite"):
        render_filter("n < {n}", {"n": float("nan")})


def test_expression_without_placeholders_is_unchanged():
    assert render_filter('source == "a"', None) == 'source == "a"'
