#!/usr/bin/env bash
# Install everything and run the test suite: Milvus Lite, a real Milvus standalone, real Airflow
# (dags test and scheduler + triggerer), loopback embeddings API, headless Chromium.
#   bash scripts/test.sh            # the CI suite (everything but the slow load tests)
#   bash scripts/test.sh --slow     # only the slow load tests (100k-chunk ingest, 1,000 searches)
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3

markers="not slow"
if [ "${1:-}" = "--slow" ]; then markers="slow"; shift; fi

echo "==> project virtualenv (.venv)"
if [ ! -x .venv/bin/python ]; then "$PYTHON" -m venv .venv; fi
# pipefail (set above) makes pip's exit status the pipeline's; the filter itself never fails (no match is fine).
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]" 2>&1 | { grep -v "^WARNING: Location" || true; }
echo "==> Milvus standalone server (own virtualenv)"
bash scripts/install_milvus_standalone.sh >/dev/null
echo "==> Chromium for the browser test"
bash scripts/install_browser.sh >/dev/null

echo "==> pytest -m '$markers'"
set +e
.venv/bin/python -m pytest -m "$markers" -p no:cacheprovider -ra "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then echo "pytest collected no tests"; status=0; fi

if [ "$markers" = "not slow" ] && [ "$#" -eq 0 ] && [ -z "${SKIP_MIN_AIRFLOW:-}" ]; then
  # The oldest supported Airflow (pyproject's floor) runs the same unit, hook and operator tests and the main example DAGs
  # (the whole CI suite only; skipped when pytest arguments pick tests, or with SKIP_MIN_AIRFLOW=1).
  min_airflow="$(sed -n 's/^apache-airflow==//p' scripts/constraints-min-airflow.txt)"
  echo "==> minimum supported Airflow $min_airflow (.venv-min)"
  # uv (from the test extra) installs Airflow's ~300 packages in seconds; pip took 2-7 minutes here.
  if [ ! -x .venv-min/bin/python ]; then .venv/bin/uv venv --quiet --python "$PYTHON" .venv-min; fi
  .venv/bin/uv pip install --quiet --python .venv-min/bin/python -c scripts/constraints-min-airflow.txt \
    "apache-airflow==$min_airflow" -e ".[test-core]"
  set +e
  # Example DAGs there: imports, the nightly ingest (first run, re-run, edit + delete) and search, the main job.
  .venv-min/bin/python -m pytest -m "$markers" -p no:cacheprovider -ra \
    tests/unit tests/test_hook.py tests/test_operators.py \
    "tests/test_example_dags.py::test_every_example_dag_imports_without_errors" \
    "tests/test_example_dags.py::test_ingest_writes_the_corpus_and_a_rerun_writes_nothing_new" \
    "tests/test_example_dags.py::test_ingest_replaces_a_changed_file_and_removes_a_deleted_one" \
    "tests/test_example_dags.py::test_search_dag_passes_json_hits_to_the_next_task"
  min_status=$?
  set -e
  [ "$min_status" -eq 0 ] || [ "$min_status" -eq 5 ] || status="$min_status"
fi

echo "==> lint and type gates (scripts/lint.sh)"
bash scripts/lint.sh || { [ "$status" -ne 0 ] || status=1; }
exit "$status"
