package postgres_test

import (
	"context"
	"io/fs"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/uptrace/bun"

	"github.com/creditgate/creditgate/migrations"
	"github.com/creditgate/creditgate/pkg/pgtest"
	"github.com/creditgate/creditgate/pkg/postgres"
)

// insertEvent stores an event row as the webhook and the reconciler leave
// them, received age ago.
func insertEvent(t *testing.T, db *bun.DB, svixID, status string, attempts int, age time.Duration) {
	t.Helper()
	_, err := db.ExecContext(context.Background(), `
INSERT INTO webhook_events (svix_id, event_type, clerk_user_id, payload, status, attempts, last_error, received_at)
VALUES (?, 'user.created', ?, ?::jsonb, ?, ?, ?, now() - ? * interval '1 second')`,
		svixID, "user_"+svixID, string(userCreated("user_"+svixID, "")), status, attempts, "boom "+svixID, age.Seconds())
	if err != nil {
		t.Fatalf("insert event %s: %v", svixID, err)
	}
}

// eventRow is what a requeue may change in an event.
type eventRow struct {
	Status    string
	Attempts  int
	LastError string
}

func events(t *testing.T, db *bun.DB) map[string]eventRow {
	t.Helper()
	var rows []postgres.EventRow
	if err := db.NewSelect().Model(&rows).Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	m := make(map[string]eventRow, len(rows))
	for _, r := range rows {
		m[r.SvixID] = eventRow{Status: r.Status, Attempts: r.Attempts, LastError: r.LastError.String}
	}
	return m
}

// requeueReport is a Requeue without the times, for comparing.
type requeueReport struct {
	Requeued []string
	NotDead  map[string]string
	NotFound []string
}

func report(r postgres.Requeue) requeueReport {
	out := requeueReport{Requeued: []string{}, NotDead: r.NotDead, NotFound: r.NotFound}
	for _, e := range r.Requeued {
		out.Requeued = append(out.Requeued, e.SvixID)
	}
	return out
}

