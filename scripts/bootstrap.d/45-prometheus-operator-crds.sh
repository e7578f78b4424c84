#!/usr/bin/env bash
# Fetches the Prometheus Operator's CRDs (PrometheusRule, ServiceMonitor, PodMonitor) from
# the Go module github.com/prometheus-operator/prometheus-operator (Go module proxy) and
# caches them under ${AUDITLOCK_CACHE:-~/.cache/auditlock}/prometheus-operator-crds/<version>/.
# The chart tests install them into the test API server, which then validates the chart's
# monitoring objects exactly as a cluster running the Prometheus Operator would.
set -euo pipefail

VERSION="v0.85.0"
MODULE="github.com/prometheus-operator/prometheus-operator"
CRDS=(prometheusrules servicemonitors podmonitors)

fail() {
    echo "bootstrap(prometheus-operator-crds): ERROR: $*" >&2
    exit 1
}

cache="${AUDITLOCK_CACHE:-$HOME/.cache/auditlock}"
dest="$cache/prometheus-operator-crds/$VERSION"
have() {
    for crd in "${CRDS[@]}"; do
        [ -s "$dest/monitoring.coreos.com_$crd.yaml" ] || return 1
    done
}
if have; then
    echo "bootstrap(prometheus-operator-crds): cached at $dest"
    exit 0
fi

command -v go >/dev/null 2>&1 ||
    fail "Go is not installed (needed once to fetch $MODULE@$VERSION from the Go module proxy)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "bootstrap(prometheus-operator-crds): fetching $MODULE@$VERSION from the Go module proxy"
dir="$(cd "$work" && GOFLAGS= go mod download -json "$MODULE@$VERSION" 2>"$work/go.log" |
    python3 -c 'import json, sys; print(json.load(sys.stdin).get("Dir", ""))')" ||
    { cat "$work/go.log" >&2; fail "go mod download $MODULE@$VERSION failed"; }
[ -d "$dir" ] || { cat "$work/go.log" >&2; fail "go mod download $MODULE@$VERSION gave no folder"; }
mkdir -p "$dest"
for crd in "${CRDS[@]}"; do
    src="$dir/example/prometheus-operator-crd/monitoring.coreos.com_$crd.yaml"
    [ -s "$src" ] || fail "$MODULE@$VERSION has no $src"
    cp "$src" "$dest/.tmp" && chmod 644 "$dest/.tmp" && mv "$dest/.tmp" "$dest/monitoring.coreos.com_$crd.yaml"
done
have || fail "CRDs missing in $dest after the copy"
echo "bootstrap(prometheus-operator-crds): ${CRDS[*]} at $dest"
