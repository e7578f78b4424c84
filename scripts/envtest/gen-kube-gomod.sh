#!/usr/bin/env bash
# Regenerates scripts/envtest/kube-apiserver/go.mod for another Kubernetes version:
#   scripts/envtest/gen-kube-gomod.sh 1.37.2
# It reads k8s.io/kubernetes's own go.mod from the Go module proxy, replaces every
# k8s.io staging module it lists with the published v0.Y.Z, then lets `go get -tool`
# resolve the rest. Update versions.env to match afterwards.
set -euo pipefail
version="${1:?usage: gen-kube-gomod.sh 1.Y.Z}"
dir="$(cd "$(dirname "$0")" && pwd)/kube-apiserver"
proxy="$(go env GOPROXY)"
proxy="${proxy%%,*}"
case "$proxy" in http*) ;; *) proxy="https://proxy.golang.org" ;; esac
upstream="$(curl -fsS "$proxy/k8s.io/kubernetes/@v/v$version.mod")"
staging="$(printf '%s\n' "$upstream" | sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p')"
{
    echo "// Build module for kube-apiserver (test rig). k8s.io/kubernetes is not meant to be"
    echo "// required as a library: its go.mod replaces the k8s.io staging modules with local"
    echo "// directories, so we replace each of them with its published v0.Y.Z instead."
    echo "// Regenerate for another version with scripts/envtest/gen-kube-gomod.sh."
    echo "module auditlock.local/envtest/kube-apiserver"
    echo
    echo "go $(printf '%s\n' "$upstream" | sed -n 's/^go //p')"
    echo
    echo "replace ("
    for m in $staging; do
        # sample-* modules are examples, not published at every version, and unused here.
        case "$m" in k8s.io/sample-*) continue ;; esac
        echo "	$m => $m v0.${version#1.}"
    done
    echo ")"
} >"$dir/go.mod"
rm -f "$dir/go.sum"
cd "$dir" && go get -tool "k8s.io/kubernetes/cmd/kube-apiserver@v$version"
echo "now set KUBE_VERSION=$version in scripts/envtest/versions.env"
