#!/usr/bin/env bash
# Lint and type gates (config in pyproject.toml, modelled on apache/airflow's own):
#   ruff check . ; ruff format --check . ; mypy airflow_provider_milvus
# Runs all three and fails if any reports something. LINT_PYTHON picks the interpreter (default .venv).
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${LINT_PYTHON:-.venv/bin/python}"
status=0
echo "==> ruff check ."
"$PY" -m ruff check . || status=1
echo "==> ruff format --check ."
"$PY" -m ruff format --check . || status=1
echo "==> mypy airflow_provider_milvus"
"$PY" -m mypy airflow_provider_milvus || status=1
exit "$status"
