#!/usr/bin/env bash
# up.sh: start a real single-node Kubernetes on this machine, from the binaries
# build.sh caches: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, containerd (its own instance), kubelet and kube-proxy
# (iptables mode), with a bridge CNI network. No Docker, no registry: images
# come from tarballs (load-image.sh). See docs/local-kubernetes.md.
#
#   hack/cluster/up.sh            # then: export KUBECONFIG=$RUN_DIR/kubeconfig
#
# All state lives in $RUN_DIR (CLUSTER_DIR, default /tmp/creditgate-cluster);
# hack/cluster/down.sh stops everything and removes it. If the cluster is
# already up and healthy, up.sh reuses it; if it is half up, it refuses.
set -euo pipefail
# shellcheck source=hack/cluster/lib.sh
source "$(dirname "$0")/lib.sh"

START=$SECONDS
PKI=$RUN_DIR/pki
LOGS=$RUN_DIR/logs
PIDS=$RUN_DIR/pids
CONF=$RUN_DIR/conf
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy)

# ---------------------------------------------------------------- preflight

# already_up exits 0 if a healthy cluster is running (reuse it), dies if one
# is half up, and returns if none is.
already_up() {
  [[ -d $PIDS ]] || return 0
  local alive=() dead=() c pid
  for c in "${COMPONENTS[@]}"; do
    pid=$(cat "$PIDS/$c.pid" 2>/dev/null) || pid=
    if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then alive+=("$c"); else dead+=("$c"); fi
  done
  (( ${#alive[@]} )) || return 0
  if (( ${#dead[@]} == 0 )) && kc get --raw /readyz >/dev/null 2>&1; then
    log "already up (state in $RUN_DIR): reusing it"
    echo "export KUBECONFIG=$KUBECONFIG_PATH"
    exit 0
  fi
  die "a cluster in $RUN_DIR is half up (running: ${alive[*]}; not running: ${dead[*]}): run hack/cluster/down.sh first"
}

check_binaries() {
  local c
  for c in "${K8S_COMPONENTS[@]}"; do
    [[ -x $K8S_BIN/$c ]] || die "$K8S_BIN/$c missing: run hack/cluster/build.sh"
  done
  [[ -x $ETCD_BIN/etcd ]] || die "$ETCD_BIN/etcd missing: run hack/cluster/build.sh"
  [[ -f $PAUSE_TAR ]] || die "$PAUSE_TAR missing: run hack/cluster/build.sh"
}

install_packages() {
  local want=() p
  command -v containerd >/dev/null || want+=(containerd)
  command -v runc >/dev/null || want+=(runc)
  [[ -x /usr/lib/cni/bridge ]] || want+=(containernetworking-plugins)
  command -v iptables >/dev/null || want+=(iptables)
  # kube-proxy flushes stale UDP conntrack entries with it.
  command -v conntrack >/dev/null || want+=(conntrack)
  (( ${#want[@]} )) || return 0
  log "installing ${want[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Install first from the lists we have; update them only if that fails.
  if ! apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null 2>&1; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
  fi
  for p in containerd runc iptables; do
    command -v "$p" >/dev/null || die "$p still missing after apt-get install"
  done
}

check_ports() {
  local port busy=()
  for port in 2379 2380 6443 10248 10249 10250 10256 10257 10259; do
    if ss -Hltn "sport = :$port" 2>/dev/null | grep -q .; then busy+=("$port"); fi
  done
  (( ${#busy[@]} == 0 )) || die "ports already in use: ${busy[*]} (another cluster? see: ss -ltnp)"
}

# ---------------------------------------------------------------- certificates

# gen_pki writes a CA, the apiserver's serving certificate (loopback, node IP,
# the kubernetes Service IP and names), the service-account key pair and a
# static token file. Clients authenticate with tokens: simpler than a client
# certificate each, and the Node and RBAC authorizers see the same users.
gen_pki() {
  mkdir -p "$PKI"
  (
    cd "$PKI"
    umask 077
    openssl req -x509 -new -nodes -newkey rsa:2048 -sha256 -days 30 \
      -keyout ca.key -out ca.crt -subj "/CN=creditgate-local-ca" \
      -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
    cat >apiserver.ext <<EXT
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:$NODE_IP,IP:$KUBERNETES_SVC_IP,DNS:localhost,DNS:$NODE_NAME,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
EXT
    openssl req -new -nodes -newkey rsa:2048 -keyout apiserver.key -out apiserver.csr \
      -subj "/CN=kube-apiserver" 2>/dev/null
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
      -days 30 -sha256 -extfile apiserver.ext -out apiserver.crt 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    chmod 644 ca.crt apiserver.crt sa.pub
  )
  # token,user,uid,"group1,group2"
  {
    echo "$(rand_token),admin,admin,\"system:masters\""
    echo "$(rand_token),system:kube-controller-manager,kcm"
    echo "$(rand_token),system:kube-scheduler,scheduler"
    echo "$(rand_token),system:kube-proxy,kube-proxy"
    echo "$(rand_token),system:node:$NODE_NAME,node,\"system:nodes\""
  } >"$PKI/tokens.csv"
  chmod 600 "$PKI/tokens.csv"
}

rand_token() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

# kubeconfig FILE USER: a kubeconfig for USER's static token.
kubeconfig() {
  local file=$1 user=$2 token
  token=$(awk -F, -v u="$user" '$2 == u {print $1}' "$PKI/tokens.csv")
  [[ -n $token ]] || die "no token for $user"
  cat >"$file" <<YAML
apiVersion: v1
kind: Config
clusters:
- name: creditgate-local
  cluster:
    server: https://127.0.0.1:6443
    certificate-authority: $PKI/ca.crt
users:
- name: $user
  user:
    token: $token
contexts:
- name: creditgate-local
  context:
    cluster: creditgate-local
    user: $user
    namespace: default
current-context: creditgate-local
YAML
  chmod 600 "$file"
}

# ---------------------------------------------------------------- processes

# start NAME CMD...: run CMD in its own session (so a Ctrl-C in the calling
# shell does not reach it), log to $LOGS/NAME.log, record its PID.
start() {
  local name=$1
  shift
  setsid "$@" >"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$PIDS/$name.pid"
  log "$name: started (pid $!, log $LOGS/$name.log)"
}

# alive NAME: the component is still running (else show its log's tail).
alive() {
  local pid
  pid=$(<"$PIDS/$1.pid")
  if ! kill -0 "$pid" 2>/dev/null; then
    log "$1 exited; last lines of $LOGS/$1.log:"
    tail -n 20 "$LOGS/$1.log" >&2
    return 1
  fi
}

# wait_component NAME TIMEOUT CMD...: wait for CMD, failing fast if NAME dies.
wait_component() {
  local name=$1 timeout=$2 start=$SECONDS
  shift 2
  until "$@" >/dev/null 2>&1; do
    alive "$name" || die "$name failed to start"
    (( SECONDS - start < timeout )) || { tail -n 20 "$LOGS/$name.log" >&2; die "$name not ready after ${timeout}s"; }
    sleep 0.5
  done
  log "$name: ready after $((SECONDS - start))s"
}

healthz() { curl -fsk --max-time 2 "$1" >/dev/null; }

# ---------------------------------------------------------------- components

start_etcd() {
  start etcd "$ETCD_BIN/etcd" \
    --name=creditgate --data-dir="$RUN_DIR/etcd" \
    --listen-client-urls=http://127.0.0.1:2379 --advertise-client-urls=http://127.0.0.1:2379 \
    --listen-peer-urls=http://127.0.0.1:2380 --initial-advertise-peer-urls=http://127.0.0.1:2380 \
    --initial-cluster=creditgate=http://127.0.0.1:2380 \
    --unsafe-no-fsync --log-level=warn
  wait_component etcd 30 healthz http://127.0.0.1:2379/health
}

start_apiserver() {
  # The advertise address is the node IP (not loopback), so the default
  # endpoint reconciler publishes it behind the `kubernetes` Service and pods
  # reach the API at 10.96.0.1:443 through kube-proxy.
  start kube-apiserver "$K8S_BIN/kube-apiserver" \
    --etcd-servers=http://127.0.0.1:2379 \
    --bind-address=0.0.0.0 --secure-port=6443 --advertise-address="$NODE_IP" \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --client-ca-file="$PKI/ca.crt" \
    --requestheader-client-ca-file="$PKI/ca.crt" \
    --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User \
    --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --token-auth-file="$PKI/tokens.csv" \
    --authorization-mode=Node,RBAC \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$PKI/sa.pub" \
    --service-account-signing-key-file="$PKI/sa.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --kubelet-preferred-address-types=InternalIP,Hostname \
    --allow-privileged=true \
    --profiling=false --v=1
  wait_component kube-apiserver 60 kc get --raw /readyz
}

start_controller_manager() {
  kubeconfig "$CONF/controller-manager.kubeconfig" system:kube-controller-manager
  start kube-controller-manager "$K8S_BIN/kube-controller-manager" \
    --kubeconfig="$CONF/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$CONF/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$CONF/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 \
    --leader-elect=false --controllers='*' \
    --use-service-account-credentials=true \
    --service-account-private-key-file="$PKI/sa.key" \
    --root-ca-file="$PKI/ca.crt" \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --profiling=false --v=1
  wait_component kube-controller-manager 60 healthz https://127.0.0.1:10257/healthz
}

start_scheduler() {
  kubeconfig "$CONF/scheduler.kubeconfig" system:kube-scheduler
  start kube-scheduler "$K8S_BIN/kube-scheduler" \
    --kubeconfig="$CONF/scheduler.kubeconfig" \
    --authentication-kubeconfig="$CONF/scheduler.kubeconfig" \
    --authorization-kubeconfig="$CONF/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false --profiling=false --v=1
  wait_component kube-scheduler 60 healthz https://127.0.0.1:10259/healthz
}

# sysctls the node needs; the old values go to $CONF/sysctl.saved so that
# down.sh can put them back.
set_sysctls() {
  local kv key val
  : >"$CONF/sysctl.saved"
  for kv in net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1 \
    net.bridge.bridge-nf-call-ip6tables=1 net.ipv4.conf.all.route_localnet=1; do
    key=${kv%%=*} val=${kv#*=}
    [[ -e /proc/sys/${key//.//} ]] || { log "sysctl $key: not on this kernel, skipped"; continue; }
    echo "$key=$(sysctl -n "$key")" >>"$CONF/sysctl.saved"
    sysctl -qw "$key=$val"
  done
}

start_containerd() {
  local c=$RUN_DIR/containerd
  mkdir -p "$c/root" "$c/state" "$c/opt" "$RUN_DIR/cni/net.d" "$RUN_DIR/cni/ipam"
  cat >"$c/config.toml" <<TOML
version = 2
root = "$c/root"
state = "$c/state"
oom_score = 0

[grpc]
  address = "$CONTAINERD_SOCK"

[plugins."io.containerd.internal.v1.opt"]
  path = "$c/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_TAG"
  # This VM lacks CAP_SYS_RESOURCE: without this every sandbox fails with
  # "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  # Pod network namespaces under our state dir, not /var/run/netns.
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  enable_unprivileged_ports = true
  enable_unprivileged_icmp = true

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$c/runc"

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$RUN_DIR/cni/net.d"
    max_conf_num = 1
TOML
  # containerd's CRI adds the loopback interface itself (with
  # /usr/lib/cni/loopback); this list is the pod network proper.
  cat >"$RUN_DIR/cni/net.d/10-creditgate.conflist" <<JSON
{
  "cniVersion": "0.4.0",
  "name": "creditgate",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$POD_SUBNET"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$RUN_DIR/cni/ipam"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
JSON
  start containerd containerd --config "$c/config.toml" --log-level warn
  wait_component containerd 30 ctr --address "$CONTAINERD_SOCK" version
  import_image "$PAUSE_TAR"
}

import_image() {
  ctr --address "$CONTAINERD_SOCK" -n k8s.io image import "$1" >/dev/null
  log "imported $1"
}

start_kubelet() {
  local k=$RUN_DIR/kubelet
  mkdir -p "$k" "$RUN_DIR/pod-logs"
  kubeconfig "$CONF/kubelet.kubeconfig" "system:node:$NODE_NAME"
  cat >"$CONF/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This VM has cgroup v1; kubelet 1.35+ refuses it unless told otherwise.
failCgroupV1: false
# containerd 1.6 lacks the CRI RuntimeConfig call that reports its driver.
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
address: 0.0.0.0
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
failSwapOn: false
# Test machines run near full disks; evict only when truly out of room.
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1%"
  nodefs.inodesFree: "1%"
  imagefs.available: "1%"
# No registry to pull back from: never garbage-collect images.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
# No CoreDNS: pods get the host's resolv.conf.
clusterDNS: []
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
podLogsDir: $RUN_DIR/pod-logs
serializeImagePulls: false
maxPods: 110
YAML
  start kubelet "$K8S_BIN/kubelet" \
    --config="$CONF/kubelet.yaml" \
    --kubeconfig="$CONF/kubelet.kubeconfig" \
    --root-dir="$k" --cert-dir="$k/pki" \
    --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" \
    --v=1
  wait_component kubelet 60 healthz http://127.0.0.1:10248/healthz
}

start_kube_proxy() {
  kubeconfig "$CONF/kube-proxy.kubeconfig" system:kube-proxy
  cat >"$CONF/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clusterCIDR: $CLUSTER_CIDR
hostnameOverride: $NODE_NAME
clientConnection:
  kubeconfig: $CONF/kube-proxy.kubeconfig
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# Leave the host's conntrack table size alone (the VM may not allow it).
conntrack:
  maxPerCore: 0
YAML
  start kube-proxy "$K8S_BIN/kube-proxy" --config="$CONF/kube-proxy.yaml" --v=1
  wait_component kube-proxy 60 healthz http://127.0.0.1:10256/healthz
}

node_ready() {
  [[ $(kc get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}') == True ]]
}

wait_node() {
  wait_component kubelet 60 kc get node "$NODE_NAME"
  wait_for "node $NODE_NAME Ready" 120 node_ready \
    || { tail -n 30 "$LOGS/kubelet.log" >&2; die "node not Ready"; }
  wait_for "default ServiceAccount" 60 kc get serviceaccount default -n default \
    || die "no default ServiceAccount (is kube-controller-manager running?)"
}

# ---------------------------------------------------------------- main

on_exit() {
  local rc=$?
  (( rc == 0 )) && return
  log "up.sh failed (exit $rc). Component logs: $LOGS/*.log. Clean up with hack/cluster/down.sh (KEEP_LOGS=DIR keeps the logs)."
}

main() {
  trap on_exit EXIT
  [[ $(id -u) == 0 ]] || die "run as root (containerd, kubelet and kube-proxy need it)"
  already_up
  check_binaries
  install_packages
  check_ports
  NODE_IP=$(node_ip)
  [[ -n $NODE_IP ]] || die "no node IP: set NODE_IFACE to the interface with the node's address"
  NODE_NAME=${NODE_NAME:-$(hostname | tr '[:upper:]' '[:lower:]')}

  # A stale run dir with nothing running: a crash. Clean it first.
  if [[ -e $RUN_DIR ]]; then
    log "stale $RUN_DIR from an earlier run: cleaning it with down.sh"
    "$(dirname "$0")/down.sh"
  fi
  mkdir -p "$RUN_DIR" "$LOGS" "$PIDS" "$CONF"
  echo "NODE_IP=$NODE_IP" >"$RUN_DIR/env"
  echo "NODE_NAME=$NODE_NAME" >>"$RUN_DIR/env"
  log "node $NODE_NAME at $NODE_IP; state in $RUN_DIR"

  # Paths kubelet, libcni and containerd create outside $RUN_DIR whatever
  # they are told; down.sh removes those that were not there before.
  local p
  for p in /var/lib/kubelet /var/log/containers /var/lib/cni /run/containerd; do
    [[ -e $p ]] || echo "$p" >>"$CONF/host-paths"
  done

  gen_pki
  kubeconfig "$KUBECONFIG_PATH" admin
  set_sysctls
  start_etcd
  start_apiserver
  start_controller_manager
  start_scheduler
  start_containerd
  start_kubelet
  start_kube_proxy
  wait_node

  log "up in $((SECONDS - START))s; kubectl: $K8S_BIN/kubectl"
  echo "export KUBECONFIG=$KUBECONFIG_PATH"
}

main "$@"
