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


@pytest.mark.parametrize(
    "expr",
    ['source == "{s}"', "source == '{s}'", 'source like "{s}%"', 'a == 1 and source == "x{s}y"'],
)
def test_a_placeholder_inside_quotes_is_refused(expr):
    with pytest.raises(MilvusProviderError, match=r"'\{s\}' is inside quotes.*Write placeholders without quotes"):
        render_filter(expr, {"s": "' or source != '"})


def test_the_refusal_shows_the_expression_with_the_placeholder_bare():
    with pytest.raises(MilvusProviderError, match=r"expr='n > 1 and source == \{s\}'"):
        render_filter('n > 1 and source == "{s}"', {"s": "a.md"})


def test_braces_in_a_value_or_after_an_escaped_quote_are_told_apart():
    assert render_filter("source == {s}", {"s": '"{t}"'}) == 'source == "\\"{t}\\""'
    with pytest.raises(MilvusProviderError, match="inside quotes"):
        render_filter('a == "x\\"{s}"', {"s": 1})
    assert render_filter('a == "x\\"" and b == {s}', {"s": 1}) == 'a == "x\\"" and b == 1'
