package chart

import (
	"strings"
	"testing"
	"time"
)

// chartDefaultsDiffer are the variables whose chart default differs from the
// binary's on purpose, and why.
var chartDefaultsDiffer = map[string]string{
	"SHUTDOWN_DELAY": "in Kubernetes a terminating pod keeps getting requests until the endpoints controller and every kube-proxy have removed it; a process outside Kubernetes has nothing to wait for",
}

// TestChartDefaultsAreTheBinaries: with default values the chart's
// ConfigMap sets every variable to the binaries' own default (`webhook env`
// and `reconciler env`, which print what the loaders use), so that values.yaml
// is not a second, drifting source of defaults. Durations compare as
// durations (5m is 5m0s), everything else as text.
func TestChartDefaultsAreTheBinaries(t *testing.T) {
	t.Parallel()
	envs := binaryEnvs(t)
	m := render(t, valueSets()[0])
	var data map[string]string
	for _, cm := range m.ConfigMaps {
		if _, ok := cm.Data["SIGNUP_CREDITS"]; ok {
			data = cm.Data
		}
	}
	if data == nil {
		t.Fatal("no configuration ConfigMap (with SIGNUP_CREDITS) in the chart")
	}
	compared := 0
	for name, chartValue := range data {
		for bin, e := range envs {
			def, ok := e.Defaults[name]
			if !ok {
				continue
			}
			compared++
			if same(chartValue, def) {
				if why, listed := chartDefaultsDiffer[name]; listed {
					t.Errorf("%s: chartDefaultsDiffer says %q, but the chart's default %q is the %s's", name, why, chartValue, bin)
				}
				continue
			}
			if _, listed := chartDefaultsDiffer[name]; !listed {
				t.Errorf("%s: the chart's default is %q, the %s's is %q (change values.yaml, or list it in chartDefaultsDiffer with the reason)", name, chartValue, bin, def)
			}
		}
	}
	if compared < 20 {
		t.Errorf("only %d chart values compared with a binary default", compared)
	}
}

func same(a, b string) bool {
	if strings.TrimSpace(a) == strings.TrimSpace(b) {
		return true
	}
	da, errA := time.ParseDuration(a)
	db, errB := time.ParseDuration(b)
	return errA == nil && errB == nil && da == db
}
