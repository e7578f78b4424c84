#!/usr/bin/env bash
# Builds kube-apiserver and etcd for the test rig from Go modules (Go module proxy only)
# and caches them under ${AUDITLOCK_CACHE:-~/.cache/auditlock}/envtest/<kube version>/.
# Skips the build when the binaries are already there. A cold build takes 10-20 minutes on
# 2 cores; the Go build cache (GOCACHE) and module cache (GOMODCACHE) keep their defaults,
# outside the repository.
#
# KUBEBUILDER_ASSETS set by the user wins: then nothing is built.
set -euo pipefail
here="$(cd "$(dirname "$0")/../envtest" && pwd)"
# shellcheck source=../envtest/versions.env
source "$here/versions.env"

fail() {
    echo "bootstrap(envtest): ERROR: $*" >&2
    exit 1
}

if [ -n "${KUBEBUILDER_ASSETS:-}" ]; then
    for bin in kube-apiserver etcd; do
        [ -x "$KUBEBUILDER_ASSETS/$bin" ] ||
            fail "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS has no executable '$bin'"
    done
    echo "bootstrap(envtest): using KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS"
    exit 0
fi

cache="${AUDITLOCK_CACHE:-$HOME/.cache/auditlock}"
assets="$cache/envtest/$KUBE_VERSION"
mkdir -p "$assets"

command -v go >/dev/null 2>&1 ||
    fail "Go is not installed (need Go >= 1.26 to build kube-apiserver $KUBE_VERSION); install it or set KUBEBUILDER_ASSETS to a folder with kube-apiserver and etcd"

export GOFLAGS="-trimpath -buildvcs=false ${GOFLAGS:-}"
export CGO_ENABLED=0

# build NAME PACKAGE MODULE_DIR [LDFLAGS]: go build into a temporary name, then rename,
# so an interrupted build never leaves a half-written binary that looks cached.
build() {
    local name="$1" pkg="$2" dir="$3" ldflags="${4:-}"
    local out="$assets/$name"
    if [ -x "$out" ]; then
        echo "bootstrap(envtest): $name cached at $out"
        return 0
    fi
    echo "bootstrap(envtest): building $name ($pkg) into $out; cold builds take minutes"
    local started=$SECONDS log="$assets/build-$name.log"
    if ! (cd "$dir" && go build -ldflags "-s -w $ldflags" -o "$out.tmp" "$pkg") >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        fail "building $name failed; full log: $log"
    fi
    mv "$out.tmp" "$out"
    echo "bootstrap(envtest): built $name in $((SECONDS - started)) s"
}

# The version the API server reports on /version (and that kubectl/clients see).
v="k8s.io/component-base/version"
minor="$(echo "$KUBE_VERSION" | cut -d. -f2)"
kube_ldflags="-X $v.gitVersion=v$KUBE_VERSION -X $v.gitMajor=1 -X $v.gitMinor=$minor"
kube_ldflags+=" -X $v.gitTreeState=clean -X $v.buildDate=1970-01-01T00:00:00Z"
kube_ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=v$KUBE_VERSION"
kube_ldflags+=" -X k8s.io/client-go/pkg/version.gitMajor=1"
kube_ldflags+=" -X k8s.io/client-go/pkg/version.gitMinor=$minor"

grep -qE "k8s.io/kubernetes v$KUBE_VERSION( |\$)" "$here/kube-apiserver/go.mod" ||
    fail "scripts/envtest/kube-apiserver/go.mod does not require k8s.io/kubernetes v$KUBE_VERSION (versions.env)"
grep -q "go.etcd.io/etcd/server/v3 v$ETCD_VERSION" "$here/etcd/go.mod" ||
    fail "scripts/envtest/etcd/go.mod does not require go.etcd.io/etcd/server/v3 v$ETCD_VERSION (versions.env)"

build etcd go.etcd.io/etcd/server/v3 "$here/etcd" \
    "-X go.etcd.io/etcd/api/v3/version.GitSHA=v$ETCD_VERSION"
build kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver "$here/kube-apiserver" "$kube_ldflags"

"$assets/kube-apiserver" --version >/dev/null 2>&1 ||
    fail "$assets/kube-apiserver does not run (try deleting it and re-running bootstrap)"
echo "bootstrap(envtest): control plane ready in $assets ($("$assets/kube-apiserver" --version))"
