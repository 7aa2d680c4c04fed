package webhook

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the receiver's instruments. Labels are low-cardinality by
// construction: never a user id, email or svix-id.
type Metrics struct {
	deliveries    *prometheus.CounterVec
	verifyFailed  *prometheus.CounterVec
	credits       prometheus.Counter
	processing    *prometheus.HistogramVec
	inFlight      prometheus.Gauge
	httpRequests  *prometheus.CounterVec
	httpDurations *prometheus.HistogramVec
	ignored       *prometheus.CounterVec
}

// Delivery outcome label values beyond ledger's outcomes.
const (
	outcomeUnauthorized = "unauthorized"
	outcomeBadRequest   = "bad_request"
	outcomeTooLarge     = "too_large"
	outcomeFailed       = "failed"
	// outcomeOverloaded: the bodies in flight held the whole body memory
	// budget; answered 503 before the body was read.
	outcomeOverloaded = "overloaded"
)

// NewMetrics creates the receiver's instruments and registers them on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "creditgate_webhook_deliveries_total",
			Help: "Webhook deliveries by outcome: processed, duplicate, stale, ignored, rejected, unauthorized, bad_request, too_large, overloaded, failed.",
		}, []string{"outcome"}),
		verifyFailed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "creditgate_webhook_verification_failures_total",
			Help: "Deliveries refused before parsing, by reason (missing_headers, invalid_headers, timestamp_too_old, timestamp_too_new, invalid_signature).",
		}, []string{"reason"}),
		credits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "creditgate_credits_granted_total",
			Help: "Signup credits granted by webhook deliveries.",
		}),
		processing: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "creditgate_webhook_processing_duration_seconds",
			Help:    "Time from a verified body to a durable outcome, by outcome.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"outcome"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "creditgate_http_requests_in_flight",
			Help: "HTTP requests being served.",
		}),
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "creditgate_http_requests_total",
			Help: "HTTP requests by route template, method and status code.",
		}, []string{"route", "method", "code"}),
		httpDurations: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "creditgate_http_request_duration_seconds",
			Help:    "HTTP request latency by route template and method.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"route", "method"}),
		ignored: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "creditgate_webhook_ignored_fields_total",
			Help: "Fields of applied events that creditgate could not use and left out (field=email: an address it cannot store); the user is credited all the same.",
		}, []string{"field"}),
	}
	reg.MustRegister(m.deliveries, m.verifyFailed, m.credits, m.processing, m.inFlight, m.httpRequests, m.httpDurations, m.ignored)
	// Pre-create the series that alerts compare, so that a rate is 0, not absent.
	for _, o := range []string{"processed", "duplicate", "stale", "ignored", "rejected", outcomeUnauthorized, outcomeBadRequest, outcomeTooLarge, outcomeOverloaded, outcomeFailed} {
		m.deliveries.WithLabelValues(o)
	}
	for _, r := range []string{ReasonMissingHeaders, ReasonInvalidHeaders, ReasonTimestampTooOld, ReasonTimestampTooNew, ReasonInvalidSignature} {
		m.verifyFailed.WithLabelValues(r)
	}
	m.ignored.WithLabelValues("email")
	// The delivery route's answers the error-rate alert divides, at 0 from
	// the start: rate() cannot count what a series held at its first scrape,
	// so a new pod's first successes (or first failures) would be lost to
	// the alert if their series were created by the first request.
	for _, code := range []string{"200", "500", "503"} {
		m.httpRequests.WithLabelValues(clerkRoute, http.MethodPost, code)
	}
	m.httpDurations.WithLabelValues(clerkRoute, http.MethodPost)
	return m
}
