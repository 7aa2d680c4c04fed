package main

import (
	"testing"

	"github.com/creditgate/creditgate/pkg/env"
)

// TestUsageStatesTheLoadersDefaults: the usage text lists every variable
// loadConfig reads, with loadConfig's own default (or none), so the help a
// user reads cannot drift from the code; `reconciler env` prints the same
// defaults and the chart's tests compare its values with them.
func TestUsageStatesTheLoadersDefaults(t *testing.T) {
	t.Parallel()
	_, vars, _ := loadConfig(func(string) string { return "" })
	for _, m := range env.UsageMismatches(usage, vars) {
		t.Error(m)
	}
}
