package webhook

import (
	"net/http"
	"strconv"
	"time"

	"github.com/gorilla/mux"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
)

// Routes returns the application router: every route and its middleware.
func (h *Handler) Routes() http.Handler {
	r := mux.NewRouter()
	r.Use(h.instrument)
	// mux runs middleware for matched routes only: a scanner's 404s and a
	// wrong method's 405s are counted too, as route "unmatched".
	r.NotFoundHandler = h.instrument(http.NotFoundHandler())
	r.MethodNotAllowedHandler = h.instrument(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, http.StatusText(http.StatusMethodNotAllowed), http.StatusMethodNotAllowed)
	}))
	r.HandleFunc(clerkRoute, h.clerk).Methods(http.MethodPost)
	r.HandleFunc("/healthz", h.healthz).Methods(http.MethodGet, http.MethodHead)
	r.HandleFunc("/readyz", h.readyz).Methods(http.MethodGet, http.MethodHead)
	if !h.tracing {
		return r
	}
	// One middleware for traces: otelhttp makes the server span, named by route.
	return otelhttp.NewHandler(r, "http.server",
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string {
			return r.Method + " " + r.URL.Path
		}))
}

// clerkRoute is where Svix delivers Clerk's events.
const clerkRoute = "/api/webhooks/clerk"

// instrument records Prometheus HTTP metrics by route template, never by raw
// path, so that label values stay bounded.
func (h *Handler) instrument(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		route := "unmatched"
		if cr := mux.CurrentRoute(r); cr != nil {
			if t, err := cr.GetPathTemplate(); err == nil {
				route = t
			}
		}
		h.metrics.inFlight.Inc()
		defer h.metrics.inFlight.Dec()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		start := time.Now()
		next.ServeHTTP(rec, r)
		h.metrics.httpDurations.WithLabelValues(route, r.Method).Observe(time.Since(start).Seconds())
		h.metrics.httpRequests.WithLabelValues(route, r.Method, strconv.Itoa(rec.status)).Inc()
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

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }
