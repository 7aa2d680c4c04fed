#!/usr/bin/env bash
# chart-check.sh: helm lint --strict and helm template of charts/creditgate
# for its two value sets (the defaults plus the required secrets, and
# ci/all-on-values.yaml with every option on); when KUBECONFIG is set, the
# rendered manifests (hooks and the helm test Pod included) also go through
# `kubectl apply --dry-run=server`, so the API server validates them (schemas,
# admission) without creating anything.
#
# ServiceMonitor and PrometheusRule need the Prometheus Operator's CRDs, which
# a bare cluster lacks. This script never installs CRDs (that would change the
# cluster): when they are missing, the server-side pass renders the value set
# with monitoring.serviceMonitor and monitoring.prometheusRule off and says
# so; the Go tests in e2e/chart decode those two kinds strictly instead.
#
#   bash hack/chart-check.sh                  # lint + template
#   KUBECONFIG=~/.kube/config bash hack/chart-check.sh
#
# CHART_CHECK_NAMESPACE  namespace for the dry run (default: default; it must exist)
# KUBECTL                kubectl to use (default: kubectl on PATH, else the hack/cluster build)
# Rendered manifests are left in $OUT (default: a temporary directory, printed).
set -euo pipefail
export PATH=/usr/local/go/bin:$PATH

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CHART=$ROOT/charts/creditgate
NS=${CHART_CHECK_NAMESPACE:-default}
OUT=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/creditgate-chart-check.XXXXXX")}
mkdir -p "$OUT"

log() { printf 'chart-check: %s\n' "$*" >&2; }

BIN=$(bash "$ROOT/hack/tools.sh")
HELM=$BIN/helm

# name|release|helm arguments
SETS=(
  "default|creditgate|--set secret.databaseURL=postgres://creditgate:secret@db:5432/creditgate --set secret.signingSecret=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
  "all-on|creditgate|-f $CHART/ci/all-on-values.yaml"
)

for set in "${SETS[@]}"; do
  IFS='|' read -r name release args <<<"$set"
  # shellcheck disable=SC2086 # args is a list of flags
  "$HELM" lint --strict "$CHART" --namespace "$NS" $args >"$OUT/$name.lint" 2>&1 ||
    { cat "$OUT/$name.lint" >&2; log "$name: helm lint failed"; exit 1; }
  # shellcheck disable=SC2086
  "$HELM" template "$release" "$CHART" --namespace "$NS" $args >"$OUT/$name.yaml"
  log "$name: lint ok, $(grep -c '^kind:' "$OUT/$name.yaml") objects in $OUT/$name.yaml"
done

if [[ -z ${KUBECONFIG:-} ]]; then
  log "KUBECONFIG is not set: skipping kubectl apply --dry-run=server"
  exit 0
fi

KUBECTL=${KUBECTL:-}
if [[ -z $KUBECTL ]]; then
  if command -v kubectl >/dev/null; then
    KUBECTL=kubectl
  else
    for k in "${CREDITGATE_CACHE:-$HOME/.cache/creditgate}"/k8s/*/bin/kubectl; do
      [[ -x $k ]] && KUBECTL=$k
    done
  fi
fi
[[ -n $KUBECTL ]] || { log "no kubectl found (set KUBECTL)"; exit 1; }

# Render against the cluster's version, so that kubeVersion is checked too.
server_version=$("$KUBECTL" version -o json | sed -n 's/.*"gitVersion": *"\(v[0-9][^"]*\)".*/\1/p' | tail -1)
log "server-side dry run against Kubernetes ${server_version:-?} in namespace $NS"
"$KUBECTL" get namespace "$NS" >/dev/null

monitoring_off=""
if ! "$KUBECTL" get crd servicemonitors.monitoring.coreos.com prometheusrules.monitoring.coreos.com >/dev/null 2>&1; then
  monitoring_off="--set monitoring.serviceMonitor.enabled=false --set monitoring.prometheusRule.enabled=false"
  log "the Prometheus Operator CRDs are not installed: ServiceMonitor and PrometheusRule are left out of the dry run"
fi

for set in "${SETS[@]}"; do
  IFS='|' read -r name release args <<<"$set"
  # shellcheck disable=SC2086
  "$HELM" template "$release" "$CHART" --namespace "$NS" ${server_version:+--kube-version "$server_version"} $args $monitoring_off >"$OUT/$name.server.yaml"
  "$KUBECTL" apply --dry-run=server -n "$NS" -f "$OUT/$name.server.yaml" >"$OUT/$name.apply" 2>&1 ||
    { cat "$OUT/$name.apply" >&2; log "$name: the API server refused the manifests"; exit 1; }
  log "$name: the API server accepts $(grep -c . "$OUT/$name.apply") objects"
done
