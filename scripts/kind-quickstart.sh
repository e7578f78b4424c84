#!/usr/bin/env bash
# auditlock on a local kind cluster, end to end: create the cluster (API server audit ->
# operator), build and load both images, install the chart, start a demo S3 store with
# Object Lock, apply an AuditPolicy and a sample app, then verify the locked trail
# offline with `auditlock verify` and check with `auditlock count` that the app's
# events are in it. docs/quickstart-kind.md explains each step.
#
# Needs: docker, kind, kubectl, helm, and `auditlock` (uv sync in this repository puts it
# in .venv/bin). Run from anywhere; it works from the repository root.
#
#   scripts/kind-quickstart.sh            # everything
#   scripts/kind-quickstart.sh --delete   # remove the cluster again
set -euo pipefail

CLUSTER="${CLUSTER:-auditlock}"
TAG="${TAG:-dev}"
RELEASE_NAMESPACE="${RELEASE_NAMESPACE:-auditlock-system}"
APP_NAMESPACE="${APP_NAMESPACE:-auditlock-demo}"
# Must match the server and token in scripts/kind/audit-webhook.kubeconfig.
AUDIT_CLUSTER_IP="10.96.0.200"
AUDIT_TOKEN="auditlock-kind-demo-token"
# The demo S3 store (examples/demo/seaweedfs.yaml) also keeps the operator's own trail.
# Its fixed ClusterIP (examples/demo/seaweedfs.yaml): an IP endpoint means path-style S3.
S3_ENDPOINT="http://10.96.0.201:8333"
# How long the sample app runs before the trail is verified: longer than the collector's
# checkpoint interval (one minute), so at least one signed checkpoint is stored.
SETTLE_SECONDS="${SETTLE_SECONDS:-90}"

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"  # kind-config.yaml's extraMounts use paths relative to the repository root

step() { printf '\n==> %s\n' "$*"; }
fail() {
    echo "kind-quickstart: ERROR: $*" >&2
    exit 1
}

if [ "${1:-}" = "--delete" ]; then
    kind delete cluster --name "$CLUSTER"
    exit 0
fi

for tool in docker kind kubectl helm; do
    command -v "$tool" >/dev/null 2>&1 || fail "'$tool' is not on PATH (see docs/quickstart-kind.md, Requirements)"
done
AUDITLOCK="${AUDITLOCK:-}"
if [ -z "$AUDITLOCK" ]; then
    if [ -x "$root/.venv/bin/auditlock" ]; then
        AUDITLOCK="$root/.venv/bin/auditlock"
    elif command -v auditlock >/dev/null 2>&1; then
        AUDITLOCK="$(command -v auditlock)"
    else
        fail "'auditlock' not found: run 'uv sync --all-extras' in $root first"
    fi
fi

step "1/8 kind cluster '$CLUSTER' (API server audit webhook -> $AUDIT_CLUSTER_IP)"
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    echo "cluster exists; reusing it"
else
    kind create cluster --name "$CLUSTER" --config kind-config.yaml --wait 120s
fi
kubectl config use-context "kind-$CLUSTER" >/dev/null

step "2/8 build images auditlock/operator:$TAG and auditlock/sidecar:$TAG"
docker build -f operator/Dockerfile -t "auditlock/operator:$TAG" .
docker build -f sidecar/Dockerfile -t "auditlock/sidecar:$TAG" .

step "3/8 load images into the cluster's nodes"
kind load docker-image --name "$CLUSTER" "auditlock/operator:$TAG" "auditlock/sidecar:$TAG"

step "4/8 demo S3 store with Object Lock (SeaweedFS) and its bucket"
kubectl apply -f examples/demo/seaweedfs.yaml
kubectl -n auditlock-storage rollout status deployment/seaweedfs --timeout=180s
for ns in "$RELEASE_NAMESPACE" "$APP_NAMESPACE"; do
    kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f -
    kubectl apply -n "$ns" -f examples/demo/s3-credentials.yaml
