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
if [ "$status" -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi
exit "$status"
