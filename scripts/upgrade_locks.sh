#!/usr/bin/env bash
# Upgrade on purpose: re-resolve locks/ to the newest versions pyproject.toml allows, then run the whole CI suite
# on them. Commit the new locks (alone, with the suite's verdict) only when it passes.
#   bash scripts/upgrade_locks.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/venv.sh .venv locks/test.txt   # also installs the locked uv into .venv-uv, which lock.py runs
.venv-uv/bin/python scripts/lock.py
git --no-pager diff --stat -- locks/
bash scripts/test.sh
