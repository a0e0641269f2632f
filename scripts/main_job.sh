#!/usr/bin/env bash
# The main job: install everything, start the shared embedded Milvus, run the example ingest DAG,
# then the search DAG, and print a report. No Docker, no API key. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"

# The versions the test suite last passed with (locks/main.txt); a test environment in .venv is left as it is.
bash scripts/venv.sh --keep-extra .venv locks/main.txt

export AIRFLOW_HOME="$ROOT/.airflow"
export AIRFLOW__CORE__DAGS_FOLDER="$ROOT/dags"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="sqlite:///$AIRFLOW_HOME/airflow.db"
MILVUS_DATA="${MILVUS_DATA:-$ROOT/.milvus/data}"
# A local path in the connection resolves to the shared Milvus Lite server that owns it.
if [ -z "${AIRFLOW_CONN_MILVUS_DEFAULT:-}" ]; then
  export AIRFLOW_CONN_MILVUS_DEFAULT="{\"conn_type\": \"milvus\", \"host\": \"$MILVUS_DATA\"}"
fi
mkdir -p "$AIRFLOW_HOME"

echo "==> Airflow metadata DB"
.venv/bin/airflow db migrate >"$AIRFLOW_HOME/migrate.log" 2>&1 || { cat "$AIRFLOW_HOME/migrate.log"; exit 1; }
echo "==> Shared Milvus Lite server"
.venv/bin/airflow-milvus-lite start --data-dir "$MILVUS_DATA"
echo "==> airflow dags test milvus_nightly_ingest (log: $AIRFLOW_HOME/ingest.log)"
.venv/bin/airflow dags test milvus_nightly_ingest >"$AIRFLOW_HOME/ingest.log" 2>&1 \
  || { tail -60 "$AIRFLOW_HOME/ingest.log"; exit 1; }
echo "==> airflow dags test milvus_search (log: $AIRFLOW_HOME/search.log)"
.venv/bin/airflow dags test milvus_search >"$AIRFLOW_HOME/search.log" 2>&1 \
  || { tail -60 "$AIRFLOW_HOME/search.log"; exit 1; }
.venv/bin/python scripts/main_report.py
echo "The Milvus Lite server keeps running for other Airflow processes; stop it with:"
echo "  .venv/bin/airflow-milvus-lite stop --data-dir $MILVUS_DATA"
