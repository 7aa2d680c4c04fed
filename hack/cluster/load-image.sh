#!/usr/bin/env bash
# load-image.sh TARBALL...: import docker-archive (or OCI) image tarballs into
# the local cluster's containerd, where kubelet finds them. There is no
# registry: pods must use imagePullPolicy Never, or IfNotPresent with a tag
# other than latest. "creditgate:dev" is stored as docker.io/library/creditgate:dev,
# which is what a pod's image "creditgate:dev" resolves to.
set -euo pipefail
# shellcheck source=hack/cluster/lib.sh
source "$(dirname "$0")/lib.sh"

(( $# > 0 )) || die "usage: $0 TARBALL..."
[[ -S $CONTAINERD_SOCK ]] || die "no containerd at $CONTAINERD_SOCK: run hack/cluster/up.sh first"
for tar in "$@"; do
  [[ -f $tar ]] || die "$tar: no such file"
  start=$SECONDS
  ctr --address "$CONTAINERD_SOCK" -n k8s.io image import "$tar"
  log "imported $tar in $((SECONDS - start))s"
done
