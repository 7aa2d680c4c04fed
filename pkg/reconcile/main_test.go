package reconcile_test

import (
	"os"
	"testing"

	"github.com/creditgate/creditgate/pkg/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
