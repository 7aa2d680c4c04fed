package creditsapi_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/creditgate/creditgate/pkg/creditsapi"
	"github.com/creditgate/creditgate/pkg/metricstest"
)

// TestServerErrorSeriesExistFromTheStart: every operation's 500 and 503
// series exist at 0 before the first request, so that Prometheus sees a new
// pod's first server errors as an increase (rate() cannot count what a
// series held at its first scrape).
func TestServerErrorSeriesExistFromTheStart(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	creditsapi.New(creditsapi.Config{Metrics: creditsapi.NewMetrics(reg)}).Routes()
	series := map[string]float64{}
	for op, v := range metricstest.ByLabel(t, reg, "creditgate_api_requests_total", "operation", "code", "500") {
		series[op+" 500"] = v
	}
	for op, v := range metricstest.ByLabel(t, reg, "creditgate_api_requests_total", "operation", "code", "503") {
		series[op+" 503"] = v
	}
	for _, want := range []string{
		"POST /v1/users/{user}/debits 500", "POST /v1/users/{user}/debits 503",
		"POST /v1/holds/{hold}/capture 503", "GET /v1/users/{user}/balance 500",
	} {
		if v, ok := series[want]; !ok || v != 0 {
			t.Errorf("series %q: %v, %v; want it at 0 (all: %v)", want, v, ok, series)
		}
	}
	if len(series) < 20 {
		t.Errorf("only %d series: want every operation's 500 and 503", len(series))
	}
}
