#!/usr/bin/env bash
# Builds sigstore's RFC 3161 time-stamping authority (timestamp-server) from its Go module
# (Go module proxy only) into ${AUDITLOCK_CACHE:-~/.cache/auditlock}/bin/, for the witness
# tests against a real TSA besides `openssl ts` (tests/servers/timestamp_authority.py).
# Skips the build when the binary is already there; the Go build and module caches keep
# their defaults, outside the repository.
set -euo pipefail

VERSION="v2.1.3"
MODULE="github.com/sigstore/timestamp-authority/v2"

fail() {
    echo "bootstrap(timestamp-authority): ERROR: $*" >&2
    exit 1
}

cache="${AUDITLOCK_CACHE:-$HOME/.cache/auditlock}"
bin="$cache/bin"
out="$bin/timestamp-server-$VERSION"
if [ -x "$out" ]; then
    echo "bootstrap(timestamp-authority): timestamp-server $VERSION cached at $out"
    exit 0
fi
command -v go >/dev/null 2>&1 ||
    fail "Go is not installed (need Go >= 1.25 to build timestamp-server $VERSION)"
mkdir -p "$bin"

# go install into a temporary folder, then rename, so an interrupted build never leaves
# a half-written binary that looks cached.
tmp="$(mktemp -d "$bin/.timestamp-server.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
log="$bin/build-timestamp-server.log"
echo "bootstrap(timestamp-authority): building timestamp-server $VERSION into $out; a cold build takes minutes"
started=$SECONDS
if ! GOBIN="$tmp" CGO_ENABLED=0 GOFLAGS="-trimpath -buildvcs=false ${GOFLAGS:-}" \
    go install -ldflags "-s -w" "$MODULE/cmd/timestamp-server@$VERSION" >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    fail "building timestamp-server failed; full log: $log"
fi
mv "$tmp/timestamp-server" "$out"
"$out" --help >/dev/null 2>&1 || fail "$out does not run (delete it and re-run this step)"
echo "bootstrap(timestamp-authority): built timestamp-server in $((SECONDS - started)) s"
