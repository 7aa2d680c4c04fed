#!/usr/bin/env bash
# tools.sh: install the pinned tools the chart checks use (helm, promtool)
# and, when named, the linter (golangci-lint) or the e2e monitoring spec's
# Prometheus server and Pushgateway (prometheus, pushgateway) into a cache
# directory and print that bin directory on stdout.
#
#   bin=$(bash hack/tools.sh)          # then "$bin/helm", "$bin/promtool"
#   PATH="$(bash hack/tools.sh):$PATH"
#   bash hack/tools.sh golangci-lint   # only that one
#
# Each tool is built from source with `GOBIN=$CACHE/bin go install pkg@version`
# (the Go module proxy is the only registry we reach). A binary is rebuilt only
# when the one in the cache is missing or was built from another version or
# with other flags or build tags (the version read back with `go version -m`,
# flags and tags from a stamp file), so a warm cache costs well under a
# second; a cold one takes minutes (helm 5.5 and promtool 5.7 in a first
# `make test` on 2 busy cores; promtool with all its service-discovery plugins
# needs about twice the CPU). While a tool builds, a line every 30 s says so.
#
# CREDITGATE_CACHE  cache root (default ~/.cache/creditgate); tools go to its bin/
# Progress goes to stderr; stdout is only the bin directory.
set -euo pipefail
export PATH=/usr/local/go/bin:$PATH

CACHE=${CREDITGATE_CACHE:-$HOME/.cache/creditgate}
BIN=$CACHE/bin

HELM_VERSION=v3.22.0
PROMTOOL_VERSION=v0.316.0
GOLANGCI_LINT_VERSION=v2.15.0
# The e2e monitoring spec's Prometheus is the server of the promtool version.
PROMETHEUS_VERSION=$PROMTOOL_VERSION
PUSHGATEWAY_VERSION=v1.11.0

# Helm's release builds stamp the Kubernetes version that `helm template` and
# `helm lint` assume (from its client-go, v0.37 -> 1.37) and Helm's own
# version; a plain `go install` would leave them at v1.20.0 and "v3.22", and
# every chart with kubeVersion >= 1.28 would fail to render. Same flags as
# Helm's Makefile.
HELM_LDFLAGS="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
for pkg in pkg/chartutil pkg/lint/rules; do
  HELM_LDFLAGS+=" -X helm.sh/helm/v3/$pkg.k8sVersionMajor=1 -X helm.sh/helm/v3/$pkg.k8sVersionMinor=37"
done
PROMTOOL_LDFLAGS="-s -w -X github.com/prometheus/common/version.Version=$PROMTOOL_VERSION"
# Prometheus registers its service-discovery plugins (AWS, Azure, GCE,
# OpenStack, Docker, … SDs) in plugins/plugin_*.go, each built only with
# `!remove_all_sd || enable_<name>_sd`. The chart tests run `promtool check
# rules` and `promtool test rules`, which discover nothing: leave them out. (The
# Kubernetes SD stays: promtool imports it directly.)
PROMTOOL_TAGS=remove_all_sd
# The server keeps only the Kubernetes SD, which the e2e spec scrapes with.
PROMETHEUS_TAGS=remove_all_sd,enable_kubernetes_sd
PROMETHEUS_LDFLAGS="-s -w -X github.com/prometheus/common/version.Version=$PROMETHEUS_VERSION"
PUSHGATEWAY_LDFLAGS="-s -w -X github.com/prometheus/common/version.Version=$PUSHGATEWAY_VERSION"

log() { printf 'tools.sh: %s\n' "$*" >&2; }

# fingerprint NAME VERSION prints what the cached NAME was built from:
# "VERSION LDFLAGS[ tags=TAGS]" as recorded in its stamp file when the binary is
# there and says (per `go version -m`) it was built from VERSION's module;
# nothing otherwise. (-trimpath keeps -ldflags out of the binary's build info,
# hence the stamp.)
fingerprint() {
  local name=$1 version=$2 mod
  [[ -x $BIN/$name && -f $BIN/.$name.stamp ]] || return 0
  mod=$(go version -m "$BIN/$name" 2>/dev/null | awk '$1 == "mod" { print $3; exit }')
  [[ $mod == "$version" ]] || return 0
  cat "$BIN/.$name.stamp"
}

