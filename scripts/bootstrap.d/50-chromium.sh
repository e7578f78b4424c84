#!/usr/bin/env bash
# Installs Debian's `chromium`, the real browser the report tests open `auditlock report`'s
# HTML in (headless, driven through its DevTools protocol: tests/servers/chromium.py).
# Needs apt-get and root (or sudo), once; skipped when a chromium binary is on PATH.
set -euo pipefail

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

sudo=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || fail "installing Debian's chromium needs root; run as root or install sudo"
    sudo=(sudo)
fi

# Another apt-get on the machine holds dpkg's lock for a while: wait for it (Lock::Timeout).
apt_log="$(mktemp)"
install() {
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        -o DPkg::Lock::Timeout=600 chromium >"$apt_log" 2>&1
}
log "installing Debian's chromium (apt-get)"
if ! install; then
    # A clean machine may have no package lists yet, or stale ones.
    log "apt-get install failed; running apt-get update and trying again"
    "${sudo[@]}" apt-get update -q -o DPkg::Lock::Timeout=600 >>"$apt_log" 2>&1 ||
        { tail -n 20 "$apt_log" >&2; fail "apt-get update failed (full log: $apt_log)"; }
    install || { tail -n 20 "$apt_log" >&2; fail "apt-get install chromium failed (full log: $apt_log)"; }
fi
rm -f "$apt_log"
log "$(chromium --version 2>/dev/null | head -n 1) installed"
