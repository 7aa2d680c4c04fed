package postgres

import (
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/uptrace/bun"
)

// poolCollector exports a pgx pool's statistics, read at scrape time.
type poolCollector struct {
	pool *pgxpool.Pool

	max, conns, acquires, waits, waitSeconds, acquireSeconds, canceled, opened, closed *prometheus.Desc
}

// NewPoolCollector exports the statistics of the pool under db (a handle
// Open made) as creditgate_db_pool_*: its size, the connections in use, idle
// and being opened, the acquisitions, how many had to wait and for how
// long in all, and the connections opened and retired.
func NewPoolCollector(db *bun.DB) prometheus.Collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("creditgate_db_pool_"+name, help, labels, nil)
	}
	return &poolCollector{
		pool:           Pool(db),
		max:            d("max_connections", "Connections the pool may open (DB_MAX_CONNS)."),
		conns:          d("connections", "The pool's connections by state: acquired (in use), idle, constructing.", "state"),
		acquires:       d("acquires_total", "Connections handed out by the pool."),
		waits:          d("acquire_waits_total", "Acquisitions that found no idle connection and waited (first come, first served)."),
		waitSeconds:    d("acquire_wait_seconds_total", "Time spent waiting by acquisitions that found no idle connection."),
		acquireSeconds: d("acquire_seconds_total", "Time spent in acquisitions, waiting or not."),
		canceled:       d("canceled_acquires_total", "Acquisitions whose context ended while they waited."),
		opened:         d("opened_connections_total", "Connections the pool opened."),
		closed:         d("closed_connections_total", "Connections the pool retired for age or idleness.", "reason"),
	}
}

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.max, c.conns, c.acquires, c.waits, c.waitSeconds, c.acquireSeconds, c.canceled, c.opened, c.closed} {
		ch <- d
	}
}

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	if c.pool == nil {
		return
	}
	s := c.pool.Stat()
	g, k := prometheus.GaugeValue, prometheus.CounterValue
	m := func(d *prometheus.Desc, t prometheus.ValueType, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, t, v, labels...)
	}
	m(c.max, g, float64(s.MaxConns()))
	m(c.conns, g, float64(s.AcquiredConns()), "acquired")
	m(c.conns, g, float64(s.IdleConns()), "idle")
	m(c.conns, g, float64(s.ConstructingConns()), "constructing")
	m(c.acquires, k, float64(s.AcquireCount()))
	m(c.waits, k, float64(s.EmptyAcquireCount()))
	m(c.waitSeconds, k, s.EmptyAcquireWaitTime().Seconds())
	m(c.acquireSeconds, k, s.AcquireDuration().Seconds())
	m(c.canceled, k, float64(s.CanceledAcquireCount()))
	m(c.opened, k, float64(s.NewConnsCount()))
	m(c.closed, k, float64(s.MaxLifetimeDestroyCount()), "max_lifetime")
	m(c.closed, k, float64(s.MaxIdleDestroyCount()), "max_idle")
}
