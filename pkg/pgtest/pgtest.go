// Package pgtest gives tests a real, migrated PostgreSQL database each: a
// template database is migrated once per test binary and every test gets a
// fresh clone of it (the exposure-notifications pattern). The server is a
// throwaway local cluster (pkg/pglocal) unless TEST_DATABASE_URL names one.
package pgtest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/creditgate/creditgate/pkg/pglocal"
	"github.com/creditgate/creditgate/pkg/postgres"
)

// templateDB is this test binary's template: one per process, so that test
// binaries (or fuzz workers) sharing one TEST_DATABASE_URL server never drop
// or clone each other's.
var templateDB = fmt.Sprintf("creditgate_template_%d", os.Getpid())

var (
	server  *pglocal.Server // nil when TEST_DATABASE_URL is used
	baseURL *url.URL
	admin   *bun.DB
	counter atomic.Int64
)

// Main starts PostgreSQL, migrates the template database, runs the tests and
// tears everything down. Use it as TestMain's body: os.Exit(pgtest.Main(m)).
func Main(m *testing.M) int {
	ctx := context.Background()
	if err := setup(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "pgtest:", err)
		return 1
	}
	code := m.Run()
	_, _ = admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+templateDB+" WITH (FORCE)")
	admin.Close()
	if server != nil {
		_ = server.Close()
	}
	return code
}

// sharedURLEnv passes the server this process started to the processes it
// starts itself: `go test -fuzz` runs the fuzz function in worker processes,
// children of this one, which would otherwise each start a server of their
// own (and leak it when the coordinator kills them at the end).
const sharedURLEnv = "CREDITGATE_PGTEST_PARENT_URL"

func setup(ctx context.Context) error {
	var err error
	raw, name := os.Getenv("TEST_DATABASE_URL"), "TEST_DATABASE_URL"
	if raw == "" {
		raw, name = os.Getenv(sharedURLEnv), sharedURLEnv
	}
	if raw != "" {
		if baseURL, err = url.Parse(raw); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	} else {
		server, err = pglocal.Start(ctx, pglocal.Options{})
		if err != nil {
			return fmt.Errorf("start PostgreSQL: %w (or set TEST_DATABASE_URL to a server whose user may CREATE DATABASE)", err)
		}
		baseURL, _ = url.Parse(server.URL("postgres"))
		if err := os.Setenv(sharedURLEnv, baseURL.String()); err != nil {
			return err
		}
	}
	admin, err = postgres.Open(urlFor("postgres"), postgres.Options{MaxConns: 2})
	if err != nil {
		return err
	}
	_, _ = admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+templateDB)
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+templateDB); err != nil {
		return fmt.Errorf("create template database: %w", err)
	}
	db, err := postgres.Open(urlFor(templateDB), postgres.Options{MaxConns: 2})
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := postgres.Migrate(ctx, db, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		return fmt.Errorf("migrate template: %w", err)
	}
	return nil
}

func urlFor(db string) string {
	u := *baseURL
	u.Path = "/" + db
	return u.String()
}

// Server returns the local cluster, or nil when tests run against
// TEST_DATABASE_URL (tests that stop the server then skip).
func Server() *pglocal.Server { return server }

// New returns a fresh migrated database for t, dropped when t ends, and its URL.
func New(t testing.TB) (*bun.DB, string) {
	t.Helper()
	return NewWith(t, postgres.Options{MaxConns: 40})
}

// NewWith is New with the handle opened with opts (a small pool, a tracer).
func NewWith(t testing.TB, opts postgres.Options) (*bun.DB, string) {
	t.Helper()
	ctx := context.Background()
	name := fmt.Sprintf("t_%d_%d", os.Getpid(), counter.Add(1))
	var err error
	for i := 0; i < 20; i++ {
		// CREATE DATABASE … TEMPLATE fails while another session is connected
		// to the template (a parallel clone); retry briefly.
		if _, err = admin.ExecContext(ctx, "CREATE DATABASE "+name+" TEMPLATE "+templateDB); err == nil ||
			!strings.Contains(err.Error(), "is being accessed by other users") {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("create test database: %v", err)
	}
	u := urlFor(name)
	db, err := postgres.Open(u, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		db.Close()
		_, _ = admin.ExecContext(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	})
	return db, u
}
