// Package metricstest reads what a Prometheus registry exposes, for tests:
// one series' value by its labels, or every series of a metric keyed by one
// label. It is the one metric reader of the project's tests (client_golang's
// testutil compares whole expositions, or reads a collector the test must
// hold; these tests hold only the registry the code under test filled).
package metricstest

import (
	"slices"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// T is the part of testing.TB (and of Ginkgo's GinkgoT()) these helpers use.
type T interface {
	Helper()
	Fatalf(format string, args ...any)
}

// Value returns the value of the counter, gauge or untyped series name whose
// labels include the given name/value pairs (exactly one must match); the test
// fails when none or several do.
func Value(t T, g prometheus.Gatherer, name string, labelPairs ...string) float64 {
	t.Helper()
	if len(labelPairs)%2 != 0 {
		t.Fatalf("metricstest.Value(%s): label pairs %q are not name/value pairs", name, labelPairs)
	}
	found := series(t, g, name, labelPairs)
	if len(found) != 1 {
		t.Fatalf("metricstest.Value: %d series %s%v, want exactly one", len(found), name, labelPairs)
	}
	return value(found[0])
}

// ByLabel returns the values of the series name whose labels include the given
// name/value pairs, keyed by their label key's value.
func ByLabel(t T, g prometheus.Gatherer, name, key string, labelPairs ...string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, m := range series(t, g, name, labelPairs) {
		for _, lp := range m.GetLabel() {
			if lp.GetName() == key {
				out[lp.GetValue()] += value(m)
			}
		}
	}
	return out
}

// series returns the series name whose labels include labelPairs.
func series(t T, g prometheus.Gatherer, name string, labelPairs []string) []*dto.Metric {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gather metrics: %v", err)
	}
	f := slices.IndexFunc(mfs, func(mf *dto.MetricFamily) bool { return mf.GetName() == name })
	if f < 0 {
		return nil
	}
	// A copy: a Gatherer may hand out the same families again.
	return slices.DeleteFunc(slices.Clone(mfs[f].GetMetric()), func(m *dto.Metric) bool {
		for i := 0; i+1 < len(labelPairs); i += 2 {
			if !slices.ContainsFunc(m.GetLabel(), func(lp *dto.LabelPair) bool {
				return lp.GetName() == labelPairs[i] && lp.GetValue() == labelPairs[i+1]
			}) {
				return true
			}
		}
		return false
	})
}

// value is the series' counter, gauge or untyped value: one of them is set,
// and the getters of the others return 0.
func value(m *dto.Metric) float64 {
	return m.GetCounter().GetValue() + m.GetGauge().GetValue() + m.GetUntyped().GetValue()
}
