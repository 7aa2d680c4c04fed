package chart

import (
	"slices"
	"testing"
)

func TestMetricNames(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		expr    string
		want    []string
		wantErr bool
	}{
		{name: "bare selector", expr: "up", want: []string{"up"}},
		{name: "function, matchers and range", expr: `rate(foo_total{code=~"5..",route="/api/{x}"}[5m])`, want: []string{"foo_total"}},
		{name: "aggregations and a binary with on and group_left", expr: `sum by (le) (a) / on (pod) group_left (node) b`, want: []string{"a", "b"}},
		{name: "the alerts' shapes", expr: `time() - max(ts{n="x"}) > 1800 or absent(up{job="j"} == 1)`, want: []string{"ts", "up"}},
		{name: "strings are not metrics", expr: `label_replace(a, "dst", "$1 b{c}", "src", "(.*)")`, want: []string{"a"}},
		{name: "duplicates once, sorted", expr: `b / a / b`, want: []string{"a", "b"}},
		{name: "name matcher only", expr: `{__name__=~"a.*"}`, wantErr: true},
		{name: "unresolved grafana variable", expr: `rate(a[$__rate_interval])`, wantErr: true},
		{name: "syntax error", expr: `rate(a[5m)`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := MetricNames(tt.expr)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("MetricNames(%q) = %q, want an error", tt.expr, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("MetricNames(%q): %v", tt.expr, err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("MetricNames(%q) = %q, want %q", tt.expr, got, tt.want)
			}
		})
	}
}
