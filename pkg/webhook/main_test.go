package webhook_test

import (
	"os"
	"testing"

	"github.com/creditgate/creditgate/pkg/pgtest"
)

// TestMain starts one throwaway PostgreSQL and migrates the template database
// that every test clones.
func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
