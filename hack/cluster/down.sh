#!/usr/bin/env bash
# down.sh: stop the local cluster up.sh started and remove its state, keeping
# the binary cache. Safe after a partial start, a crash, or twice in a row, so
# it can run from a trap:
#
#   trap 'hack/cluster/down.sh' EXIT
#
# KEEP_LOGS=DIR copies the components' logs (and pod logs) to DIR first.
#
# Order: workloads (so kubelet tears pods down through CNI), kubelet, the
# scheduler and controller-manager, kube-proxy (then its iptables rules),
# apiserver, etcd, containerd and any shims it left; then mounts, the cni0
# bridge, sysctls, and the run directory. It touches only processes whose PIDs
# up.sh recorded, or containerd shims that name our containerd's socket.
set -uo pipefail
# shellcheck source=hack/cluster/lib.sh
source "$(dirname "$0")/lib.sh"

PIDS=$RUN_DIR/pids
START=$SECONDS

# running PID: alive and not a zombie waiting for init to reap it.
running() {
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $state && $state != Z ]]
}

# pid_of NAME: the recorded PID, if that process is still the one we started.
pid_of() {
  local f=$PIDS/$1.pid pid
  [[ -f $f ]] || return 1
  pid=$(<"$f")
  [[ $pid =~ ^[0-9]+$ ]] && running "$pid" || return 1
  # Guard against PID reuse: the process must still run our command.
  { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -q -- "$1" || return 1
  echo "$pid"
}

# stop NAME [GRACE]: SIGTERM, wait up to GRACE seconds, then SIGKILL.
stop() {
  local name=$1 grace=${2:-10} pid i
  pid=$(pid_of "$name") || { rm -f "$PIDS/$name.pid"; return 0; }
  kill -TERM "$pid" 2>/dev/null
  for ((i = 0; i < grace * 10; i++)); do
    running "$pid" || break
    sleep 0.1
  done
  if running "$pid"; then
    log "$name (pid $pid) ignored SIGTERM for ${grace}s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null
    sleep 0.2
  fi
  rm -f "$PIDS/$name.pid"
  log "$name: stopped"
}

api_up() { [[ -f $KUBECONFIG_PATH ]] && kc get --raw /readyz >/dev/null 2>&1; }

delete_workloads() {
  api_up || return 0
  pid_of kubelet >/dev/null || return 0
  log "deleting workloads"
  local ns
  for ns in $(kc get ns -o jsonpath='{.items[*].metadata.name}' 2>/dev/null); do
    case $ns in
      kube-system | kube-public | kube-node-lease) ;;
      default)
        kc delete -n default --ignore-not-found --wait=false \
          deployments,statefulsets,daemonsets,replicasets,jobs,cronjobs --all >/dev/null 2>&1
        kc delete -n default --ignore-not-found --wait=false services \
          --field-selector metadata.name!=kubernetes >/dev/null 2>&1
        ;;
      *) kc delete ns "$ns" --wait=false >/dev/null 2>&1 ;;
    esac
  done
  kc delete pods --all -A --grace-period=5 --wait=false >/dev/null 2>&1
  # Wait for kubelet to stop the containers and release their network.
  wait_for "pods gone" 60 no_pods || log "pods still there after 60s; continuing"
}

no_pods() { [[ -z $(kc get pods -A -o name 2>/dev/null) ]]; }

