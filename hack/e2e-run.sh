#!/usr/bin/env bash
# e2e-run.sh: run the Ginkgo e2e suite against the cluster KUBECONFIG points at.
# Shared by `make e2e` (hack/e2e.sh, the from-source local cluster) and
# `make e2e-kind` (hack/e2e-kind.sh): the callers bootstrap the cluster and load
# the image, then export:
#   KUBECONFIG      the cluster
#   E2E_IMAGE       the loaded image (repository:tag)
#   E2E_HOST_IP     where pods reach this host (the fake Clerk API, and PostgreSQL
#                   unless E2E_DATABASE_URL names one)
#   E2E_KUBECTL, E2E_HELM   the binaries to use
# optional: E2E_DATABASE_URL, E2E_POD_DATABASE_URL, E2E_DATABASE_RESTART,
#   E2E_WEBHOOK_URL, E2E_VALUES, E2E_LABELS (a Ginkgo label filter), E2E_SKIP_CLEANUP=true,
#   E2E_PROMETHEUS, E2E_PUSHGATEWAY, E2E_OPERATOR_CRDS (the monitoring spec's
#   binaries and the Prometheus Operator's CRD directory; unset: it is skipped),
#   E2E_REPEAT=N (every selected spec runs N times in a row and must pass each
#   time; read by the suite itself, see e2e/suite_test.go).
set -euo pipefail
cd "$(dirname "$0")/../e2e"
: "${KUBECONFIG:?}" "${E2E_IMAGE:?}" "${E2E_HOST_IP:?}"
args=(-ginkgo.v -ginkgo.timeout=50m -ginkgo.poll-progress-after=120s)
[[ -n ${E2E_LABELS:-} ]] && args+=("-ginkgo.label-filter=$E2E_LABELS")
echo "== e2e suite against $(${E2E_KUBECTL:-kubectl} config current-context 2>/dev/null || echo cluster) with $E2E_IMAGE${E2E_LABELS:+, specs: $E2E_LABELS}${E2E_REPEAT:+, each run $E2E_REPEAT times}"
go test -v -tags e2e -count=1 -timeout 60m . -args "${args[@]}"
