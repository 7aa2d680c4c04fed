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
		{name: "matchers", expr: `creditgate_http_requests_total{code=~"5..",route="/api/{x}"}`, want: []string{"creditgate_http_requests_total"}},
		{name: "function and range", expr: `rate(foo_total{a="b"}[$__rate_interval])`, want: []string{"foo_total"}},
		{name: "aggregation with by before", expr: `sum by (le, namespace) (rate(x_bucket[5m]))`, want: []string{"x_bucket"}},
		{name: "aggregation with by after", expr: `sum(rate(x_total[5m])) by (job)`, want: []string{"x_total"}},
		{name: "histogram_quantile", expr: `histogram_quantile(0.99, sum by (le) (rate(lat_seconds_bucket{job="j"}[5m])))`, want: []string{"lat_seconds_bucket"}},
		{name: "binary with on and group_left", expr: `a / on (pod) group_left (node) b`, want: []string{"a", "b"}},
		{name: "group_left without list", expr: `a * on (pod) group_left b`, want: []string{"a", "b"}},
		{name: "ignoring", expr: `a - ignoring(x) b`, want: []string{"a", "b"}},
		{name: "keywords and bool", expr: `a > bool 0 and b unless c or d`, want: []string{"a", "b", "c", "d"}},
		{name: "case-insensitive keywords", expr: `SUM BY (x) (a) AND b`, want: []string{"a", "b"}},
		{name: "time and absent", expr: `time() - max(ts{n="x"}) > 1800 or absent(up{job="j"} == 1)`, want: []string{"ts", "up"}},
		{name: "offset and at", expr: `a offset 5m + b @ start() - c offset -1h30m`, want: []string{"a", "b", "c"}},
		{name: "numbers", expr: `a * 1e3 + 0x1f - .5 + Inf - NaN`, want: []string{"a"}},
		{name: "strings are skipped", expr: `label_replace(a, "dst", "$1 b{c}", 'src', "(.*)")`, want: []string{"a"}},
		{name: "escaped quote in matcher", expr: `a{x="q\"}"} + b`, want: []string{"a", "b"}},
		{name: "subquery", expr: `max_over_time(rate(a[1m])[10m:1m])`, want: []string{"a"}},
		{name: "recording rule name with colons", expr: `job:req:rate5m`, want: []string{"job:req:rate5m"}},
		{name: "comment", expr: "a # b{c}\n+ d", want: []string{"a", "d"}},
		{name: "duplicates once", expr: `a / a`, want: []string{"a"}},
		{name: "aggregation with without before", expr: `max without (pod) (a)`, want: []string{"a"}},
		{name: "count_values", expr: `count_values("v", a)`, want: []string{"a"}},
		{name: "metric named like a keyword prefix", expr: `order_total + bye`, want: []string{"bye", "order_total"}},
		{name: "name matcher only", expr: `{__name__=~"a.*"}`, wantErr: true},
		{name: "unresolved grafana variable", expr: `rate(a[5m]) * $scale`, wantErr: true},
		{name: "unterminated string", expr: `a{x="y}`, wantErr: true},
		{name: "unclosed range", expr: `rate(a[5m)`, wantErr: true},
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
