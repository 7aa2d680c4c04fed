// Package postgres implements ledger.Store on PostgreSQL with bun. It owns the
// SQL, the row structs, the mapping of SQLSTATE codes to ledger's sentinel
// errors, and the migrator.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/exaring/otelpgx"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/multitracer"
	"github.com/jackc/pgx/v5/pgconn"
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
	if _, err := pgx.ParseConfig(url); err != nil {
		return ErrInvalidURL
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

// Open connects to the database at url. It does not ping; use Ready for that.
func Open(url string, opts Options) (*bun.DB, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		// pgx's message may echo the URL, password included: keep it out.
		return nil, ErrInvalidURL
	}
	// bun formats arguments into the SQL text itself, so server-side prepared
	// statements would only fill pgx's cache with one-off texts.
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	var tracers []pgx.QueryTracer
	if opts.Tracing {
		topts := []otelpgx.Option{otelpgx.WithDisableSQLStatementInAttributes(),
			otelpgx.WithAttributes(attribute.String("db.namespace", "creditgate"))}
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
	var connOpts []stdlib.OptionOpenDB
	if opts.LockTimeout > 0 {
		// Per connection, not as a startup parameter: PgBouncer refuses
		// startup parameters it does not know.
		set := fmt.Sprintf("SET lock_timeout = %d", opts.LockTimeout.Milliseconds())
		connOpts = append(connOpts, stdlib.OptionAfterConnect(func(ctx context.Context, conn *pgx.Conn) error {
			_, err := conn.Exec(ctx, set)
			return err
		}))
	}
	sqldb := stdlib.OpenDB(*cfg, connOpts...)
	n := opts.MaxConns
	if n <= 0 {
		n = 10
	}
	sqldb.SetMaxOpenConns(n)
	sqldb.SetMaxIdleConns(n)
	sqldb.SetConnMaxIdleTime(5 * time.Minute)
	sqldb.SetConnMaxLifetime(30 * time.Minute)

	return bun.NewDB(sqldb, pgdialect.New()), nil
}

// Store is the bun implementation of ledger.Store.
type Store struct {
	db *bun.DB
}

var _ ledger.Store = (*Store)(nil)

// NewStore returns a Store over db.
func NewStore(db *bun.DB) *Store { return &Store{db: db} }

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
