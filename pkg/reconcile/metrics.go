package reconcile

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the reconciler's and the outbox worker's instruments.
type Metrics struct {
	items  *prometheus.CounterVec
	outbox *prometheus.CounterVec
	runs   *prometheus.CounterVec
	last   *prometheus.GaugeVec
	took   prometheus.Gauge
}

// Item results, per pass.
const (
	resultDone    = "done"
	resultSkipped = "skipped"
	resultFailed  = "failed"
	resultDead    = "dead"
)

// NewMetrics creates the instruments and registers them on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		items: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "creditgate_reconcile_items_total",
			Help: "Items handled by reconciler passes (events, signup, backfill, outbox), by result (done, skipped, failed, dead).",
		}, []string{"pass", "result"}),
		outbox: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "creditgate_outbox_deliveries_total",
			Help: "Clerk metadata write attempts from the outbox, by result (delivered, failed, rate_limited, dead, skipped: Clerk refused it for good, superseded: the claim's lease ran out first).",
		}, []string{"result"}),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "creditgate_reconcile_runs_total",
			Help: "Reconciler runs by outcome (success, partial, failed, skipped).",
		}, []string{"outcome"}),
		last: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "creditgate_reconcile_last_run_timestamp_seconds",
			Help: "Unix time a reconciler run ended, by outcome.",
		}, []string{"outcome"}),
		took: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "creditgate_reconcile_last_run_duration_seconds",
			Help: "How long the last reconciler run took.",
		}),
	}
	reg.MustRegister(m.items, m.outbox, m.runs, m.last, m.took)
	for _, r := range []string{"delivered", "failed", "rate_limited", "dead", "skipped"} {
		m.outbox.WithLabelValues(r)
	}
	return m
}

// Finished records the end of a run.
func (m *Metrics) Finished(outcome string, seconds float64) {
	m.runs.WithLabelValues(outcome).Inc()
	m.last.WithLabelValues(outcome).SetToCurrentTime()
	m.took.Set(seconds)
}