# install NAME PKG VERSION LDFLAGS [TAGS]
install() {
  local name=$1 pkg=$2 version=$3 ldflags=$4 tags=${5:-} want have start ticker build rc=0
  want="$version $ldflags${tags:+ tags=$tags}"
  have=$(fingerprint "$name" "$version")
  if [[ $have == "$want" ]]; then
    log "$name $version: cached"
    return
  fi
  log "$name $version: building${tags:+ (tags $tags)} ..."
  start=$SECONDS
  # go install says nothing until it is done: a line every 30 s meanwhile, on
  # stderr. Both run in the background so that this script stops them
  # however it ends (bash runs the EXIT trap on SIGTERM and SIGINT too).
  (
    trap 'kill "$s" 2>/dev/null; exit 0' TERM
    t=0
    while :; do
      sleep 30 & s=$!
      wait "$s"
      kill -0 $$ 2>/dev/null || exit 0 # the script was killed (SIGKILL)
      t=$((t + 30))
      log "still building $name ($((t / 60))m$(printf %02d $((t % 60)))s)"
    done
  ) >&2 &
  ticker=$!
  if [[ $name == pushgateway ]]; then
    # The proxy serves this module's versions but refuses its version list,
    # which `go install pkg@version` reads (for deprecations): build it in a
    # throwaway module that requires the exact version instead.
    (
      tmp=$(mktemp -d) && trap 'rm -rf "$tmp"' EXIT && cd "$tmp" &&
        printf 'module tools.local/%s\n\ngo 1.26\n\nrequire %s %s\n' "$name" "$pkg" "$version" >go.mod &&
        CGO_ENABLED=0 GOFLAGS='-mod=mod -buildvcs=false' \
          go build -trimpath -tags="$tags" -ldflags="$ldflags" -o "$BIN/$name" "$pkg"
    ) >&2 &
  else
    GOBIN=$BIN CGO_ENABLED=0 GOFLAGS=-buildvcs=false \
      go install -trimpath -tags="$tags" -ldflags="$ldflags" "$pkg@$version" >&2 &
  fi
  build=$!
  trap 'kill $ticker $build 2>/dev/null || true' EXIT
  wait "$build" || rc=$?
  kill "$ticker" 2>/dev/null || true
  trap - EXIT
  if ((rc != 0)); then
    log "$name $version: build failed (exit $rc)"
    exit "$rc"
  fi
  printf '%s\n' "$want" >"$BIN/.$name.stamp"
  log "$name $version: built in $((SECONDS - start))s"
}

mkdir -p "$BIN"
tools=("$@")
((${#tools[@]})) || tools=(helm promtool)
for tool in "${tools[@]}"; do
  case $tool in
  helm) install helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION" "$HELM_LDFLAGS" ;;
  promtool) install promtool github.com/prometheus/prometheus/cmd/promtool "$PROMTOOL_VERSION" "$PROMTOOL_LDFLAGS" "$PROMTOOL_TAGS" ;;
  prometheus) install prometheus github.com/prometheus/prometheus/cmd/prometheus "$PROMETHEUS_VERSION" "$PROMETHEUS_LDFLAGS" "$PROMETHEUS_TAGS" ;;
  pushgateway) install pushgateway github.com/prometheus/pushgateway "$PUSHGATEWAY_VERSION" "$PUSHGATEWAY_LDFLAGS" ;;
  golangci-lint)
    install golangci-lint github.com/golangci/golangci-lint/v2/cmd/golangci-lint "$GOLANGCI_LINT_VERSION" \
      "-s -w -X main.version=${GOLANGCI_LINT_VERSION#v}"
    ;;
  *)
    log "unknown tool $tool (helm, promtool, prometheus, pushgateway, golangci-lint)"
    exit 2
    ;;
  esac
done
echo "$BIN"
