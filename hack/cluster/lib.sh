# shellcheck shell=bash disable=SC2034  # the settings are used by the scripts that source this
# lib.sh: settings and helpers shared by the hack/cluster scripts (sourced, not run).
#
# Everything a script writes goes to one of two places:
#   $CREDITGATE_CACHE (default ~/.cache/creditgate)  binaries and image tarballs, kept
#   $RUN_DIR (= $CLUSTER_DIR, default /tmp/creditgate-cluster)  one cluster's state, removed by down.sh

export PATH=/usr/local/go/bin:$PATH

CREDITGATE_CACHE=${CREDITGATE_CACHE:-$HOME/.cache/creditgate}
K8S_VERSION=${K8S_VERSION:-v1.37.2}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
K8S_BIN=$CREDITGATE_CACHE/k8s/$K8S_VERSION/bin
ETCD_BIN=$CREDITGATE_CACHE/etcd/$ETCD_VERSION/bin
PAUSE_TAG=${PAUSE_TAG:-creditgate.local/pause:3.10}
PAUSE_TAR=$CREDITGATE_CACHE/images/pause.tar
ECHO_TAG=${ECHO_TAG:-creditgate.local/echo:dev}
ECHO_TAR=$CREDITGATE_CACHE/images/echo.tar
K8S_COMPONENTS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl kube-proxy)

RUN_DIR=${CLUSTER_DIR:-/tmp/creditgate-cluster}
KUBECONFIG_PATH=$RUN_DIR/kubeconfig
CONTAINERD_SOCK=$RUN_DIR/containerd/containerd.sock

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TOOLS_DIR=$REPO_ROOT/hack/tools

# Node network: the bridge CNI hands out pod IPs from POD_SUBNET; kube-proxy
# treats CLUSTER_CIDR as "inside the cluster"; Services get IPs from SERVICE_CIDR.
POD_SUBNET=10.244.0.0/24
CLUSTER_CIDR=10.244.0.0/16
SERVICE_CIDR=10.96.0.0/16
KUBERNETES_SVC_IP=10.96.0.1

log() { printf '%s [%s] %s\n' "$(date +%H:%M:%S)" "${0##*/}" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# node_ip prints the node's address: the first global IPv4 address of
# $NODE_IFACE (default: the interface of the default route, else eth0).
node_ip() {
  local ifc=${NODE_IFACE:-}
  if [[ -z $ifc ]]; then
    ifc=$(ip -4 route show default 2>/dev/null | awk '{for (i = 1; i < NF; i++) if ($i == "dev") {print $(i+1); exit}}')
    ifc=${ifc:-eth0}
  fi
  ip -4 -o addr show dev "$ifc" scope global 2>/dev/null | awk '{split($4, a, "/"); print a[1]; exit}'
}

# kc runs the kubectl built with the cluster against it.
kc() { "$K8S_BIN/kubectl" --kubeconfig "$KUBECONFIG_PATH" "$@"; }

# wait_for DESC SECONDS CMD...: retry CMD every half second until it succeeds.
wait_for() {
  local desc=$1 timeout=$2 start=$SECONDS
  shift 2
  until "$@" >/dev/null 2>&1; do
    if (( SECONDS - start >= timeout )); then
      log "timed out after ${timeout}s waiting for $desc"
      return 1
    fi
    sleep 0.5
  done
  log "$desc: ready after $((SECONDS - start))s"
}
