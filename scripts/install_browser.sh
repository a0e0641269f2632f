#!/usr/bin/env bash
# Install Debian's Chromium for the browser tests (tests/browser, `pytest -m browser`).
#
# Playwright drives this system binary through `executable_path`; we never run
# `playwright install` (it downloads a browser from the internet).
#
# Usage: scripts/install_browser.sh          (as root, or with passwordless sudo)
# Env:
#   CHROMIUM_PATH   browser the tests should use (default: /usr/bin/chromium)
#
# Idempotent: does nothing when the browser is already there, and runs
# `apt-get update` only when the package lists do not know `chromium` yet.
# Non-interactive (safe with CI=true and no stdin). Prints the browser path as
# the last line of stdout.
set -euo pipefail

chromium="${CHROMIUM_PATH:-/usr/bin/chromium}"

log() { echo "install_browser: $*" >&2; }

if [[ -x "${chromium}" ]]; then
    log "already installed: $("${chromium}" --version 2>/dev/null || echo "${chromium}")"
    echo "${chromium}"
    exit 0
fi

if [[ "${chromium}" != "/usr/bin/chromium" ]]; then
    log "CHROMIUM_PATH=${chromium} is not an executable; install that browser yourself or unset CHROMIUM_PATH"
    exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
    log "apt-get not found: this script installs Debian/Ubuntu's chromium package only." \
        "Install Chromium another way and point CHROMIUM_PATH at it."
    exit 1
fi

sudo=()
if [[ "$(id -u)" -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo=(sudo -n)
    else
        log "need root (or passwordless sudo) to apt-get install chromium"
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
apt_get=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -y -q -o Dpkg::Use-Pty=0)

# `apt-cache policy` prints "Candidate: (none)" (or nothing) when the lists have never been fetched.
candidate="$(apt-cache policy chromium 2>/dev/null | awk '/Candidate:/ {print $2}')"
if [[ -z "${candidate}" || "${candidate}" == "(none)" ]]; then
    log "package lists do not know chromium yet: apt-get update"
    "${apt_get[@]}" update </dev/null >&2
fi

log "apt-get install chromium"
if ! "${apt_get[@]}" install chromium </dev/null >&2; then
    log "install failed (stale package lists?): apt-get update and retry"
    "${apt_get[@]}" update </dev/null >&2
    "${apt_get[@]}" install chromium </dev/null >&2
fi

if [[ ! -x "${chromium}" ]]; then
    log "chromium package installed but ${chromium} is missing"
    exit 1
fi
log "installed: $("${chromium}" --version 2>/dev/null || echo "${chromium}")"
echo "${chromium}"
