#!/usr/bin/env bash
# Installs Debian's `chromium`, the real browser the report tests open `auditlock report`'s
# HTML in (headless, driven through its DevTools protocol: tests/servers/chromium.py).
# Needs apt-get and root (or sudo), once; skipped when a chromium binary is on PATH.
set -euo pipefail
# shellcheck source=../lib/apt.sh
source "$(dirname "$0")/../lib/apt.sh"

log() { echo "bootstrap(chromium): $*"; }
fail() {
    echo "bootstrap(chromium): ERROR: $*" >&2
    exit 1
}

for name in chromium chromium-browser; do
    if command -v "$name" >/dev/null 2>&1; then
        log "$("$name" --version 2>/dev/null | head -n 1) already installed"
        exit 0
    fi
done

command -v apt-get >/dev/null 2>&1 ||
    fail "apt-get not found; install Chromium (the report tests open the report in it) or set AUDITLOCK_CHROMIUM"

apt_root "installing Debian's chromium"
log "installing Debian's chromium (apt-get)"
apt_install chromium
log "$(chromium --version 2>/dev/null | head -n 1) installed"
