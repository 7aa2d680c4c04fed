// Package pgtest gives tests a real, migrated PostgreSQL database each: a
// template database is migrated once per test binary and every test gets a
// fresh clone of it (the exposure-notifications pattern). The server is a
// throwaway local cluster (pkg/pglocal) unless TEST_DATABASE_URL names one.
//
// With TEST_PGBOUNCER set (to a pgx statement mode, exec or simple_protocol;
// any other value means exec), the tests' handles and URLs reach the server
// through a PgBouncer in transaction mode that pgtest starts (pglocal), as a
// team running PgBouncer before 1.21 would configure creditgate; the
// template is migrated through it too, only CREATE and DROP DATABASE go to
// the server directly.
package pgtest

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"testing"

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
	// clientURL is where tests connect: baseURL, or the bouncer in front of
	// it with the statement mode set.
	clientURL     *url.URL
	bouncer       *pglocal.Bouncer
	statementMode string // "" without a bouncer
	admin         *bun.DB
	counter       atomic.Int64
	// createMu serialises this process's CREATE DATABASE … TEMPLATE: two at
	// once from one template fail ("being accessed by other users"). Other
	// processes have templates of their own.
	createMu sync.Mutex
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
	if bouncer != nil {
		_ = bouncer.Close()
	}
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
	name := "TEST_DATABASE_URL"
	if os.Getenv(name) == "" {
		name = sharedURLEnv
	}
	if raw := os.Getenv(name); raw != "" {
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
	clientURL = baseURL
	if mode := os.Getenv("TEST_PGBOUNCER"); mode != "" {
		statementMode = "exec"
		if mode == "simple_protocol" {
			statementMode = mode
		}
		if bouncer, err = pglocal.StartBouncer(ctx, baseURL.Host); err != nil {
			return fmt.Errorf("TEST_PGBOUNCER: %w", err)
		}
		u := *baseURL
		u.Host = bouncer.Addr
		q := u.Query()
		q.Set("default_query_exec_mode", statementMode)
		u.RawQuery = q.Encode()
		clientURL = &u
	}
	admin, err = postgres.Open(withDB(baseURL, "postgres"), postgres.Options{MaxConns: 2})
	if err != nil {
		return err
	}
	_, _ = admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+templateDB)
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+templateDB); err != nil {
		return fmt.Errorf("create template database: %w", err)
	}
	// Through the pooler when there is one: migrations must work there too.
	db, err := postgres.Open(withDB(clientURL, templateDB), postgres.Options{MaxConns: 2})
	if err != nil {
		return err
	}
	_, err = postgres.Migrate(ctx, db, slog.New(slog.DiscardHandler))
	db.Close()
	if err != nil {
		return fmt.Errorf("migrate template: %w", err)
	}
	if bouncer != nil {
		// The pooler keeps its server connections to the template, which
		// CREATE DATABASE … TEMPLATE refuses: end them.
		if _, err := admin.ExecContext(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = ?", templateDB); err != nil {
			return fmt.Errorf("disconnect the pooler from the template: %w", err)
		}
	}
	return nil
}

// withDB is u for database db.
func withDB(u *url.URL, db string) string {
	c := *u
	c.Path = "/" + db
	return c.String()
}

// Server returns the local cluster, or nil when tests run against
// TEST_DATABASE_URL (tests that stop the server then skip).
func Server() *pglocal.Server { return server }

// StatementMode is the statement mode tests' handles use through the
// pooler ("exec" or "simple_protocol"), or "" (pgx's default, prepared
// statements) without one.
func StatementMode() string { return statementMode }

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
	createMu.Lock()
	_, err := admin.ExecContext(ctx, "CREATE DATABASE "+name+" TEMPLATE "+templateDB)
	createMu.Unlock()
	if err != nil {
		t.Fatalf("create test database: %v", err)
	}
	u := withDB(clientURL, name)
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
