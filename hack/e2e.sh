#!/usr/bin/env bash
# e2e.sh (make e2e): the e2e suite on a real single-node Kubernetes built from
# the Go module proxy and Debian packages (no Docker, no registry): build or
# reuse the cluster binaries, start the cluster, build the image without Docker
# and import it, run the suite (hack/e2e-run.sh), and tear everything down, also
# when a spec fails or the run is interrupted. Set KEEP_CLUSTER=1 to leave it up.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=hack/cluster/lib.sh
source hack/cluster/lib.sh

start=$SECONDS
tools_bin=$(bash hack/tools.sh)
# The monitoring spec's Prometheus (the server of the promtool version) and
# Pushgateway, and the Prometheus Operator's CRDs from its Go module, at the
# version whose API types e2e/go.mod uses (never fetched from the network).
mon_bin=$(bash hack/tools.sh prometheus pushgateway)
op_version=$(cd e2e && go list -m -f '{{.Version}}' github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring)
op_dir=$(go mod download -json "github.com/prometheus-operator/prometheus-operator@$op_version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[[ -d $op_dir/example/prometheus-operator-crd ]] || { log "no CRDs in the prometheus-operator module at $op_version ($op_dir)"; exit 1; }
export E2E_PROMETHEUS=$mon_bin/prometheus E2E_PUSHGATEWAY=$mon_bin/pushgateway
export E2E_OPERATOR_CRDS=$op_dir/example/prometheus-operator-crd
bash hack/cluster/build.sh

teardown() {
  local rc=$?
  if [[ ${KEEP_CLUSTER:-} == 1 ]]; then
    log "KEEP_CLUSTER=1: leaving the cluster up (export KUBECONFIG=$KUBECONFIG_PATH)"
  else
    bash hack/cluster/down.sh || true
  fi
  log "e2e finished in $((SECONDS - start))s with exit code $rc"
  exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT TERM

bash hack/cluster/up.sh
export KUBECONFIG=$KUBECONFIG_PATH

# The rendered chart, both value sets, through the API server's validation.
KUBECTL=$K8S_BIN/kubectl bash hack/chart-check.sh

tag=e2e-$(git rev-parse --short HEAD 2>/dev/null || echo local)
export E2E_IMAGE=creditgate:$tag
(cd hack/tools && go run ./image -tag "$E2E_IMAGE" -out "$RUN_DIR/creditgate-image.tar")
bash hack/cluster/load-image.sh "$RUN_DIR/creditgate-image.tar"
# The previous release, for the upgrade-from-previous spec: its chart and its
# image, from E2E_PREVIOUS_REF (default: the last landed version; a release
# tag once there are releases). Skipped, with the spec, when the clone lacks it.
PREVIOUS_REF=${E2E_PREVIOUS_REF:-52116a0}
if git rev-parse --verify -q "$PREVIOUS_REF^{commit}" >/dev/null 2>&1; then
  prev=$RUN_DIR/previous
  rm -rf "$prev" && mkdir -p "$prev"
  git archive "$PREVIOUS_REF" | tar -x -C "$prev"
  E2E_PREVIOUS_IMAGE=creditgate:prev-$(git rev-parse --short "$PREVIOUS_REF")
  export E2E_PREVIOUS_IMAGE
  (cd "$prev/hack/tools" && go run ./image -repo "$prev" -version "prev-$PREVIOUS_REF" -tag "$E2E_PREVIOUS_IMAGE" -out "$RUN_DIR/previous-image.tar")
  bash hack/cluster/load-image.sh "$RUN_DIR/previous-image.tar"
  export E2E_PREVIOUS_CHART=$prev/charts/creditgate
else
  log "E2E_PREVIOUS_REF=$PREVIOUS_REF is not in this clone: the upgrade-from-previous spec is skipped"
fi
# The echo tool (built with the cluster's tool images) runs the in-cluster
# credits API clients of the api specs.
bash hack/cluster/load-image.sh "$ECHO_TAR"
export E2E_CLIENT_IMAGE=$ECHO_TAG

# This cluster has no CoreDNS: the helm test Pods reach the Service through
# its environment variables instead of its name (tests.serviceAddress=env).
if [[ -z ${E2E_VALUES:-} ]]; then
  printf 'tests:\n  serviceAddress: env\n' >"$RUN_DIR/e2e-values.yaml"
  export E2E_VALUES=$RUN_DIR/e2e-values.yaml
fi
E2E_HOST_IP=$(node_ip)
export E2E_HOST_IP
export E2E_KUBECTL=$K8S_BIN/kubectl
export E2E_HELM=$tools_bin/helm
export PATH=$K8S_BIN:$tools_bin:$PATH
bash hack/e2e-run.sh