func TestRequeueDeadEvents(t *testing.T) {
	t.Parallel()
	type call func(context.Context, *postgres.Store) (postgres.Requeue, error)
	byID := func(dryRun bool, ids ...string) call {
		return func(ctx context.Context, s *postgres.Store) (postgres.Requeue, error) {
			return s.RequeueDeadEvents(ctx, ids, dryRun)
		}
	}
	since := func(dryRun bool, ago time.Duration) call {
		return func(ctx context.Context, s *postgres.Store) (postgres.Requeue, error) {
			return s.RequeueDeadEventsSince(ctx, time.Now().Add(-ago), dryRun)
		}
	}
	tests := []struct {
		name string
		call call
		want requeueReport
		// again is what the same call reports when run a second time.
		again requeueReport
		// changed lists the events the call sets back to failed.
		changed []string
	}{
		{
			name:    "one id",
			call:    byID(false, "msg_dead_2h"),
			want:    requeueReport{Requeued: []string{"msg_dead_2h"}, NotDead: map[string]string{}, NotFound: []string{}},
			again:   requeueReport{Requeued: []string{}, NotDead: map[string]string{"msg_dead_2h": "failed"}, NotFound: []string{}},
			changed: []string{"msg_dead_2h"},
		},
		{
			name: "ids dead, not dead, unknown and repeated",
			call: byID(false, "msg_nope", "msg_dead_1h", "msg_processed", "msg_dead_3d", "msg_failed", "msg_dead_1h"),
			want: requeueReport{
				Requeued: []string{"msg_dead_3d", "msg_dead_1h"}, // oldest first
				NotDead:  map[string]string{"msg_processed": "processed", "msg_failed": "failed"},
				NotFound: []string{"msg_nope"},
			},
			again: requeueReport{
				Requeued: []string{},
				NotDead:  map[string]string{"msg_processed": "processed", "msg_failed": "failed", "msg_dead_1h": "failed", "msg_dead_3d": "failed"},
				NotFound: []string{"msg_nope"},
			},
			changed: []string{"msg_dead_1h", "msg_dead_3d"},
		},
		{
			name:  "unknown id only",
			call:  byID(false, "msg_nope"),
			want:  requeueReport{Requeued: []string{}, NotDead: map[string]string{}, NotFound: []string{"msg_nope"}},
			again: requeueReport{Requeued: []string{}, NotDead: map[string]string{}, NotFound: []string{"msg_nope"}},
		},
		{
			name:  "dry run by id",
			call:  byID(true, "msg_dead_1h", "msg_processed"),
			want:  requeueReport{Requeued: []string{"msg_dead_1h"}, NotDead: map[string]string{"msg_processed": "processed"}, NotFound: []string{}},
			again: requeueReport{Requeued: []string{"msg_dead_1h"}, NotDead: map[string]string{"msg_processed": "processed"}, NotFound: []string{}},
		},
		{
			name:    "since a day ago",
			call:    since(false, 24*time.Hour),
			want:    requeueReport{Requeued: []string{"msg_dead_2h", "msg_dead_1h"}},
			again:   requeueReport{Requeued: []string{}},
			changed: []string{"msg_dead_2h", "msg_dead_1h"},
		},
		{
			name:  "since now",
			call:  since(false, 0),
			want:  requeueReport{Requeued: []string{}},
			again: requeueReport{Requeued: []string{}},
		},
		{
			name:  "dry run since",
			call:  since(true, 90*time.Minute),
			want:  requeueReport{Requeued: []string{"msg_dead_1h"}},
			again: requeueReport{Requeued: []string{"msg_dead_1h"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			db, _ := pgtest.New(t)
			store := postgres.NewStore(db)
			ctx := context.Background()
			insertEvent(t, db, "msg_dead_3d", "dead", 10, 72*time.Hour)
			insertEvent(t, db, "msg_dead_2h", "dead", 10, 2*time.Hour)
			insertEvent(t, db, "msg_dead_1h", "dead", 12, time.Hour)
			insertEvent(t, db, "msg_failed", "failed", 3, time.Hour)
			insertEvent(t, db, "msg_processed", "processed", 1, time.Hour)
			before := events(t, db)

			got, err := tt.call(ctx, store)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, report(got)); diff != "" {
				t.Errorf("first call (-want +got):\n%s", diff)
			}
			want := map[string]eventRow{}
			for id, e := range before {
				for _, c := range tt.changed {
					if c == id {
						// Back to failed with a full set of attempts; the
						// last error stays for the operator.
						e = eventRow{Status: "failed", Attempts: 0, LastError: e.LastError}
					}
				}
				want[id] = e
			}
			after := events(t, db)
			if diff := cmp.Diff(want, after); diff != "" {
				t.Errorf("events after the first call (-want +got):\n%s", diff)
			}

			got, err = tt.call(ctx, store)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.again, report(got)); diff != "" {
				t.Errorf("second call (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(after, events(t, db)); diff != "" {
				t.Errorf("the second call changed events (-before +after):\n%s", diff)
			}
		})
	}
}

func TestRequeueReportsReceivedAt(t *testing.T) {
	t.Parallel()
	db, _ := pgtest.New(t)
	ctx := context.Background()
	insertEvent(t, db, "msg_dead", "dead", 10, time.Hour)
	got, err := postgres.NewStore(db).RequeueDeadEvents(ctx, []string{"msg_dead"}, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Requeued) != 1 {
		t.Fatalf("requeued %+v, want msg_dead", got.Requeued)
	}
	if age := time.Since(got.Requeued[0].ReceivedAt); age < 59*time.Minute || age > 61*time.Minute {
		t.Errorf("received_at %s is %s ago, want an hour", got.Requeued[0].ReceivedAt, age)
	}
}

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
