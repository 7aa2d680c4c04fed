package creditsapi

import (
	"net/http"
	"strconv"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the API's instruments: requests by operation and status code,
// and latency by operation. Labels never hold a user id.
type Metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// NewMetrics creates the instruments and registers them on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "creditgate_api_requests_total",
			Help: "Credits API requests by operation (route template and method) and status code.",
		}, []string{"operation", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "creditgate_api_request_duration_seconds",
			Help:    "Credits API latency by operation.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"operation"}),
	}
	reg.MustRegister(m.requests, m.duration)
	// One series of each exists from the start, so that the error-rate
	// alert's metric and the dashboard's latency panel have data before
	// the first request.
	m.requests.WithLabelValues("GET /v1/openapi.json", "200")
	m.duration.WithLabelValues("GET /v1/openapi.json")
	return m
}

// precreate makes every operation's server-error series exist at 0 from the
// start: rate() cannot count what a series held at its first scrape, so a
// new pod's first 5xx answers would otherwise be invisible to the error-rate
// alert.
func (m *Metrics) precreate(r *mux.Router) {
	_ = r.Walk(func(route *mux.Route, _ *mux.Router, _ []*mux.Route) error {
		t, err := route.GetPathTemplate()
		if err != nil {
			return nil
		}
		methods, err := route.GetMethods()
		if err != nil {
			return nil
		}
		for _, method := range methods {
			for _, code := range []string{"500", "503"} {
				m.requests.WithLabelValues(method+" "+t, code)
			}
		}
		return nil
	})
}

// instrument counts every request by its route template (unmatched ones as
// "unknown"), 404s and 405s included.
func (m *Metrics) instrument(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		start := time.Now()
		next.ServeHTTP(rec, r)
		op := "unknown"
		if route := mux.CurrentRoute(r); route != nil {
			if t, err := route.GetPathTemplate(); err == nil {
				op = r.Method + " " + t
			}
		}
		m.duration.WithLabelValues(op).Observe(time.Since(start).Seconds())
		m.requests.WithLabelValues(op, strconv.Itoa(rec.status)).Inc()
	})
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}