done
kubectl apply -n "$APP_NAMESPACE" -f examples/demo/create-bucket-job.yaml
kubectl wait -n "$APP_NAMESPACE" --for=condition=complete job/create-bucket --timeout=180s

step "5/8 helm install auditlock into $RELEASE_NAMESPACE"
helm upgrade --install auditlock charts/auditlock \
    --namespace "$RELEASE_NAMESPACE" \
    --set image.operator.repository=auditlock/operator \
    --set image.operator.tag="$TAG" \
    --set image.operator.pullPolicy=Never \
    --set image.sidecar.repository=auditlock/sidecar \
    --set image.sidecar.tag="$TAG" \
    --set image.sidecar.pullPolicy=Never \
    --set auditIntake.clusterIP="$AUDIT_CLUSTER_IP" \
    --set auditIntake.token="$AUDIT_TOKEN" \
    --set clusterName=kind-"$CLUSTER" \
    --set collector.destination.url=s3://auditlock-demo/cluster \
    --set collector.destination.retentionDays=1 \
    --set collector.destination.options.endpoint_url="$S3_ENDPOINT" \
    --set collector.destination.options.region=us-east-1 \
    --set collector.credentialsSecret=auditlock-s3 \
    --wait --timeout 5m

step "6/8 AuditPolicy (s3://auditlock-demo/orders) and the sample app"
kubectl apply -n "$APP_NAMESPACE" -f examples/auditpolicy-s3.yaml
kubectl wait -n "$APP_NAMESPACE" --for=condition=Ready auditpolicy/orders --timeout=120s
kubectl apply -n "$APP_NAMESPACE" -f examples/sample-app.yaml
kubectl -n "$APP_NAMESPACE" rollout status deployment/orders --timeout=180s
kubectl get auditpolicies -n "$APP_NAMESPACE"

step "7/8 let the app emit events for ${SETTLE_SECONDS}s (plus an exec, which the API server audits)"
kubectl -n "$APP_NAMESPACE" exec deployment/orders -c app -- python -c 'print("hello from an audited exec")'
sleep "$SETTLE_SECONDS"
kubectl get auditpolicies -n "$APP_NAMESPACE"

step "8/8 verify the locked trail offline and check that the events arrived"
workdir="$(mktemp -d)"
pf_pid=""
cleanup() {
    [ -n "$pf_pid" ] && kill "$pf_pid" 2>/dev/null || true
    rm -rf "$workdir"
}
trap cleanup EXIT
# The key to verify with, from the policy's status: the operator's root key, which
# certified each collector's in-memory key (per-pod keys; the certificates are stored
# beside the data). No Secret of the audited namespace holds a private key.
kubectl get auditpolicy -n "$APP_NAMESPACE" orders \
    -o jsonpath='{.status.publicKey}' >"$workdir/orders.pub.pem"
kubectl -n auditlock-storage port-forward service/seaweedfs 18333:8333 >"$workdir/pf.log" 2>&1 &
pf_pid=$!
for _ in $(seq 1 30); do
    grep -q "Forwarding from" "$workdir/pf.log" && break
    sleep 1
done
# The endpoint rides in the URL (sinks.open understands ?endpoint=&region=).
trail="s3://auditlock-demo/orders?endpoint=http://127.0.0.1:18333&region=us-east-1"
export AWS_ACCESS_KEY_ID=AUDITLOCKDEMO AWS_SECRET_ACCESS_KEY=auditlock-demo-secret
"$AUDITLOCK" verify "$trail" --public-key "$workdir/orders.pub.pem" ||
    fail "the trail did not verify (the findings are above)"
# verify also passes on heartbeat checkpoints alone; count fails unless every category
# the sample app sends has events in the trail.
"$AUDITLOCK" count "$trail" --require access --require data ||
    fail "events are missing from the trail: kubectl logs -n $APP_NAMESPACE deployment/orders -c auditlock-collector"

echo
echo "Done. Explore with: kubectl get auditpolicies -A; kubectl describe auditpolicy -n $APP_NAMESPACE orders"
echo "Remove everything with: $0 --delete"
