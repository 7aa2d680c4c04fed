package reconcile_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/uptrace/bun"

	"github.com/creditgate/creditgate/pkg/clerk"
	"github.com/creditgate/creditgate/pkg/clerk/clerkevent"
	"github.com/creditgate/creditgate/pkg/ledger"
	"github.com/creditgate/creditgate/pkg/pgtest"
	"github.com/creditgate/creditgate/pkg/postgres"
	"github.com/creditgate/creditgate/pkg/reconcile"
)

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

func testConfig() reconcile.Config {
	return reconcile.Config{
		SignupCredits: 20, Grace: 0, MaxEventAttempts: 3,
		EventBatch: 1000, UserBatch: 1000, OutboxBatch: 1000,
		BackfillPageSize: 100, BackfillMaxPages: 50, BackfillOverlap: time.Minute,
		OutboxMaxAttempts: 5,
	}
}

func newReconciler(db *bun.DB, store ledger.Store) *reconcile.Reconciler {
	ps := postgres.NewStore(db)
	if store == nil {
		store = ps
	}
	return &reconcile.Reconciler{
		Store:   ps,
		Service: &ledger.Service{Store: store, Decode: clerk.Decode, SignupCredits: 20, ForfeitOnDelete: true},
		Metrics: reconcile.NewMetrics(prometheus.NewRegistry()),
		Log:     discard,
		Config:  testConfig(),
	}
}

