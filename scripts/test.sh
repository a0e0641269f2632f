#!/usr/bin/env bash
# Install everything and run the test suite: Milvus Lite, a real Milvus standalone, real Airflow
# (dags test and scheduler + triggerer), loopback embeddings API, headless Chromium.
#   bash scripts/test.sh            # the CI suite (everything but the slow load tests)
#   bash scripts/test.sh --slow     # only the slow load tests (100k-chunk ingest, 1,000 searches)
# Extra arguments go to pytest. Both tiers install from the locks in locks/ (scripts/lock.py writes them).
set -euo pipefail
cd "$(dirname "$0")/.."

markers="not slow"
if [ "${1:-}" = "--slow" ]; then markers="slow"; shift; fi

# pytest's exit code 5 (no test collected) passes only a selection narrowed by arguments, never the whole suite.
pytest_status() {
  local status="$1" narrowed="$2"
  if [ "$status" -eq 5 ] && [ "$narrowed" = yes ]; then echo "pytest collected no tests for this selection" >&2; status=0; fi
  echo "$status"
}
narrowed=no
if [ "$#" -gt 0 ]; then narrowed=yes; fi

echo "==> project virtualenv (.venv) from locks/test.txt"
bash scripts/venv.sh .venv locks/test.txt
echo "==> Milvus standalone server (own virtualenv)"
bash scripts/install_milvus_standalone.sh >/dev/null
echo "==> Chromium for the browser test"
bash scripts/install_browser.sh >/dev/null

set +e
if [ "$markers" = "not slow" ] && [ "$narrowed" = no ]; then
  # The whole CI suite runs as two pytest processes at once, each with its own servers, AIRFLOW_HOME and temp dirs:
  # most tests wait on servers, Airflow processes and simulated API latency, so two at a time fit 2 cores. The
  # Airflow-stack tier keeps the fault suite and the integration tests together: the published fault figures are
  # computed from both in one session (tests/faults/test_published_figures.py). The ledger sequences and the
  # standalone-only tests join it so that both processes take about as long.
  stack_tier=(tests/faults tests/integration tests/test_example_dags.py tests/test_ledger_sequences.py tests/standalone)
  stack_log=$(mktemp "${TMPDIR:-/tmp}/airflow-stack-tier.XXXXXX.log")
  echo "==> pytest -m '$markers', two processes: ${stack_tier[*]} (log: $stack_log) and the rest"
  .venv/bin/python -m pytest -m "$markers" -p no:cacheprovider -ra "${stack_tier[@]}" >"$stack_log" 2>&1 &
  stack_pid=$!
  ignores=()
  for path in "${stack_tier[@]}"; do ignores+=("--ignore=$path"); done
  .venv/bin/python -m pytest -m "$markers" -p no:cacheprovider -ra "${ignores[@]}"
  rest_rc=$?
  wait "$stack_pid"
  stack_rc=$?
  echo "==> the Airflow-stack tier (${stack_tier[*]})"
  cat "$stack_log"
  status=$(pytest_status "$rest_rc" no)
  [ "$stack_rc" -eq 0 ] || status="$stack_rc"
else
  echo "==> pytest -m '$markers'"
  .venv/bin/python -m pytest -m "$markers" -p no:cacheprovider -ra "$@"
  rc=$?
  status=$(pytest_status "$rc" "$narrowed")
fi
set -e

if [ "$markers" = "not slow" ] && [ "$narrowed" = no ] && [ -z "${SKIP_MIN_AIRFLOW:-}" ]; then
  # The oldest supported Airflow (pyproject's floor) runs the same unit, hook and operator tests and the main example DAGs
  # (the whole CI suite only; skipped when pytest arguments pick tests, or with SKIP_MIN_AIRFLOW=1).
  echo "==> minimum supported Airflow (.venv-min) from locks/test-min-airflow.txt"
  bash scripts/venv.sh .venv-min locks/test-min-airflow.txt
  set +e
  # Example DAGs there: imports, the nightly ingest (first run, re-run, edit + delete) and search, the main job.
  .venv-min/bin/python -m pytest -m "$markers" -p no:cacheprovider -ra \
    tests/unit tests/test_hook.py tests/test_operators.py \
    "tests/test_example_dags.py::test_every_example_dag_imports_without_errors" \
    "tests/test_example_dags.py::test_ingest_writes_the_corpus_and_a_rerun_writes_nothing_new" \
    "tests/test_example_dags.py::test_ingest_replaces_a_changed_file_and_removes_a_deleted_one" \
    "tests/test_example_dags.py::test_search_dag_passes_json_hits_to_the_next_task"
  rc=$?
  min_status=$(pytest_status "$rc" no)
  set -e
  [ "$min_status" -eq 0 ] || status="$min_status"
fi

echo "==> lint and type gates (scripts/lint.sh)"
bash scripts/lint.sh || { [ "$status" -ne 0 ] || status=1; }
exit "$status"
