#!/usr/bin/env bash
# Installs Debian's `prometheus` (prometheus + promtool) and `prometheus-alertmanager`
# for the alerting tests: promtool checks and unit-tests the chart's PrometheusRule, a real
# Prometheus scrapes a real collector, a real Alertmanager receives auditlock's alerts
# (tests/servers/prometheus.py, tests/servers/alertmanager.py). Needs apt-get and root
# (or sudo), once; skipped when both binaries are already there.
#
# The packages' init scripts would start a Prometheus on :9090 and an Alertmanager on
# :9093 for the whole machine; the tests start their own on free loopback ports, so the
# install runs with a policy-rc.d that forbids starting services (Docker images ship the
# same file; an existing one is left alone).
set -euo pipefail

log() { echo "bootstrap(alerting): $*"; }
fail() {
    echo "bootstrap(alerting): ERROR: $*" >&2
    exit 1
}

have() {
    command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 &&
        command -v prometheus-alertmanager >/dev/null 2>&1
}

if have; then
    log "prometheus $(prometheus --version 2>&1 | head -1 | awk '{print $3}'), alertmanager $(prometheus-alertmanager --version 2>&1 | head -1 | awk '{print $3}') already installed"
    exit 0
fi

command -v apt-get >/dev/null 2>&1 ||
    fail "apt-get not found; install Prometheus >= 2.42 (prometheus, promtool) and Alertmanager >= 0.25 (as prometheus-alertmanager) on PATH"

sudo=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 ||
        fail "installing Debian packages prometheus and prometheus-alertmanager needs root; run as root or install sudo"
    sudo=(sudo)
fi

policy=/usr/sbin/policy-rc.d
placed_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# placed by auditlock bootstrap(alerting) during its apt-get install\nexit 101\n' |
        "${sudo[@]}" tee "$policy" >/dev/null
    "${sudo[@]}" chmod 755 "$policy"
    placed_policy=1
fi
cleanup() {
    if [ "$placed_policy" = 1 ]; then
        "${sudo[@]}" rm -f "$policy"
    fi
}
trap cleanup EXIT

# Another apt-get on the machine holds dpkg's lock for a while: wait for it (Lock::Timeout).
apt_log="$(mktemp)"
install() {
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        -o DPkg::Lock::Timeout=600 --no-install-recommends prometheus prometheus-alertmanager >"$apt_log" 2>&1
}
log "installing Debian packages prometheus and prometheus-alertmanager (apt-get)"
if ! install; then
    # A clean machine may have no package lists yet, or stale ones.
    log "apt-get install failed; running apt-get update and trying again"
    "${sudo[@]}" apt-get update -q -o DPkg::Lock::Timeout=600 >>"$apt_log" 2>&1 ||
        { tail -n 20 "$apt_log" >&2; fail "apt-get update failed (full log: $apt_log)"; }
    install || { tail -n 20 "$apt_log" >&2; fail "apt-get install prometheus prometheus-alertmanager failed (full log: $apt_log)"; }
fi
rm -f "$apt_log"

have || fail "prometheus, promtool or prometheus-alertmanager still missing after apt-get install"
log "installed prometheus $(prometheus --version 2>&1 | head -1 | awk '{print $3}'), alertmanager $(prometheus-alertmanager --version 2>&1 | head -1 | awk '{print $3}')"