func exec(t *testing.T, db bun.IDB, q string, args ...any) {
	t.Helper()
	if _, err := db.ExecContext(context.Background(), q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

func scalar[T any](t *testing.T, db bun.IDB, q string, args ...any) T {
	t.Helper()
	var v T
	if err := db.NewRaw(q, args...).Scan(context.Background(), &v); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return v
}

// storeFailedEvent leaves an event as a crashed or failed delivery would.
func storeFailedEvent(t *testing.T, db bun.IDB, svixID, body string) {
	t.Helper()
	exec(t, db, `INSERT INTO webhook_events (svix_id, event_type, clerk_user_id, payload, status, attempts, last_error, received_at)
		VALUES (?, 'user.created', 'x', ?::jsonb, 'failed', 1, 'connection reset', now() - interval '1 hour')`, svixID, body)
}

func userCreated(id, email string) string {
	return string(clerkevent.Event{Type: clerkevent.UserCreated, UserID: id, Email: email, At: time.UnixMilli(1700000000000)}.MustBody())
}

func TestFailedEventIsReRun(t *testing.T) {
	t.Parallel()
	db, _ := pgtest.New(t)
	storeFailedEvent(t, db, "msg_failed", userCreated("user_f", "f@example.com"))
	sum, err := newReconciler(db, nil).Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if sum.Events.Found != 1 || sum.Events.Done != 1 || sum.Outcome != "success" {
		t.Errorf("summary = %+v", sum)
	}
	if got := scalar[string](t, db, "SELECT status || ':' || attempts FROM webhook_events WHERE svix_id = 'msg_failed'"); got != "processed:2" {
		t.Errorf("event = %s, want processed:2", got)
	}
	if got := scalar[int64](t, db, "SELECT available_credits FROM users WHERE clerk_id = 'user_f'"); got != 20 {
		t.Errorf("available = %d, want 20", got)
	}
	pgtest.CheckInvariants(t, db)
}

// failingStore fails every user change of one svix id, as a persistent fault would.
type failingStore struct {
	ledger.Store
	svixID string
}

func (f failingStore) ApplyUserChange(ctx context.Context, c ledger.UserChange) (ledger.Result, error) {
	if c.Delivery.SvixID == f.svixID {
		return ledger.Result{}, fmt.Errorf("injected: %w", ledger.ErrUnavailable)
	}
	return f.Store.ApplyUserChange(ctx, c)
}

func TestPermanentlyFailingEventEndsDead(t *testing.T) {
	t.Parallel()
	db, _ := pgtest.New(t)
	storeFailedEvent(t, db, "msg_doomed", userCreated("user_d", "d@example.com"))
	rec := newReconciler(db, failingStore{Store: postgres.NewStore(db), svixID: "msg_doomed"})
	var dead int
	for run := 1; run <= 4; run++ {
		sum, err := rec.Run(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		dead += sum.Events.Dead
		status := scalar[string](t, db, "SELECT status || ':' || attempts FROM webhook_events WHERE svix_id = 'msg_doomed'")
		// attempts: 1 from the webhook, +1 per run; dead once 3 are used.
		want := map[int]string{1: "failed:2", 2: "dead:3", 3: "dead:3", 4: "dead:3"}[run]
		if status != want {
			t.Errorf("after run %d: event %s, want %s", run, status, want)
		}
	}
	if dead != 1 {
		t.Errorf("parked %d times, want once", dead)
	}
	if n := scalar[int](t, db, "SELECT count(*) FROM users"); n != 0 {
		t.Errorf("users = %d, want 0", n)
	}
}

func TestMissingSignupCredit(t *testing.T) {
	t.Parallel()
	db, _ := pgtest.New(t)
	ctx := context.Background()
	// An old code path made a user without the credit; another user spent
	// everything; a third is deleted without credit.
	exec(t, db, "INSERT INTO users (clerk_id) VALUES ('user_nocredit')")
	exec(t, db, "INSERT INTO users (clerk_id, deleted_at) VALUES ('user_gone', now())")
	exec(t, db, "INSERT INTO users (clerk_id, available_credits) VALUES ('user_spent', 20)")
	exec(t, db, `INSERT INTO credit_transactions (user_id, clerk_id, amount, type, reason, idempotency_key)
		SELECT id, clerk_id, 20, 'credit', 'signup_bonus', 'signup:user_spent' FROM users WHERE clerk_id = 'user_spent'`)
	exec(t, db, `WITH d AS (INSERT INTO credit_transactions (user_id, clerk_id, amount, type, reason, idempotency_key)
		SELECT id, clerk_id, 20, 'debit', 'usage', 'usage:1' FROM users WHERE clerk_id = 'user_spent' RETURNING user_id)
		UPDATE users SET available_credits = 0, used_credits = 20 FROM d WHERE users.id = d.user_id`)
	pgtest.CheckInvariants(t, db)

	rec := newReconciler(db, nil)
	first, err := rec.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if first.Signup.Found != 1 || first.Signup.Done != 1 {
		t.Errorf("first run signup pass = %+v, want 1 found, 1 granted", first.Signup)
	}
	before := snapshot(t, db)
	second, err := rec.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if second.Signup.Found != 0 || second.Events.Found != 0 {
		t.Errorf("second run found work: %+v", second)
	}
	if diff := cmp.Diff(before, snapshot(t, db)); diff != "" {
		t.Errorf("second run changed the ledger (-before +after):\n%s", diff)
	}
	for id, want := range map[string]string{"user_nocredit": "20/0", "user_spent": "0/20", "user_gone": "0/0"} {
		if got := scalar[string](t, db, "SELECT available_credits || '/' || used_credits FROM users WHERE clerk_id = ?", id); got != want {
			t.Errorf("%s available/used = %s, want %s", id, got, want)
		}
	}
	pgtest.CheckInvariants(t, db)
}

// snapshot is a checksum of every table the reconciler may touch.
func snapshot(t *testing.T, db bun.IDB) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, table := range []string{"users", "credit_transactions", "webhook_events", "clerk_metadata_outbox", "reconcile_state", "reconcile_runs"} {
		out[table] = scalar[string](t, db, fmt.Sprintf(
			"SELECT count(*) || ':' || COALESCE(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM %s t", table))
	}
	return out
}

func TestDryRunChangesNothing(t *testing.T) {
	t.Parallel()
	db, _ := pgtest.New(t)
	exec(t, db, "INSERT INTO users (clerk_id) VALUES ('user_nocredit')")
	storeFailedEvent(t, db, "msg_failed", userCreated("user_f", "f@example.com"))
	rec := newReconciler(db, nil)
	rec.Config.DryRun = true
	before := snapshot(t, db)
	sum, err := rec.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(before, snapshot(t, db)); diff != "" {
		t.Errorf("dry run changed the database (-before +after):\n%s", diff)
	}
	if sum.Events.Found != 1 || sum.Signup.Found != 1 || sum.Events.Done+sum.Signup.Done != 0 || !sum.DryRun {
		t.Errorf("dry run summary = %+v, want 1 event and 1 user found, nothing done", sum)
	}
	// It names them, so an operator sees which.
	if diff := cmp.Diff([]string{"msg_failed"}, sum.Events.Items); diff != "" {
		t.Errorf("dry run events (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"user_nocredit"}, sum.Signup.Items); diff != "" {
		t.Errorf("dry run users (-want +got):\n%s", diff)
	}
}

func TestLedgerDriftIsReportedNotFixed(t *testing.T) {
	t.Parallel()
	db, _ := pgtest.New(t)
	exec(t, db, "INSERT INTO users (clerk_id, available_credits) VALUES ('user_drift', 500)")
	exec(t, db, `INSERT INTO credit_transactions (user_id, clerk_id, amount, type, reason, idempotency_key)
		SELECT id, clerk_id, 20, 'credit', 'signup_bonus', 'signup:user_drift' FROM users WHERE clerk_id = 'user_drift'`)
	sum, err := newReconciler(db, nil).Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if sum.Drift != 1 {
		t.Errorf("drift = %d, want 1", sum.Drift)
	}
	if got := scalar[int64](t, db, "SELECT available_credits FROM users WHERE clerk_id = 'user_drift'"); got != 500 {
		t.Errorf("balance = %d: the audit must not overwrite it", got)
	}
	b, err := postgres.NewStore(db).Backlog(context.Background())
	if err != nil || b.LedgerDriftUsers != 1 {
		t.Errorf("backlog = %+v, %v; want 1 drifting user", b, err)
	}
}

func TestConcurrentReconcilersWithLiveDuplicates(t *testing.T) {
	t.Parallel()
	db, _ := pgtest.New(t)
	ctx := context.Background()
	const users = 100
	// Half the users exist without their credit (lost side effects), all
	// of them also have a failed event waiting, and the webhook receives
	// duplicates of every user's event while two reconcilers run.
	for i := range users {
		id := fmt.Sprintf("user_c%03d", i)
		if i%2 == 0 {
			exec(t, db, "INSERT INTO users (clerk_id) VALUES (?)", id)
		}
		storeFailedEvent(t, db, "msg_failed_"+id, userCreated(id, id+"@example.com"))
	}
	svc := &ledger.Service{Store: postgres.NewStore(db), Decode: clerk.Decode, SignupCredits: 20}
	var wg sync.WaitGroup
	// Room for every error there can be (2 runs, 4 workers × 2 deliveries
	// per user), so that no sender blocks and the test fails instead of
	// hanging.
	errs := make(chan error, 2+4*2*users)
	start := make(chan struct{})
	sums := make([]reconcile.Summary, 2)
	for r := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			s, err := newReconciler(db, nil).Run(ctx)
			sums[r] = s
			if err != nil {
				errs <- err
			}
		}()
	}
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for i := range users {
				id := fmt.Sprintf("user_c%03d", i)
				for _, svixID := range []string{"msg_live_" + id, "msg_failed_" + id} {
					if _, err := svc.Process(ctx, ledger.Delivery{SvixID: svixID, Body: []byte(userCreated(id, id+"@example.com")), ReceivedAt: time.Now()}); err != nil {
						errs <- fmt.Errorf("worker %d %s: %w", w, svixID, err)
					}
				}
			}
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if !errors.Is(err, context.Canceled) {
			t.Error(err)
		}
	}
	if n := scalar[int](t, db, "SELECT count(*) FROM users"); n != users {
		t.Errorf("users = %d, want %d", n, users)
	}
	if n := scalar[int](t, db, "SELECT count(*) FROM credit_transactions WHERE reason = 'signup_bonus'"); n != users {
		t.Errorf("signup credits = %d, want exactly one for each of %d users", n, users)
	}
	if n := scalar[int](t, db, "SELECT count(*) FROM users WHERE available_credits <> 20"); n != 0 {
		t.Errorf("%d users do not hold exactly 20", n)
	}
	pgtest.CheckInvariants(t, db)
}
