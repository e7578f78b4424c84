#!/usr/bin/env bash
# Installs the Forward client from another ecosystem that the sidecar tests use:
# npm `fluent-logger` (pinned in tests/clients/node-forward/package-lock.json), which
# sends PackedForward with chunk acks. Needs node + npm and the npm registry, once;
# `npm ci` is skipped when node_modules already matches the lock file.
set -euo pipefail
cd "$(dirname "$0")/../../tests/clients/node-forward"

if ! command -v npm >/dev/null 2>&1; then
    echo "bootstrap(forward-clients): ERROR: npm not found; install Node.js/npm (the sidecar tests use npm fluent-logger)" >&2
    exit 1
fi
stamp="node_modules/.auditlock-lock.sha256"
want="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "bootstrap(forward-clients): npm fluent-logger already installed"
    exit 0
fi
echo "bootstrap(forward-clients): installing npm fluent-logger from the npm registry"
npm ci --no-audit --no-fund --silent
echo "$want" > "$stamp"
