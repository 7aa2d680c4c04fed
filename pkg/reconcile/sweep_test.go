package reconcile_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/creditgate/creditgate/pkg/clerk/clerkfake"
	"github.com/creditgate/creditgate/pkg/ledger"
	"github.com/creditgate/creditgate/pkg/pgtest"
)

// seedUsers creates users through the webhook's path, old enough for the
// sweep, each holding its 20 signup credits.
func seedUsers(t *testing.T, svc *ledger.Service, ids ...string) {
	t.Helper()
	for _, id := range ids {
		if _, err := svc.Process(context.Background(), ledger.Delivery{SvixID: "msg_" + id, ReceivedAt: time.Now(),
			Body: []byte(`{"type":"user.created","data":{"id":"` + id + `","first_name":"Ada","email_addresses":[{"id":"e","email_address":"` + id + `@example.com"}],"primary_email_address_id":"e"}}`)}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSweepDeletesUsersGoneFromClerk: a user deleted in Clerk whose
// user.deleted never arrived is deleted exactly as user.deleted would do it
// (tombstone, credits forfeited, stored bodies scrubbed), exactly once; the
// others are untouched; the next round waits for SWEEP_INTERVAL.
func TestSweepDeletesUsersGoneFromClerk(t *testing.T) {
	t.Parallel()
	db, _ := pgtest.New(t)
	ctx := context.Background()
	fake, api := fakeClerk(t)
	r := withClerk(db, api)
	r.Service.MetadataOutbox = false
	r.Config.SweepInterval, r.Config.SweepBatch, r.Config.SweepMaxDeletions, r.Config.ForfeitOnDelete = 24*time.Hour, 1000, 10, true
	r.Config.SweepMinAge = time.Hour
	ids := []string{"user_a", "user_gone", "user_c", "user_young"}
	seedUsers(t, r.Service, ids...)
	exec(t, db, "UPDATE users SET created_at = now() - interval '2 hours' WHERE clerk_id <> 'user_young'")
	for _, id := range []string{"user_a", "user_c"} {
		fake.AddUser(clerkfake.User{ID: id, CreatedAt: time.Now().Add(-2 * time.Hour)})
	}

	r.Config.DryRun = true
	sum, err := r.Run(ctx)
	if err != nil || sum.Sweep.Found != 1 || sum.Sweep.Done != 0 || fmt.Sprint(sum.Sweep.Items) != "[user_gone]" {
		t.Fatalf("dry run sweep = %+v, %v; want 1 found, nothing done", sum.Sweep, err)
	}
	if n := scalar[int](t, db, "SELECT count(*) FROM users WHERE deleted_at IS NOT NULL"); n != 0 {
		t.Fatalf("a dry run deleted %d users", n)
	}
	r.Config.DryRun = false
	sum, err = r.Run(ctx)
	if err != nil || sum.Sweep.Found != 1 || sum.Sweep.Done != 1 || sum.Sweep.Error != "" {
		t.Fatalf("sweep = %+v, %v; want user_gone deleted", sum.Sweep, err)
	}
	got := scalar[string](t, db, `SELECT string_agg(clerk_id || ':' || (deleted_at IS NOT NULL) || ':' || available_credits || ':' || coalesce(email, '-'), ' ' ORDER BY id) FROM users`)
	if want := "user_a:false:20:user_a@example.com user_gone:true:0:- user_c:false:20:user_c@example.com user_young:false:20:user_young@example.com"; got != want {
		t.Errorf("users = %s\nwant    %s", got, want)
	}
	if n := scalar[int](t, db, "SELECT count(*) FROM credit_transactions WHERE idempotency_key = 'account_deleted:user_gone' AND amount = 20"); n != 1 {
		t.Errorf("forfeit entries for user_gone = %d, want 1", n)
	}
	if body := scalar[string](t, db, "SELECT payload::text FROM webhook_events WHERE clerk_user_id = 'user_gone'"); strings.Contains(body, "@") || strings.Contains(body, "Ada") {
		t.Errorf("user_gone's stored body still holds personal data: %s", body)
	}
	// A second run within the interval asks Clerk nothing and changes nothing.
	calls := len(fake.Calls())
	if sum, err := r.Run(ctx); err != nil || sum.Sweep.Found+sum.Sweep.Done+sum.Sweep.Failed != 0 || sum.Sweep.Error != "" {
		t.Errorf("second run's sweep = %+v, %v; want nothing (next round not due)", sum.Sweep, err)
	}
	for _, c := range fake.Calls()[calls:] {
		if strings.Contains(fmt.Sprint(c), "user_id=") {
			t.Errorf("second run asked Clerk about users: %v", c)
		}
	}
	// The next round (interval passed) finds nothing more to do.
	exec(t, db, "UPDATE reconcile_state SET value = jsonb_set(value::jsonb, '{round_started}', to_jsonb(now() - interval '25 hours'))::text WHERE name = 'deletion_sweep'")
	if sum, err := r.Run(ctx); err != nil || sum.Sweep.Found != 0 || sum.Sweep.Error != "" {
		t.Errorf("next round = %+v, %v; want nothing found", sum.Sweep, err)
	}
	pgtest.CheckInvariants(t, db)
}

// TestSweepRefusesMassDeletion: with a CLERK_SECRET_KEY of another instance
// every user looks gone; past SWEEP_MAX_DELETIONS the sweep deletes none of
// them, says why, and keeps refusing until the limit or the key changes.
func TestSweepRefusesMassDeletion(t *testing.T) {
	t.Parallel()
	db, _ := pgtest.New(t)
	ctx := context.Background()
	_, api := fakeClerk(t) // knows none of our users
	r := withClerk(db, api)
	r.Service.MetadataOutbox = false
	r.Config.SweepInterval, r.Config.SweepBatch, r.Config.SweepMaxDeletions = 24*time.Hour, 1000, 2
	seedUsers(t, r.Service, "user_1", "user_2", "user_3")
	exec(t, db, "UPDATE users SET created_at = now() - interval '2 hours'")
	for range 2 {
		sum, err := r.Run(ctx)
		if err != nil || sum.Sweep.Done != 0 || !strings.Contains(sum.Sweep.Error, "SWEEP_MAX_DELETIONS") || sum.Outcome != "partial" {
			t.Fatalf("sweep = %+v (outcome %s), %v; want a refusal naming SWEEP_MAX_DELETIONS", sum.Sweep, sum.Outcome, err)
		}
	}
	if n := scalar[int](t, db, "SELECT count(*) FROM users WHERE deleted_at IS NOT NULL"); n != 0 {
		t.Errorf("%d users deleted despite the refusal", n)
	}
	pgtest.CheckInvariants(t, db)
}