# kill_shims: containerd shims (and the containers under them) that outlived
# containerd. Only shims started with our socket's address are touched.
kill_shims() {
  local pid cmd children
  for pid in $(ps -eo pid= 2>/dev/null); do
    cmd=$({ tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null) || continue
    [[ $cmd == *containerd-shim* && $cmd == *"-address $CONTAINERD_SOCK"* ]] || continue
    children=$(ps -o pid= --ppid "$pid" 2>/dev/null | tr '\n' ' ')
    log "killing leftover shim $pid and its containers: $children"
    # shellcheck disable=SC2086
    [[ -n ${children// /} ]] && kill -KILL $children 2>/dev/null
    kill -KILL "$pid" 2>/dev/null
  done
}

stop_containers() {
  [[ -S $CONTAINERD_SOCK ]] || return 0
  pid_of containerd >/dev/null || return 0
  local ctr=(ctr --address "$CONTAINERD_SOCK" -n k8s.io) id
  for id in $("${ctr[@]}" tasks ls -q 2>/dev/null); do
    "${ctr[@]}" tasks kill -s SIGKILL "$id" >/dev/null 2>&1
  done
  sleep 0.5
  for id in $("${ctr[@]}" tasks ls -q 2>/dev/null); do
    "${ctr[@]}" tasks delete -f "$id" >/dev/null 2>&1
  done
}

# clean_iptables removes what kube-proxy and kubelet made (KUBE-* chains) and
# the bridge plugin's per-pod masquerade chains for our network, if a pod's
# teardown did not.
clean_iptables() {
  if [[ -x $K8S_BIN/kube-proxy ]]; then
    "$K8S_BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true
  fi
  local ipt table rules rule chain
  for ipt in iptables ip6tables; do
    command -v "$ipt" >/dev/null || continue
    for table in nat filter mangle raw; do
      rules=$("$ipt-save" -t "$table" 2>/dev/null) || continue
      # Jumps into our chains from anyone's chains, then the chains themselves.
      while IFS= read -r rule; do
        eval "$ipt -w -t $table -D ${rule#-A }" 2>/dev/null || true
      done < <(grep -E -- '^-A .* -j KUBE-' <<<"$rules"; grep -E -- '^-A .*creditgate.* -j CNI-' <<<"$rules")
      for chain in $(grep -oE '^:KUBE-[^ ]+' <<<"$rules" | tr -d :) \
        $(grep -E -- '^-A .*creditgate.* -j CNI-' <<<"$rules" | grep -oE -- '-j CNI-[^ ]+' | cut -c4-); do
        "$ipt" -w -t "$table" -F "$chain" 2>/dev/null
      done
      for chain in $(grep -oE '^:KUBE-[^ ]+' <<<"$rules" | tr -d :) \
        $(grep -E -- '^-A .*creditgate.* -j CNI-' <<<"$rules" | grep -oE -- '-j CNI-[^ ]+' | cut -c4-); do
        "$ipt" -w -t "$table" -X "$chain" 2>/dev/null
      done
    done
  done
}

unmount_all() {
  local m
  # Deepest first; lazily if something still holds one.
  while IFS= read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "could not unmount $m"
  done < <(awk -v d="$RUN_DIR/" 'index($2, d) == 1 {print $2}' /proc/self/mounts | sort -r)
}

# remove_host_leftovers: what containerd 1.6, libcni and kubelet keep outside
# $RUN_DIR whatever they are told. A graceful teardown removes most of it; a
# crash leaves shim sockets (named sha256(<containerd socket>/<ns>/<id>)) and
# CNI result caches. Host paths that did not exist before up.sh go entirely.
remove_host_leftovers() {
  local tasks=$RUN_DIR/containerd/state/io.containerd.runtime.v2.task/k8s.io id sum p
  for id in "$tasks"/*; do
    [[ -d $id ]] || continue
    id=${id##*/}
    sum=$(printf '%s' "$CONTAINERD_SOCK/k8s.io/$id" | sha256sum | cut -d' ' -f1)
    rm -f "/run/containerd/s/$sum" /var/lib/cni/results/{creditgate,cni-loopback}-"$id"-*
  done
  # Kubelet links container logs here for log shippers.
  find /var/log/containers -maxdepth 1 -type l -lname "$RUN_DIR/*" -delete 2>/dev/null
  if [[ -f $RUN_DIR/conf/host-paths ]]; then
    while IFS= read -r p; do
      [[ $p == /* && $p != / ]] && rm -rf "$p"
    done <"$RUN_DIR/conf/host-paths"
  fi
  rmdir /run/containerd/s /run/containerd/runc/k8s.io /run/containerd/runc /run/containerd 2>/dev/null
}

restore_sysctls() {
  local f=$RUN_DIR/conf/sysctl.saved kv
  [[ -f $f ]] || return 0
  while IFS= read -r kv; do
    [[ -n $kv ]] && sysctl -qw "$kv" 2>/dev/null
  done <"$f"
}

# remove_cgroups: the kubepods hierarchy kubelet made, once empty.
remove_cgroups() {
  local d
  for d in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
    [[ -d $d ]] || continue
    find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
  done
}

main() {
  if [[ ! -e $RUN_DIR ]]; then
    log "nothing in $RUN_DIR: already down"
    return 0
  fi
  if [[ -n ${KEEP_LOGS:-} ]]; then
    mkdir -p "$KEEP_LOGS"
    cp -r "$RUN_DIR/logs" "$KEEP_LOGS/" 2>/dev/null
    cp -rL "$RUN_DIR/pod-logs" "$KEEP_LOGS/" 2>/dev/null
    log "logs copied to $KEEP_LOGS"
  fi

  delete_workloads
  stop kubelet 15
  stop kube-scheduler
  stop kube-controller-manager
  stop kube-proxy
  stop_containers
  stop kube-apiserver 15
  stop etcd
  stop containerd 10
  kill_shims

  clean_iptables
  unmount_all
  if ip link show cni0 >/dev/null 2>&1; then
    ip link delete cni0 2>/dev/null && log "deleted bridge cni0"
  fi
  remove_cgroups
  restore_sysctls
  remove_host_leftovers

  if rm -rf "$RUN_DIR" 2>/dev/null; then
    log "removed $RUN_DIR; down in $((SECONDS - START))s"
  else
    log "could not remove all of $RUN_DIR (still mounted?): $(awk -v d="$RUN_DIR/" 'index($2, d) == 1' /proc/self/mounts | head -3)"
    return 1
  fi
}

main "$@"
