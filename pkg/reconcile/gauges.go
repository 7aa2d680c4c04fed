package reconcile

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/creditgate/creditgate/pkg/ledger"
)

// BacklogCollector exports the state the alerts watch (failed and dead
// events, users without their signup credit, the outbox, ledger drift, the
// last successful reconcile), read from the database by the always-on webhook
// Deployment. A scrape reads at most once per TTL; the query scans the ledger.
type BacklogCollector struct {
	read func(context.Context) (ledger.Backlog, error)
	ttl  time.Duration
	log  *slog.Logger

	mu     sync.Mutex
	at     time.Time
	cached ledger.Backlog
	ok     bool

	events, outbox               *prometheus.Desc
	eventAge, outboxAge          *prometheus.Desc
	noSignup, drift, lastSuccess *prometheus.Desc
	up                           *prometheus.Desc
	holds, held, expiryBacklog   *prometheus.Desc
}

// NewBacklogCollector returns a collector over read, cached for ttl.
func NewBacklogCollector(read func(context.Context) (ledger.Backlog, error), ttl time.Duration, log *slog.Logger) *BacklogCollector {
	return &BacklogCollector{
		read: read, ttl: ttl, log: log,
		events: prometheus.NewDesc("creditgate_webhook_events_unfinished",
			"Stored webhook events not processed, by status (failed: to be re-run; dead: given up).", []string{"status"}, nil),
		eventAge: prometheus.NewDesc("creditgate_webhook_oldest_unfinished_event_age_seconds",
			"Age of the oldest failed webhook event (0 when none).", nil, nil),
		noSignup: prometheus.NewDesc("creditgate_users_without_signup_credit",
			"Live users lacking their signup credit (the reconciler grants it).", nil, nil),
		outbox: prometheus.NewDesc("creditgate_outbox_messages",
			"Clerk metadata writes not delivered, by status (pending, dead).", []string{"status"}, nil),
		outboxAge: prometheus.NewDesc("creditgate_outbox_oldest_pending_age_seconds",
			"Age of the oldest pending Clerk metadata write (0 when none).", nil, nil),
		drift: prometheus.NewDesc("creditgate_ledger_drift_users",
			"Users whose balances differ from the sums of their ledger rows (never auto-fixed).", nil, nil),
		lastSuccess: prometheus.NewDesc("creditgate_reconcile_last_success_timestamp_seconds",
			"Unix time the last successful reconciler run ended (0 when none).", nil, nil),
		holds: prometheus.NewDesc("creditgate_credits_active_holds",
			"Credits API holds active and unexpired.", nil, nil),
		held: prometheus.NewDesc("creditgate_credits_held",
			"Credits held by active, unexpired holds.", nil, nil),
		expiryBacklog: prometheus.NewDesc("creditgate_credits_expiry_backlog",
			"Holds and grants past their expiry that the reconciler has not booked yet (reads already leave them out).", nil, nil),
		up: prometheus.NewDesc("creditgate_backlog_query_up",
			"1 when the backlog gauges could be read from the database.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *BacklogCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.events, c.eventAge, c.noSignup, c.outbox, c.outboxAge, c.drift, c.lastSuccess, c.up, c.holds, c.held, c.expiryBacklog} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *BacklogCollector) Collect(ch chan<- prometheus.Metric) {
	b, ok := c.get()
	if !ok {
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 1)
	ch <- prometheus.MustNewConstMetric(c.events, prometheus.GaugeValue, float64(b.EventsFailed), "failed")
	ch <- prometheus.MustNewConstMetric(c.events, prometheus.GaugeValue, float64(b.EventsDead), "dead")
	ch <- prometheus.MustNewConstMetric(c.eventAge, prometheus.GaugeValue, b.OldestUnfinishedEventAge.Seconds())
	ch <- prometheus.MustNewConstMetric(c.noSignup, prometheus.GaugeValue, float64(b.UsersWithoutSignupCredit))
	ch <- prometheus.MustNewConstMetric(c.outbox, prometheus.GaugeValue, float64(b.OutboxPending), "pending")
	ch <- prometheus.MustNewConstMetric(c.outbox, prometheus.GaugeValue, float64(b.OutboxDead), "dead")
	ch <- prometheus.MustNewConstMetric(c.outboxAge, prometheus.GaugeValue, b.OldestOutboxAge.Seconds())
	ch <- prometheus.MustNewConstMetric(c.drift, prometheus.GaugeValue, float64(b.LedgerDriftUsers))
	ch <- prometheus.MustNewConstMetric(c.holds, prometheus.GaugeValue, float64(b.ActiveHolds))
	ch <- prometheus.MustNewConstMetric(c.held, prometheus.GaugeValue, float64(b.HeldCredits))
	ch <- prometheus.MustNewConstMetric(c.expiryBacklog, prometheus.GaugeValue, float64(b.ExpiryBacklog))
	var last float64
	if !b.LastSuccessfulReconcile.IsZero() {
		last = float64(b.LastSuccessfulReconcile.UnixMilli()) / 1000
	}
	ch <- prometheus.MustNewConstMetric(c.lastSuccess, prometheus.GaugeValue, last)
}

func (c *BacklogCollector) get() (ledger.Backlog, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ok && time.Since(c.at) < c.ttl {
		return c.cached, true
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := c.read(ctx)
	if err != nil {
		c.log.Warn("read backlog gauges", "error", err)
		// Serve the last good values for a while rather than gaps.
		return c.cached, c.ok && time.Since(c.at) < 5*c.ttl
	}
	c.cached, c.at, c.ok = b, time.Now(), true
	return b, true
}
