#!/usr/bin/env bash
# build.sh: build the local cluster's binaries from the Go module proxy and
# cache them by version; skip whatever is already cached.
#
#   $CREDITGATE_CACHE/k8s/$K8S_VERSION/bin    kube-apiserver kube-controller-manager
#                                             kube-scheduler kubelet kubectl kube-proxy
#   $CREDITGATE_CACHE/etcd/$ETCD_VERSION/bin  etcd
#   $CREDITGATE_CACHE/images/pause.tar        the pod sandbox image (creditgate.local/pause:3.10)
#   $CREDITGATE_CACHE/images/echo.tar         the network probe image (creditgate.local/echo:dev)
#                                             both from hack/tools, rebuilt every run (seconds)
#
# k8s.io/kubernetes cannot be `go install`ed: its go.mod points its staging
# modules at v0.0.0 with replace => ./staging/... So a throwaway wrapper module
# (under the cache, never committed) requires k8s.io/kubernetes and pins each
# staging module at its published v0.X.Y twin. Cold: about 6 minutes and 3 GB of
# RAM on 2 cores; warm Go build cache: about 40 s.
set -euo pipefail
# shellcheck source=hack/cluster/lib.sh
source "$(dirname "$0")/lib.sh"

# Go builds here compete with everyone else's tests for 2 cores: be polite.
NICE=(nice -n 10)
export GOWORK=off GOFLAGS=-mod=mod CGO_ENABLED=0 GOOS=linux GOARCH=amd64

build_k8s() {
  local missing=()
  for c in "${K8S_COMPONENTS[@]}"; do
    [[ -x $K8S_BIN/$c ]] || missing+=("$c")
  done
  if (( ${#missing[@]} == 0 )); then
    log "kubernetes $K8S_VERSION: cached in $K8S_BIN"
    return
  fi
  local start=$SECONDS src=$CREDITGATE_CACHE/k8s/$K8S_VERSION/src
  local staging=v0.${K8S_VERSION#v1.}
  log "kubernetes $K8S_VERSION: building ${missing[*]} (staging modules at $staging)"
  mkdir -p "$src" "$K8S_BIN"

  # Upstream's go.mod: keep its go/godebug/toolchain lines and every pinned
  # version; rename the module; drop the ./staging replaces; publish the
  # staging modules' real versions instead of v0.0.0.
  local upstream
  upstream=$(cd "$src" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
  [[ -f $upstream ]] || die "no go.mod for k8s.io/kubernetes@$K8S_VERSION from the module proxy"
  awk -v staging="$staging" -v kv="$K8S_VERSION" '
    /^module / { print "module creditgate.local/k8sbuild"; next }
    /^replace \($/ { skip = 1; next }
    skip && /^\)$/ { skip = 0; next }
    skip || /^replace / { next }
    /^[[:space:]]*k8s\.io\/[^ ]+ v0\.0\.0([[:space:]]|$)/ { sub(/v0\.0\.0/, staging) }
    { print }
    END { print ""; print "require k8s.io/kubernetes " kv }
  ' "$upstream" >"$src/go.mod"
  cat >"$src/doc.go" <<'GO'
// Package k8sbuild only anchors the module that builds Kubernetes' commands.
package k8sbuild
GO

  local pkg=k8s.io/component-base/version cpkg=k8s.io/client-go/pkg/version
  local major=${K8S_VERSION#v}; major=${major%%.*}
  local minor=${K8S_VERSION#v*.}; minor=${minor%%.*}
  local date; date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  local ldflags="-s -w"
  for p in $pkg $cpkg; do
    ldflags+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=$major -X $p.gitMinor=$minor"
    ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=$date"
  done
  local pkgs=()
  for c in "${missing[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
  (cd "$src" && "${NICE[@]}" go build -trimpath -ldflags "$ldflags" -o "$K8S_BIN/" "${pkgs[@]}")
  log "kubernetes $K8S_VERSION: built in $((SECONDS - start))s"
}

build_etcd() {
  if [[ -x $ETCD_BIN/etcd ]]; then
    log "etcd $ETCD_VERSION: cached in $ETCD_BIN"
    return
  fi
  local start=$SECONDS src=$CREDITGATE_CACHE/etcd/$ETCD_VERSION/src
  log "etcd $ETCD_VERSION: building"
  mkdir -p "$src" "$ETCD_BIN"
  cat >"$src/go.mod" <<GOMOD
module creditgate.local/etcdbuild

go 1.26

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
GOMOD
  cat >"$src/main.go" <<'GO'
// Command etcd is upstream's etcd server: etcdmain.Main is its whole main.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  (cd "$src" && go mod tidy && "${NICE[@]}" go build -trimpath \
    -ldflags "-s -w" -o "$ETCD_BIN/etcd" .)
  log "etcd $ETCD_VERSION: built in $((SECONDS - start))s"
}

# build_images builds hack/tools/pause and hack/tools/echo into image
# tarballs. That is seconds of work from our own source, so it is redone every
# time rather than trusted from the cache.
build_images() {
  local start=$SECONDS
  (
    cd "$TOOLS_DIR"
    unset GOFLAGS
    go run ./image -tool pause -tag "$PAUSE_TAG" -out "$PAUSE_TAR"
    go run ./image -tool echo -tag "$ECHO_TAG" -out "$ECHO_TAR"
  )
  log "tool images: built in $((SECONDS - start))s"
}

main() {
  local start=$SECONDS
  case ${1:-all} in
    all) build_k8s; build_etcd; build_images ;;
    k8s) build_k8s ;;
    etcd) build_etcd ;;
    images) build_images ;;
    *) die "usage: $0 [all|k8s|etcd|images]" ;;
  esac
  log "done in $((SECONDS - start))s"
}

main "$@"
