#!/usr/bin/env bash
# smoke.sh: prove the local cluster (up.sh) runs what CI and e2e need.
#   1. build the creditgate image (hack/tools/image), load it, and run
#      `reconciler --help` and `webhook --help` from it as Jobs under the
#      restricted Pod Security profile: both must reach Completed;
#   2. Service routing through kube-proxy: an echo pod behind a ClusterIP
#      Service, fetched from the host and from another pod;
#   3. a pod reaches a server on the host at the node IP (as the e2e pods reach
#      PostgreSQL);
#   4. the `kubernetes` Service routes to the apiserver.
# Leaves nothing behind unless KEEP=1.
set -euo pipefail
# shellcheck source=hack/cluster/lib.sh
source "$(dirname "$0")/lib.sh"

START=$SECONDS
IMAGE_TAG=${IMAGE_TAG:-creditgate:dev}
IMAGE_TAR=${IMAGE_TAR:-$CREDITGATE_CACHE/images/creditgate.tar}
HOST_PORT=${SMOKE_HOST_PORT:-18080}
NS=creditgate-smoke
HOST_ECHO_PID=

kc get --raw /readyz >/dev/null 2>&1 || die "no cluster answering at $KUBECONFIG_PATH: run hack/cluster/up.sh"
NODE_IP=$(node_ip)

cleanup() {
  local rc=$?
  [[ -n $HOST_ECHO_PID ]] && kill "$HOST_ECHO_PID" 2>/dev/null
  if (( rc != 0 )); then
    log "FAILED; state of $NS:"
    kc get -n "$NS" all -o wide >&2 2>/dev/null
    kc get -n "$NS" events --sort-by=.lastTimestamp 2>/dev/null | tail -n 20 >&2
  fi
  if [[ -z ${KEEP:-} ]]; then
    kc delete ns "$NS" --wait=false --ignore-not-found >/dev/null 2>&1
  fi
  exit "$rc"
}
trap cleanup EXIT

step() { log "== $*"; }

# restricted: the Pod Security profile the chart should meet.
restricted='{"runAsNonRoot": true, "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
  "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}'

# job NAME IMAGE ARGS-JSON [COMMAND-JSON]: a one-pod Job.
job() {
  local name=$1 image=$2 args=$3 command=${4:-null}
  kc apply -n "$NS" -f - >/dev/null <<JSON
{"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "$name"},
 "spec": {"backoffLimit": 0, "activeDeadlineSeconds": 120, "template": {"spec": {
   "restartPolicy": "Never", "automountServiceAccountToken": false,
   "containers": [{"name": "main", "image": "$image", "imagePullPolicy": "Never",
     "command": $command, "args": $args, "securityContext": $restricted}]}}}}
JSON
}

# wait_job NAME: until Complete (0) or Failed (1), then print its log.
wait_job() {
  local name=$1 start=$SECONDS
  if ! kc wait -n "$NS" --for=condition=Complete "job/$name" --timeout=120s >/dev/null; then
    kc logs -n "$NS" "job/$name" >&2 || true
    die "job $name did not complete"
  fi
  log "job $name: Complete in $((SECONDS - start))s; its output:"
  kc logs -n "$NS" "job/$name" | head -n 5 | sed 's/^/    /' >&2
}

step "build $IMAGE_TAG"
(cd "$TOOLS_DIR" && go run ./image -tag "$IMAGE_TAG" -out "$IMAGE_TAR")
[[ -f $ECHO_TAR ]] || (cd "$TOOLS_DIR" && go run ./image -tool echo -tag "$ECHO_TAG" -out "$ECHO_TAR")

step "load images"
"$(dirname "$0")/load-image.sh" "$IMAGE_TAR" "$ECHO_TAR" >/dev/null

kc create ns "$NS" --dry-run=client -o yaml | kc apply -f - >/dev/null
kc label ns "$NS" --overwrite pod-security.kubernetes.io/enforce=restricted >/dev/null
wait_for "default ServiceAccount in $NS" 30 kc get sa default -n "$NS"

step "run the image: reconciler --help, webhook --help"
job reconciler-help "$IMAGE_TAG" '["--help"]' '["/usr/local/bin/reconciler"]'
job webhook-help "$IMAGE_TAG" '["--help"]'
wait_job reconciler-help
wait_job webhook-help
kc get pods -n "$NS" -l 'batch.kubernetes.io/job-name in (reconciler-help,webhook-help)' >&2

step "ClusterIP Service routing (kube-proxy, iptables mode)"
kc apply -n "$NS" -f - >/dev/null <<JSON
{"apiVersion": "v1", "kind": "List", "items": [
 {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "echo", "labels": {"app": "echo"}},
  "spec": {"automountServiceAccountToken": false, "containers": [{"name": "echo", "image": "$ECHO_TAG",
    "imagePullPolicy": "Never", "ports": [{"containerPort": 8080}],
    "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 1},
    "securityContext": $restricted}]}},
 {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "echo"},
  "spec": {"selector": {"app": "echo"}, "ports": [{"port": 80, "targetPort": 8080}]}}]}
JSON
kc wait -n "$NS" --for=condition=Ready pod/echo --timeout=60s >/dev/null
cluster_ip=$(kc get svc -n "$NS" echo -o jsonpath='{.spec.clusterIP}')
pod_ip=$(kc get pod -n "$NS" echo -o jsonpath='{.status.podIP}')
log "echo pod $pod_ip behind Service $cluster_ip:80"
curl_svc() { curl -fsS --max-time 3 "http://$cluster_ip/from-host"; }
wait_for "host -> ClusterIP $cluster_ip:80" 30 curl_svc || die "ClusterIP $cluster_ip does not route from the host (iptables-save -t nat | grep KUBE-SVC)"
log "    $(curl_svc)"
job pod-to-service "$ECHO_TAG" "[\"-get\", \"http://$cluster_ip/from-pod\", \"-timeout\", \"30s\"]"
wait_job pod-to-service

step "pod -> host at the node IP ($NODE_IP:$HOST_PORT), as pods reach PostgreSQL"
mkdir -p "$RUN_DIR/bin"
(cd "$TOOLS_DIR" && go build -o "$RUN_DIR/bin/echo" ./echo)
"$RUN_DIR/bin/echo" -listen "$NODE_IP:$HOST_PORT" 2>"$RUN_DIR/logs/smoke-host-echo.log" &
HOST_ECHO_PID=$!
job pod-to-host "$ECHO_TAG" "[\"-get\", \"http://$NODE_IP:$HOST_PORT/from-pod\", \"-timeout\", \"30s\"]"
wait_job pod-to-host
kill "$HOST_ECHO_PID" 2>/dev/null
wait "$HOST_ECHO_PID" 2>/dev/null || true
HOST_ECHO_PID=

step "the kubernetes Service reaches the apiserver"
api_via_svc() { curl -fsS --max-time 3 --cacert "$RUN_DIR/pki/ca.crt" "https://$KUBERNETES_SVC_IP/livez"; }
wait_for "host -> https://$KUBERNETES_SVC_IP/livez" 20 api_via_svc || die "the kubernetes Service does not route"

log "smoke passed in $((SECONDS - START))s"
