package postgres_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/uptrace/bun"

	"github.com/creditgate/creditgate/pkg/clerk"
	"github.com/creditgate/creditgate/pkg/clerk/clerkevent"
	"github.com/creditgate/creditgate/pkg/ledger"
	"github.com/creditgate/creditgate/pkg/pgtest"
	"github.com/creditgate/creditgate/pkg/postgres"
)

var baseTime = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

// userEvent builds a Clerk user.created/user.updated body at version v
// (seconds after baseTime) or a user.deleted body.
func userEvent(typ, clerkID, email string, v int) []byte {
	return clerkevent.Event{Type: typ, UserID: clerkID, Email: email, At: baseTime,
		Version: baseTime.Add(time.Duration(v) * time.Second).UnixMilli()}.MustBody()
}

type fullState struct {
	Exists    bool
	Deleted   bool
	Email     string
	Available int64
	Used      int64
	Signups   int64
	Forfeits  int64
}

func fullStateOf(t *testing.T, db bun.IDB, clerkID string) fullState {
	t.Helper()
	ctx := context.Background()
	var rows []struct {
		DeletedAt        *time.Time `bun:"deleted_at"`
		Email            *string    `bun:"email"`
		AvailableCredits int64      `bun:"available_credits"`
		UsedCredits      int64      `bun:"used_credits"`
	}
	if err := db.NewRaw("SELECT deleted_at, email, available_credits, used_credits FROM users WHERE clerk_id = ?", clerkID).Scan(ctx, &rows); err != nil {
		t.Fatal(err)
	}
	if len(rows) == 0 {
		return fullState{}
	}
	s := fullState{Exists: true, Deleted: rows[0].DeletedAt != nil, Available: rows[0].AvailableCredits, Used: rows[0].UsedCredits}
	if rows[0].Email != nil {
		s.Email = *rows[0].Email
	}
	var err error
	if s.Signups, err = db.NewSelect().Model((*postgres.TransactionRow)(nil)).Where("clerk_id = ? AND reason = 'signup_bonus'", clerkID).Count(ctx); err != nil {
		t.Fatal(err)
	}
	if s.Forfeits, err = db.NewSelect().Model((*postgres.TransactionRow)(nil)).Where("clerk_id = ? AND reason = 'account_deleted'", clerkID).Count(ctx); err != nil {
		t.Fatal(err)
	}
	return s
}

// permutations returns every distinct ordering of items (a multiset).
func permutations(items []string) [][]string {
	if len(items) == 0 {
		return [][]string{{}}
	}
	var out [][]string
	seen := map[string]bool{}
	for i, it := range items {
		if seen[it] {
			continue
		}
		seen[it] = true
		rest := append(append([]string{}, items[:i]...), items[i+1:]...)
		for _, p := range permutations(rest) {
			out = append(out, append([]string{it}, p...))
		}
	}
	return out
}

// expected is the one correct state after a sequence of events for one user,
// derived from the rules rather than from the code: a delete ends the user for
// good; a create or update seen before the first delete grants the signup
// credit (then forfeited by the delete, if enabled); the email is the newest
// version's.
func expected(seq []string, forfeit bool) fullState {
	firstDelete := -1
	for i, e := range seq {
		if e == "deleted" && firstDelete < 0 {
			firstDelete = i
		}
	}
	granted := false
	for i, e := range seq {
		if e != "deleted" && (firstDelete < 0 || i < firstDelete) {
			granted = true
		}
	}
	s := fullState{Exists: len(seq) > 0}
	if granted {
		s.Signups, s.Available = 1, 20
	}
	if firstDelete >= 0 {
		s.Deleted = true
		if forfeit && granted {
			s.Forfeits, s.Available, s.Used = 1, 0, 20
		}
		return s
	}
	// Live: the newest version wins, whatever the order.
	for _, e := range seq {
		if e == "updated" {
			return withEmail(s, "new@example.com")
		}
	}
	return withEmail(s, "old@example.com")
}

func withEmail(s fullState, e string) fullState { s.Email = e; return s }

