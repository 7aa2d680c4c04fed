#!/usr/bin/env bash
# e2e-kind.sh (make e2e-kind): the e2e suite on kind, for machines with Docker.
# Creates (or reuses) the kind cluster "creditgate", builds the image and loads
# it, runs PostgreSQL in the cluster, then runs exactly the same suite as
# `make e2e` (hack/e2e-run.sh). Only the cluster bootstrap and the image
# loading differ. Needs: docker, kind, kubectl; helm comes from hack/tools.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH
CLUSTER=${KIND_CLUSTER:-creditgate}
for b in docker kind kubectl; do
  command -v "$b" >/dev/null || { echo "e2e-kind: $b not found (make e2e-kind needs Docker, kind and kubectl; use make e2e without Docker)" >&2; exit 1; }
done
tools_bin=$(bash hack/tools.sh)

if ! kind get clusters | grep -qx "$CLUSTER"; then
  kind create cluster --name "$CLUSTER" --config hack/kind/cluster.yaml --wait 120s
fi
export KUBECONFIG=${KUBECONFIG_KIND:-$HOME/.kube/kind-$CLUSTER}
kind get kubeconfig --name "$CLUSTER" >"$KUBECONFIG"

tag=e2e-$(git rev-parse --short HEAD 2>/dev/null || echo local)
export E2E_IMAGE=creditgate:$tag
tar=$(mktemp -d)/creditgate-image.tar
(cd hack/tools && go run ./image -tag "$E2E_IMAGE" -out "$tar")
kind load image-archive "$tar" --name "$CLUSTER"

kubectl apply -f hack/kind/postgres.yaml
kubectl -n creditgate-db rollout status deployment/postgres --timeout=180s
export E2E_DATABASE_URL="postgres://postgres@127.0.0.1:30432/creditgate?sslmode=disable"
export E2E_POD_DATABASE_URL="postgres://postgres@postgres.creditgate-db.svc.cluster.local:5432/creditgate?sslmode=disable"
export E2E_DATABASE_RESTART="kubectl -n creditgate-db rollout restart deployment/postgres && kubectl -n creditgate-db rollout status deployment/postgres --timeout=180s"
export E2E_WEBHOOK_URL=http://127.0.0.1:30080/api/webhooks/clerk
export E2E_VALUES=$PWD/hack/kind/values.yaml
# Pods reach the suite's fake Clerk API on the host through the kind network's gateway.
export E2E_HOST_IP=${E2E_HOST_IP:-$(docker network inspect kind -f '{{(index .IPAM.Config 0).Gateway}}')}
E2E_KUBECTL=$(command -v kubectl)
export E2E_KUBECTL
export E2E_HELM=$tools_bin/helm
bash hack/e2e-run.sh
