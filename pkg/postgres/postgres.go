// Package postgres implements ledger.Store on PostgreSQL with bun. It owns the
// SQL, the row structs, the mapping of SQLSTATE codes to ledger's sentinel
// errors, and the migrator.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/pgdialect"
	"github.com/uptrace/bun/extra/bunotel"

	"github.com/creditgate/creditgate/pkg/ledger"
)

// Options configures Open.
type Options struct {
	// MaxConns bounds the pool; 0 means 10.
	MaxConns int
	// Tracing adds bunotel's query hook (a span per query, OTel DB metrics).
	Tracing bool
}

// Open connects to the database at url. It does not ping; use Ready for that.
func Open(url string, opts Options) (*bun.DB, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		// pgx's message may echo the URL, password included: keep it out.
		return nil, errors.New("parse database url: invalid connection string")
	}
	// bun formats arguments into the SQL text itself, so server-side prepared
	// statements would only fill pgx's cache with one-off texts.
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = map[string]string{}
	}
	if _, ok := cfg.RuntimeParams["application_name"]; !ok {
		cfg.RuntimeParams["application_name"] = "creditgate"
	}
	sqldb := stdlib.OpenDB(*cfg)
	n := opts.MaxConns
	if n <= 0 {
		n = 10
	}
	sqldb.SetMaxOpenConns(n)
	sqldb.SetMaxIdleConns(n)
	sqldb.SetConnMaxIdleTime(5 * time.Minute)
	sqldb.SetConnMaxLifetime(30 * time.Minute)

	db := bun.NewDB(sqldb, pgdialect.New())
	if opts.Tracing {
		db.AddQueryHook(bunotel.NewQueryHook(bunotel.WithDBName("creditgate")))
	}
	return db, nil
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
// becomes ErrInsufficientCredits; a data, integrity or SQL error (a bug or bad
// data, which a retry cannot fix) stays as it is; anything else (connection
// lost, shutdown, timeout, deadlock) becomes ErrUnavailable, because a later
// retry can succeed. The original error stays wrapped for logs.
func mapError(err error) error {
	if err == nil {
		return nil
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case pgErr.Code == "23514" && (pgErr.ConstraintName == "users_available_credits_check" ||
			pgErr.ConstraintName == "users_used_credits_check"):
			return fmt.Errorf("%w: %w", ledger.ErrInsufficientCredits, err)
		case len(pgErr.Code) == 5 && (pgErr.Code[:2] == "22" || pgErr.Code[:2] == "23" ||
			pgErr.Code[:2] == "42" || pgErr.Code[:2] == "P0"):
			return err
		}
	}
	if errors.Is(err, ledger.ErrUnavailable) {
		return err
	}
	return fmt.Errorf("%w: %w", ledger.ErrUnavailable, err)
}
