package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/migrate"

	"github.com/creditgate/creditgate/migrations"
)

// migrateLockKey is the PostgreSQL advisory lock that serializes creditgate
// migrators (two hook Jobs, a developer and a Job) before bun's own lock.
const migrateLockKey = 0x63726564 // "cred"

func newMigrator(db *bun.DB) (*migrate.Migrator, error) {
	ms := migrate.NewMigrations()
	if err := ms.Discover(migrations.FS()); err != nil {
		return nil, fmt.Errorf("discover migrations: %w", err)
	}
	return migrate.NewMigrator(db, ms, migrate.WithMarkAppliedOnSuccess(true)), nil
}

// Migrate applies every embedded migration not yet applied, each in its own
// transaction, under bun's migration lock, and marks a migration applied only
// when it succeeded. Running it again is a no-op. It returns the names applied.
func Migrate(ctx context.Context, db *bun.DB, log *slog.Logger) ([]string, error) {
	m, err := newMigrator(db)
	if err != nil {
		return nil, err
	}
	// bun's lock is a row that a killed migrator leaves behind. Waiting on an
	// advisory lock first means that whoever holds it is the only migrator
	// alive, so a lock row found then is stale and safe to clear.
	release, _, err := xactLock(ctx, db, migrateLockKey, true)
	if err != nil {
		return nil, fmt.Errorf("migrate: take advisory lock: %w", mapError(err))
	}
	defer release()

	if err := m.Init(ctx); err != nil {
		return nil, fmt.Errorf("migrate: init: %w", mapError(err))
	}
	if err := m.Lock(ctx); err != nil {
		log.WarnContext(ctx, "clearing a stale migration lock left by an interrupted migrator")
		if uerr := m.Unlock(ctx); uerr != nil {
			return nil, fmt.Errorf("migrate: clear stale lock: %w", uerr)
		}
		if err := m.Lock(ctx); err != nil {
			return nil, fmt.Errorf("migrate: lock: %w", err)
		}
	}
	defer func() {
		if err := m.Unlock(context.WithoutCancel(ctx)); err != nil {
			log.ErrorContext(ctx, "release migration lock", "error", err)
		}
	}()

	group, err := m.Migrate(ctx)
	var applied []string
	if group != nil {
		for _, mig := range group.Migrations {
			applied = append(applied, mig.Name)
		}
		if err != nil && len(applied) > 0 {
			applied = applied[:len(applied)-1] // the last one is the one that failed
		}
	}
	if err != nil {
		return applied, fmt.Errorf("migrate: %w", err)
	}
	return applied, nil
}

// MigrationStatus is one migration and whether it is applied.
type MigrationStatus struct {
	Name    string
	Comment string
	Applied bool
}

// Migrations lists the embedded migrations with their state in the database.
func Migrations(ctx context.Context, db *bun.DB) ([]MigrationStatus, error) {
	m, err := newMigrator(db)
	if err != nil {
		return nil, err
	}
	if err := m.Init(ctx); err != nil {
		return nil, fmt.Errorf("migration status: init: %w", mapError(err))
	}
	ms, err := m.MigrationsWithStatus(ctx)
	if err != nil {
		return nil, fmt.Errorf("migration status: %w", mapError(err))
	}
	out := make([]MigrationStatus, 0, len(ms))
	for _, mig := range ms {
		out = append(out, MigrationStatus{Name: mig.Name, Comment: mig.Comment, Applied: mig.IsApplied()})
	}
	return out, nil
}

// ErrSchemaBehind means the database lacks migrations this binary needs.
var ErrSchemaBehind = errors.New("database schema is behind this binary: run `webhook migrate`")

// Ready reports whether the database answers and holds every migration this
// binary embeds. A database ahead of the binary (a newer release migrated it
// during a rolling upgrade) is ready.
func Ready(ctx context.Context, db *bun.DB) error {
	names, err := embeddedNames()
	if err != nil {
		return err
	}
	var applied []string
	if err := db.NewSelect().Table("bun_migrations").Column("name").Scan(ctx, &applied); err != nil {
		return fmt.Errorf("read applied migrations: %w", mapError(err))
	}
	have := make(map[string]bool, len(applied))
	for _, n := range applied {
		have[n] = true
	}
	for _, n := range names {
		if !have[n] {
			return fmt.Errorf("%w (missing %s)", ErrSchemaBehind, n)
		}
	}
	return nil
}

// embeddedNames lists the migrations this binary embeds, read once.
var embeddedNames = sync.OnceValues(func() ([]string, error) {
	ms := migrate.NewMigrations()
	if err := ms.Discover(migrations.FS()); err != nil {
		return nil, fmt.Errorf("discover migrations: %w", err)
	}
	var names []string
	for _, m := range ms.Sorted() {
		names = append(names, m.Name)
	}
	return names, nil
})