func TestLifecycleEveryOrdering(t *testing.T) {
	t.Parallel()
	events := map[string]struct {
		typ, email string
		version    int
	}{
		"created": {clerk.EventUserCreated, "old@example.com", 1},
		"updated": {clerk.EventUserUpdated, "new@example.com", 2},
		"deleted": {clerk.EventUserDeleted, "", 0},
	}
	var sequences [][]string
	for _, set := range [][]string{
		{"created", "updated", "deleted"},
		{"created", "updated", "deleted", "created", "updated", "deleted"}, // each delivered twice
		{"created", "updated"}, {"created", "updated", "created", "updated"},
		{"created", "deleted"}, {"updated", "deleted"},
	} {
		sequences = append(sequences, permutations(set)...)
	}
	for _, forfeit := range []bool{true, false} {
		db, _ := pgtest.New(t)
		svc := &ledger.Service{Store: postgres.NewStore(db), Decode: clerk.Decode, SignupCredits: 20, ForfeitOnDelete: forfeit}
		for i, seq := range sequences {
			name := fmt.Sprintf("forfeit=%v/%s", forfeit, strings.Join(seq, ","))
			clerkID := fmt.Sprintf("user_f%v_%d", forfeit, i)
			for _, e := range seq {
				ev := events[e]
				// A second copy of an event is a redelivery: the same svix-id.
				svixID := fmt.Sprintf("msg_%s_%s", clerkID, e)
				res, err := svc.Process(context.Background(), delivery(svixID, userEvent(ev.typ, clerkID, ev.email, ev.version)))
				if err != nil {
					t.Fatalf("%s: %s: %v", name, e, err)
				}
				if res.Status == ledger.OutcomeRejected || res.Status == ledger.OutcomeIgnored {
					t.Errorf("%s: %s outcome %s", name, e, res.Status)
				}
			}
			if diff := cmp.Diff(expected(seq, forfeit), fullStateOf(t, db, clerkID)); diff != "" {
				t.Errorf("%s: final state (-want +got):\n%s", name, diff)
			}
		}
		pgtest.CheckInvariants(t, db)
	}
	if got := len(sequences); got != 6+90+2+6+2+2 {
		t.Errorf("covered %d orderings, want 108", got)
	}
}

func TestLifecycleOutcomes(t *testing.T) {
	t.Parallel()
	db, _ := pgtest.New(t)
	svc := &ledger.Service{Store: postgres.NewStore(db), Decode: clerk.Decode, SignupCredits: 20, ForfeitOnDelete: true}
	ctx := context.Background()
	steps := []struct {
		svixID, typ, email string
		version            int
		want               ledger.Outcome
		granted, forfeited int64
	}{
		{"m1", clerk.EventUserUpdated, "b@x.io", 5, ledger.OutcomeProcessed, 20, 0}, // unknown user: created with credit
		{"m2", clerk.EventUserCreated, "a@x.io", 1, ledger.OutcomeStale, 0, 0},      // late create: older, changes nothing
		{"m2", clerk.EventUserCreated, "a@x.io", 1, ledger.OutcomeDuplicate, 0, 0},  // redelivery
		{"m3", clerk.EventUserUpdated, "c@x.io", 4, ledger.OutcomeStale, 0, 0},      // older update
		{"m4", clerk.EventUserUpdated, "d@x.io", 6, ledger.OutcomeProcessed, 0, 0},  // newer update
		{"m5", clerk.EventUserDeleted, "", 0, ledger.OutcomeProcessed, 0, 20},
		{"m5", clerk.EventUserDeleted, "", 0, ledger.OutcomeDuplicate, 0, 0},
		{"m6", clerk.EventUserDeleted, "", 0, ledger.OutcomeStale, 0, 0},       // another delete
		{"m7", clerk.EventUserUpdated, "e@x.io", 9, ledger.OutcomeStale, 0, 0}, // never revives
	}
	for _, st := range steps {
		res, err := svc.Process(ctx, delivery(st.svixID, userEvent(st.typ, "user_o", st.email, st.version)))
		if err != nil {
			t.Fatalf("%s: %v", st.svixID, err)
		}
		if res.Status != st.want || res.CreditsGranted != st.granted || res.CreditsForfeited != st.forfeited {
			t.Errorf("%s %s = %s granted %d forfeited %d, want %s granted %d forfeited %d",
				st.svixID, st.typ, res.Status, res.CreditsGranted, res.CreditsForfeited, st.want, st.granted, st.forfeited)
		}
	}
	var statuses []string
	if err := db.NewRaw("SELECT svix_id || '=' || status FROM webhook_events ORDER BY svix_id").Scan(ctx, &statuses); err != nil {
		t.Fatal(err)
	}
	want := []string{"m1=processed", "m2=stale", "m3=stale", "m4=processed", "m5=processed", "m6=stale", "m7=stale"}
	if diff := cmp.Diff(want, statuses); diff != "" {
		t.Errorf("stored statuses (-want +got):\n%s", diff)
	}
	pgtest.CheckInvariants(t, db)
}

