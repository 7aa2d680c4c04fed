package postgres_test

import (
	"context"
	"io/fs"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/uptrace/bun"

	"github.com/creditgate/creditgate/migrations"
	"github.com/creditgate/creditgate/pkg/pgtest"
	"github.com/creditgate/creditgate/pkg/postgres"
)

type runRow struct {
	Outcome  string
	Finished bool
	Error    string
}

func runs(t *testing.T, db *bun.DB) []runRow {
	t.Helper()
	var rows []runRow
	err := db.NewRaw("SELECT outcome, finished_at IS NOT NULL AS finished, COALESCE(error, '') AS error FROM reconcile_runs ORDER BY id").
		Scan(context.Background(), &rows)
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

func TestAbandonRuns(t *testing.T) {
	t.Parallel()
	db, _ := pgtest.New(t)
	store := postgres.NewStore(db)
	ctx := context.Background()
	// Two runs killed before they recorded their end, around a finished one.
	for range 2 {
		if _, err := store.StartRun(ctx); err != nil {
			t.Fatal(err)
		}
	}
	done, err := store.StartRun(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.FinishRun(ctx, done, postgres.RunSuccess, map[string]int{}, nil); err != nil {
		t.Fatal(err)
	}

	n, err := store.AbandonRuns(ctx)
	if err != nil || n != 2 {
		t.Fatalf("AbandonRuns = %d, %v; want 2", n, err)
	}
	got := runs(t, db)
	for i, r := range got {
		if i < 2 && (r.Outcome != postgres.RunAbandoned || !r.Finished || !strings.Contains(r.Error, "never recorded its end")) {
			t.Errorf("killed run %d = %+v, want abandoned, finished, with the reason", i, r)
		}
	}
	if want := (runRow{Outcome: postgres.RunSuccess, Finished: true}); got[2] != want {
		t.Errorf("finished run = %+v, want it untouched", got[2])
	}
	if n, err := store.AbandonRuns(ctx); err != nil || n != 0 {
		t.Errorf("second AbandonRuns = %d, %v; want 0", n, err)
	}
	if diff := cmp.Diff(got, runs(t, db)); diff != "" {
		t.Errorf("second AbandonRuns changed runs (-before +after):\n%s", diff)
	}
}

// TestAbandonedMigrationDown checks that the down migration of 'abandoned'
// leaves rows the old CHECK accepts, and that up and down apply cleanly.
func TestAbandonedMigrationDown(t *testing.T) {
	t.Parallel()
	db, _ := pgtest.New(t)
	store := postgres.NewStore(db)
	ctx := context.Background()
	if _, err := store.StartRun(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := store.AbandonRuns(ctx); err != nil {
		t.Fatal(err)
	}
	exec := func(name string) {
		t.Helper()
		b, err := fs.ReadFile(migrations.FS(), name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.ExecContext(ctx, string(b)); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	exec("20261201000001_reconcile_abandoned.tx.down.sql")
	if got := runs(t, db); len(got) != 1 || got[0].Outcome != postgres.RunFailed || !strings.Contains(got[0].Error, "never recorded its end") {
		t.Errorf("after down: runs = %+v, want the abandoned run failed with its reason", got)
	}
	if _, err := db.ExecContext(ctx, "INSERT INTO reconcile_runs (outcome) VALUES ('abandoned')"); err == nil {
		t.Error("after down: an abandoned run was accepted")
	}
	exec("20261201000001_reconcile_abandoned.tx.up.sql")
	if _, err := db.ExecContext(ctx, "INSERT INTO reconcile_runs (outcome) VALUES ('abandoned')"); err != nil {
		t.Errorf("after up again: %v", err)
	}
}
