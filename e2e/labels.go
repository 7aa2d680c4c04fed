//go:build e2e

package e2e

// Ginkgo labels, one per spec family; select with -ginkgo.label-filter.
const (
	LabelSmoke       = "smoke"
	LabelIdempotency = "idempotency"
	LabelLifecycle   = "lifecycle"
	LabelReconciler  = "reconciler"
	LabelChaos       = "chaos"
	LabelSecurity    = "security"
	LabelUpgrade     = "upgrade"
	LabelMetrics     = "metrics"
	LabelAPI         = "api"
	LabelMonitoring  = "monitoring"
)
