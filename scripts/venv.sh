#!/usr/bin/env bash
# Make (or bring up to date) a virtualenv holding exactly the versions of a lock, plus this package in editable mode.
#   bash scripts/venv.sh .venv locks/test.txt                 # exactly the lock: other packages are removed
#   bash scripts/venv.sh --keep-extra .venv locks/main.txt    # the lock's versions, other packages left alone
# The locks are written by scripts/lock.py (see README, "Upgrading dependencies"). uv does the installing (Airflow's
# ~300 packages in seconds; pip takes minutes); it is itself pinned by locks/test.txt and lives in .venv-uv.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=sync
if [ "${1:-}" = "--keep-extra" ]; then mode=install; shift; fi
venv="$1"
lock="$2"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3

uv_version="$(sed -n 's/^uv==\([0-9.]*\).*/\1/p' locks/test.txt)"
if [ "$(.venv-uv/bin/uv --version 2>/dev/null)" != "uv $uv_version" ]; then
  [ -x .venv-uv/bin/python ] || "$PYTHON" -m venv .venv-uv
  .venv-uv/bin/python -m pip install --quiet --disable-pip-version-check "uv==$uv_version" 2>&1 \
    | { grep -v "^WARNING: Location" || true; }
fi
[ -x "$venv/bin/python" ] || .venv-uv/bin/uv venv --quiet --python "$PYTHON" "$venv"
if [ "$mode" = sync ]; then
  .venv-uv/bin/uv pip sync --quiet --python "$venv/bin/python" "$lock"
else
  .venv-uv/bin/uv pip install --quiet --python "$venv/bin/python" -r "$lock"
fi
.venv-uv/bin/uv pip install --quiet --python "$venv/bin/python" --no-deps -e .
