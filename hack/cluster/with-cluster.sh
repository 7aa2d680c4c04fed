#!/usr/bin/env bash
# with-cluster.sh CMD...: build (cached), start the local cluster, load the
# creditgate image, run CMD with KUBECONFIG, KUBECTL, NODE_IP, IMAGE and
# IMAGE_TAR set, and always take the cluster down again (its logs are kept in
# $KEEP_LOGS, default $ARTIFACTS/cluster-logs or /tmp/creditgate-cluster-logs,
# when CMD fails). CMD's exit status is the script's.
#
#   hack/cluster/with-cluster.sh go test -tags e2e ./e2e/...
set -euo pipefail
# shellcheck source=hack/cluster/lib.sh
source "$(dirname "$0")/lib.sh"
here=$(cd "$(dirname "$0")" && pwd)

(( $# > 0 )) || die "usage: $0 CMD..."
IMAGE=${IMAGE:-creditgate:dev}
IMAGE_TAR=${IMAGE_TAR:-$CREDITGATE_CACHE/images/creditgate.tar}
logs_dir=${KEEP_LOGS:-${ARTIFACTS:-/tmp}/creditgate-cluster-logs}

finish() {
  local rc=$?
  if (( rc != 0 )); then
    KEEP_LOGS=$logs_dir "$here/down.sh" || true
    log "exit $rc; cluster logs in $logs_dir"
  else
    "$here/down.sh" || true
  fi
  exit "$rc"
}
trap finish EXIT

"$here/build.sh"
"$here/up.sh" >/dev/null
(cd "$TOOLS_DIR" && go run ./image -tag "$IMAGE" -out "$IMAGE_TAR")
"$here/load-image.sh" "$IMAGE_TAR" >/dev/null

export KUBECONFIG=$KUBECONFIG_PATH KUBECTL=$K8S_BIN/kubectl IMAGE IMAGE_TAR
NODE_IP=$(node_ip)
export NODE_IP
export PATH=$K8S_BIN:$PATH
log "running: $*"
"$@"
