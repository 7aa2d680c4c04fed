// Package chart tests the Helm chart in charts/creditgate: helm lint, the
// rendered manifests decoded strictly into Kubernetes types, the values
// schema, the alerts (promtool) and that every metric the dashboard and the
// alerts use is one a running webhook or reconciler exports. The tests shell
// out to helm and promtool from hack/tools.sh's cache or PATH.
package chart

import (
	"fmt"
	"slices"

	"github.com/prometheus/prometheus/promql/parser"
)

// MetricNames returns the metric names a PromQL expression selects, sorted and
// without duplicates, read with Prometheus' own parser (the module version
// of the pinned promtool). A selector without a metric name
// ({__name__=~"…"}) is an error: the names must be checkable.
func MetricNames(expr string) ([]string, error) {
	e, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		return nil, err
	}
	var names []string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		if vs.Name == "" && err == nil {
			err = fmt.Errorf("selector %s names no metric", vs)
		}
		if vs.Name != "" && !slices.Contains(names, vs.Name) {
			names = append(names, vs.Name)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.Sort(names)
	return names, nil
}
