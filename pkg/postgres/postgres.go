// Package postgres implements ledger.Store on PostgreSQL with bun. It owns the
// SQL, the row structs, the mapping of SQLSTATE codes to ledger's sentinel
// errors, and the migrator.
package postgres

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"time"

	"github.com/exaring/otelpgx"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/multitracer"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/pgdialect"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/creditgate/creditgate/pkg/ledger"
)

// ErrInvalidURL is a database URL that cannot be parsed. It never carries the
// URL: that holds a password.
var ErrInvalidURL = errors.New("not a valid PostgreSQL URL (postgres://user:password@host:5432/dbname?sslmode=require, " +
	"with special characters in the password percent-encoded) or key=value connection string")

// CheckURL reports whether url is a connection string Open accepts, without
// connecting.
func CheckURL(url string) error {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return ErrInvalidURL
	}
	if cfg.ConnConfig.DefaultQueryExecMode == pgx.QueryExecModeDescribeExec {
		return ErrDescribeExec
	}
	return nil
}

// Options configures Open.
type Options struct {
	// MaxConns bounds the pool; 0 means 10.
	MaxConns int
	// Tracing traces every statement pgx sends, bun's and the hot paths'
	// alike (otelpgx: a span per statement named by its operation, and
	// OTel's database client metrics). The statement's text is left out of
	// the spans: bun's statements carry their values inline, and those
	// include personal data.
	Tracing bool
	// TracerProvider is the provider Tracing uses; nil means OTel's global
	// one.
	TracerProvider trace.TracerProvider
	// LockTimeout bounds every wait for a row lock (PostgreSQL's
	// lock_timeout, set once per connection); 0 waits forever. A delivery
	// whose user row another transaction holds then fails as unavailable
	// (503, retried) instead of keeping its connection for as long as the
	// other holds the row.
	LockTimeout time.Duration
	// Tracer, if set, sees every statement pgx sends (the benchmark uses it
	// to take the service's SQL from the code that sends it).
	Tracer pgx.QueryTracer
}

// Open connects to the database at url through a pgx pool (pgxpool) under
// bun. It does not connect; use Ready for that.
//
// The pool, not database/sql, hands out connections: database/sql keeps
// none idle and opens each through the pool, whose waiters are served first
// come, first served (database/sql gives a freed connection to a random
// waiter, which made the latency tail). Everyone on the handle (deliveries,
// the outbox worker, the credits API, the gauges) waits in that one queue.
//
// url's default_query_exec_mode (pgx's; cache_statement when absent) is the
// mode of the hot paths' statements: cache_statement prepares each once per
// connection; exec or simple_protocol send them whole, as PgBouncer in
// transaction mode before 1.21 needs. bun's own statements always go as
// simple queries: bun writes their values into the text.
func Open(url string, opts Options) (*bun.DB, error) {
	pcfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// pgx's message may echo the URL, password included: keep it out.
		return nil, ErrInvalidURL
	}
	cfg := pcfg.ConnConfig
	mode := cfg.DefaultQueryExecMode
	if mode == pgx.QueryExecModeDescribeExec {
		return nil, ErrDescribeExec
	}
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	var tracers []pgx.QueryTracer
	if opts.Tracing {
		topts := []otelpgx.Option{otelpgx.WithDisableSQLStatementInAttributes(),
			otelpgx.WithTracerAttributes(attribute.String("db.namespace", "creditgate"))}
		if opts.TracerProvider != nil {
			topts = append(topts, otelpgx.WithTracerProvider(opts.TracerProvider))
		}
		tracers = append(tracers, otelpgx.NewTracer(topts...))
	}
	if opts.Tracer != nil {
		tracers = append(tracers, opts.Tracer)
	}
	switch len(tracers) {
	case 1:
		cfg.Tracer = tracers[0]
	case 2:
		cfg.Tracer = multitracer.New(tracers...)
	}
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = map[string]string{}
	}
	if _, ok := cfg.RuntimeParams["application_name"]; !ok {
		cfg.RuntimeParams["application_name"] = "creditgate"
	}
	if opts.LockTimeout > 0 {
		// Per connection, not as a startup parameter: PgBouncer refuses
		// startup parameters it does not know. (Behind PgBouncer in
		// transaction mode a SET does not follow the client: set it for the
		// role there too; docs/database.md.)
		set := fmt.Sprintf("SET lock_timeout = %d", opts.LockTimeout.Milliseconds())
		pcfg.AfterConnect = func(ctx context.Context, conn *pgx.Conn) error {
			_, err := conn.Exec(ctx, set)
			return err
		}
	}
	n := opts.MaxConns
	if n <= 0 {
		n = 10
	}
	pcfg.MaxConns = int32(n)
	pcfg.MinConns = 0
	pcfg.MaxConnIdleTime = 5 * time.Minute
	pcfg.MaxConnLifetime = 30 * time.Minute
	pool, err := pgxpool.NewWithConfig(context.Background(), pcfg)
	if err != nil {
		return nil, fmt.Errorf("database pool: %w", err)
	}
	sqldb := sql.OpenDB(&poolConnector{Connector: stdlib.GetPoolConnector(pool),
		driver: &poolDriver{Driver: stdlib.GetDefaultDriver(), pool: pool, mode: mode}})
	// Every connection comes from the pool and goes back to it at once:
	// database/sql keeps none, so that it never queues anyone itself.
	sqldb.SetMaxIdleConns(0)
	return bun.NewDB(sqldb, pgdialect.New()), nil
}

