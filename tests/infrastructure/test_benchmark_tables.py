"""The README's Benchmark table and docs/benchmark.md's result tables are the committed result files."""

from __future__ import annotations

from bench import publish


def test_readme_benchmark_table_is_the_generated_one():
    assert publish.between(publish.README.read_text()) == publish.readme_block(), (
        "README.md's Benchmark table differs from bench/results/summary*.md: run python -m bench.publish"
    )


def test_docs_benchmark_tables_are_the_generated_ones():
    assert publish.between(publish.DOC.read_text()) == publish.docs_block(), (
        "docs/benchmark.md's results differ from bench/results/latest*.md: run python -m bench.publish"
    )
