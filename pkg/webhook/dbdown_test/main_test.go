// Package dbdown_test stops and restarts PostgreSQL under the webhook
// receiver. It is its own test binary, so that it owns its throwaway cluster:
// stopping the server cannot disturb the parallel tests of pkg/webhook, nor
// leave their connection pools holding dead connections.
package dbdown_test

import (
	"os"
	"testing"

	"github.com/creditgate/creditgate/pkg/pgtest"
)

// TestMain starts one throwaway PostgreSQL for this package alone.
func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
