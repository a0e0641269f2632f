#!/usr/bin/env bash
# Install a real Milvus standalone server (PyPI package `milvus`, which ships the
# `milvus-server` binary) into its OWN virtualenv, separate from the project venv.
#
# Usage: scripts/install_milvus_standalone.sh
# Env:
#   MILVUS_STANDALONE_VENV     venv location (default: <repo>/.venv-milvus-standalone)
#   MILVUS_STANDALONE_PYTHON   python used to create the venv (default: python3.11)
#   MILVUS_STANDALONE_VERSION  `milvus` package version (default: 2.3.5)
#
# Idempotent: only re-checks the unpacked binaries if the version is already installed.
# Non-interactive (safe with CI=true and no stdin). Prints the path of the
# `milvus-server` executable as the last line of stdout.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${MILVUS_STANDALONE_VENV:-${repo_root}/.venv-milvus-standalone}"
python="${MILVUS_STANDALONE_PYTHON:-python3.11}"
version="${MILVUS_STANDALONE_VERSION:-2.3.5}"
server="${venv}/bin/milvus-server"
# The package unpacks ~250 MB of binaries into every data dir it runs with;
# we unpack them once here and testing/servers/milvus_standalone.py links to them.
bin_cache="${venv}/milvus-bin-cache"

log() { echo "install_milvus_standalone: $*" >&2; }

installed_version() {
    "${venv}/bin/python" - <<'PY' 2>/dev/null
import importlib.metadata as m
print(m.version("milvus"))
PY
}

unpack_binaries() {
    "${venv}/bin/python" -c 'import sys, milvus; milvus._initialize_data_files(sys.argv[1])' "${bin_cache}"
}

if [[ -x "${server}" && "$(installed_version || true)" == "${version}" ]]; then
    unpack_binaries  # no-op (checksums match) unless the cache is missing or stale
    log "milvus ${version} already installed in ${venv}"
    echo "${server}"
    exit 0
fi

if ! command -v "${python}" >/dev/null 2>&1; then
    log "error: ${python} not found (set MILVUS_STANDALONE_PYTHON)"
    exit 1
fi

if [[ ! -x "${venv}/bin/python" ]]; then
    log "creating venv ${venv}"
    "${python}" -m venv "${venv}"
fi

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
log "installing milvus==${version} into ${venv}"
# The package needs only the stdlib (incl. lzma) at runtime: no other dependencies.
"${venv}/bin/python" -m pip install --quiet "milvus==${version}" </dev/null

if [[ ! -x "${server}" ]]; then
    log "error: ${server} missing after install"
    exit 1
fi
log "unpacking server binaries into ${bin_cache}"
unpack_binaries
log "installed milvus ${version}"
echo "${server}"