func TestEmailMovesToNewAccount(t *testing.T) {
	t.Parallel()
	db, _ := pgtest.New(t)
	svc := &ledger.Service{Store: postgres.NewStore(db), Decode: clerk.Decode, SignupCredits: 20, ForfeitOnDelete: true}
	ctx := context.Background()
	for _, d := range []ledger.Delivery{
		delivery("a1", userEvent(clerk.EventUserCreated, "user_A", "moving@example.com", 1)),
		delivery("a2", userEvent(clerk.EventUserDeleted, "user_A", "", 0)),
		delivery("b1", userEvent(clerk.EventUserCreated, "user_B", "moving@example.com", 3)),
	} {
		res, err := svc.Process(ctx, d)
		if err != nil || res.Status != ledger.OutcomeProcessed {
			t.Fatalf("%s = %+v, %v; want processed", d.SvixID, res, err)
		}
	}
	if diff := cmp.Diff(fullState{Exists: true, Deleted: true, Used: 20, Signups: 1, Forfeits: 1}, fullStateOf(t, db, "user_A")); diff != "" {
		t.Errorf("user_A (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(fullState{Exists: true, Email: "moving@example.com", Available: 20, Signups: 1}, fullStateOf(t, db, "user_B")); diff != "" {
		t.Errorf("user_B (-want +got):\n%s", diff)
	}
	pgtest.CheckInvariants(t, db)
}

func TestConcurrentLifecycleStorm(t *testing.T) {
	t.Parallel()
	db, _ := pgtest.New(t)
	svc := &ledger.Service{Store: postgres.NewStore(db), Decode: clerk.Decode, SignupCredits: 20, ForfeitOnDelete: true}
	const users = 200
	rng := rand.New(rand.NewPCG(42, 7))
	var deliveries []ledger.Delivery
	deletedUser := map[string]bool{}
	for u := range users {
		id := fmt.Sprintf("user_storm_%03d", u)
		evs := []ledger.Delivery{
			delivery("c_"+id, userEvent(clerk.EventUserCreated, id, "old_"+id+"@example.com", 1)),
			delivery("u_"+id, userEvent(clerk.EventUserUpdated, id, "new_"+id+"@example.com", 2)),
		}
		if u%3 == 0 {
			deletedUser[id] = true
			evs = append(evs, delivery("d_"+id, userEvent(clerk.EventUserDeleted, id, "", 0)))
		}
		for _, e := range evs {
			for range 1 + rng.IntN(3) { // 1 to 3 copies of each
				deliveries = append(deliveries, e)
			}
		}
	}
	rng.Shuffle(len(deliveries), func(i, j int) { deliveries[i], deliveries[j] = deliveries[j], deliveries[i] })

	work := make(chan ledger.Delivery)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for d := range work {
				if _, err := svc.Process(context.Background(), d); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		}()
	}
	for _, d := range deliveries {
		work <- d
	}
	close(work)
	wg.Wait()
	for _, err := range errs {
		t.Errorf("delivery failed (a race must never surface): %v", err)
	}

	for u := range users {
		id := fmt.Sprintf("user_storm_%03d", u)
		got := fullStateOf(t, db, id)
		if deletedUser[id] {
			// Deleted and never re-credited: whatever arrived first, at most
			// one grant, and nothing left to spend.
			if !got.Deleted || got.Available != 0 || got.Signups > 1 || got.Email != "" {
				t.Errorf("%s: deleted user state %+v", id, got)
			}
			continue
		}
		want := fullState{Exists: true, Email: "new_" + id + "@example.com", Available: 20, Signups: 1}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", id, diff)
		}
	}
	pgtest.CheckInvariants(t, db)
	t.Logf("%d deliveries for %d users", len(deliveries), users)
}