// ErrDescribeExec refuses pgx's describe_exec mode, which PgBouncer breaks
// (the describe and the execute may reach different server connections)
// and which has no advantage here.
var ErrDescribeExec = errors.New("default_query_exec_mode=describe_exec is not supported: " +
	"use cache_statement (the default), or exec behind PgBouncer in transaction mode")

// poolConnector opens database/sql's connections from a pgx pool and closes
// the pool with the sql.DB.
type poolConnector struct {
	driver.Connector
	driver *poolDriver
}

func (c *poolConnector) Driver() driver.Driver { return c.driver }

func (c *poolConnector) Close() error {
	c.driver.pool.Close()
	return nil
}

// poolDriver is how a handle's pool and statement mode are found again
// (sql.DB hands out its connector's driver, nothing else of it).
type poolDriver struct {
	driver.Driver
	pool *pgxpool.Pool
	mode pgx.QueryExecMode
}

// Pool returns the pgx pool under db (nil for a handle Open did not make).
func Pool(db *bun.DB) *pgxpool.Pool {
	if d, ok := db.DB.Driver().(*poolDriver); ok {
		return d.pool
	}
	return nil
}

// statementMode is the hot paths' statement mode on db.
func statementMode(db *bun.DB) pgx.QueryExecMode {
	if d, ok := db.DB.Driver().(*poolDriver); ok {
		return d.mode
	}
	return pgx.QueryExecModeCacheStatement
}

// Store is the bun implementation of ledger.Store.
type Store struct {
	db *bun.DB
	// pool is the pgx pool under db, which the hot paths use directly.
	pool *pgxpool.Pool
	// mode is how the hot paths send their statements (Open).
	mode pgx.QueryExecMode
}

var _ ledger.Store = (*Store)(nil)

// NewStore returns a Store over db.
func NewStore(db *bun.DB) *Store { return &Store{db: db, pool: Pool(db), mode: statementMode(db)} }

// DB returns the underlying handle (for tests and the reconciler's queries).
func (s *Store) DB() *bun.DB { return s.db }

// maxTxAttempts bounds the in-service retries of deadlocks and serialization
// failures before the sender is asked to retry.
const maxTxAttempts = 5

// inTx runs fn in one transaction, retrying it from the start when PostgreSQL
// aborts it for a deadlock or a serialization failure, so that such races
// never surface as a 5xx.
func (s *Store) inTx(ctx context.Context, fn func(ctx context.Context, tx bun.Tx) error) error {
	var err error
	for attempt := 1; ; attempt++ {
		err = s.db.RunInTx(ctx, nil, fn)
		if err == nil || attempt == maxTxAttempts || !isRetryable(err) {
			return mapError(err)
		}
		select {
		case <-ctx.Done():
			return mapError(ctx.Err())
		case <-time.After(time.Duration(attempt*attempt) * 5 * time.Millisecond):
		}
	}
}

func isRetryable(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "40001", "40P01": // serialization_failure, deadlock_detected
			return true
		}
	}
	return false
}

// mapError turns driver errors into ledger's sentinels: a balance check
// becomes ErrInsufficientCredits; a value refused for what it is (SQLSTATE
// classes 22 and 54: out of range, too long for an index) becomes
// ErrInvalidData, final; a missing table, column or function means the schema
// is behind this binary (migrations not applied yet) and becomes
// ErrUnavailable, as /readyz says; an integrity or SQL error (a bug, which a
// retry cannot fix) stays as it is; anything else (connection lost,
// shutdown, timeout, deadlock, a lock not granted in time) becomes
// ErrUnavailable, because a later retry can succeed. The original error
// stays wrapped for logs.
func mapError(err error) error {
	if err == nil {
		return nil
	}
	for _, sentinel := range []error{ledger.ErrUnavailable, ledger.ErrInvalidData, ledger.ErrInsufficientCredits,
		ledger.ErrNotFound, ledger.ErrIdempotencyKeyReused, ledger.ErrInvalidRequest, ledger.ErrAccountClosed,
		ledger.ErrHoldExpired, ledger.ErrHoldNotActive, ledger.ErrExceedsRefundable, ledger.ErrNotADebit} {
		if errors.Is(err, sentinel) {
			return err // already ledger's word for it
		}
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && len(pgErr.Code) == 5 {
		switch class := pgErr.Code[:2]; {
		case pgErr.Code == "23514" && (pgErr.ConstraintName == "users_available_credits_check" ||
			pgErr.ConstraintName == "users_used_credits_check"):
			return fmt.Errorf("%w: %w", ledger.ErrInsufficientCredits, err)
		case class == "22" || class == "54":
			return fmt.Errorf("%w: %w", ledger.ErrInvalidData, err)
		case pgErr.Code == "42P01" || pgErr.Code == "42703" || pgErr.Code == "42883" || pgErr.Code == "42704":
			return fmt.Errorf("%w: %w (%w)", ledger.ErrUnavailable, ErrSchemaBehind, err)
		case class == "23" || class == "42" || class == "P0":
			return err
		}
	}
	return fmt.Errorf("%w: %w", ledger.ErrUnavailable, err)
}
