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
# shellcheck source=../lib/apt.sh
source "$(dirname "$0")/../lib/apt.sh"

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

apt_root "installing Debian packages prometheus and prometheus-alertmanager"

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

log "installing Debian packages prometheus and prometheus-alertmanager (apt-get)"
apt_install --no-install-recommends prometheus prometheus-alertmanager

have || fail "prometheus, promtool or prometheus-alertmanager still missing after apt-get install"
log "installed prometheus $(prometheus --version 2>&1 | head -1 | awk '{print $3}'), alertmanager $(prometheus-alertmanager --version 2>&1 | head -1 | awk '{print $3}')"
