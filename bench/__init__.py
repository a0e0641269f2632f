"""Benchmark of the provider's async core against the langchain-milvus async tutorial (issue 5).

Run ``python -m bench.run_benchmark --help``; see bench/README.md and docs/benchmark.md.
"""
