package postgres_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/uptrace/bun"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/creditgate/creditgate/migrations"
	"github.com/creditgate/creditgate/pkg/clerk"
	"github.com/creditgate/creditgate/pkg/ledger"
	"github.com/creditgate/creditgate/pkg/pgtest"
	"github.com/creditgate/creditgate/pkg/postgres"
)

// render is a stand-in for the HTTP layer's: a status by outcome and a body
// naming the result or the refusal.
func render(v any, err error) ledger.Answer {
	if err != nil {
		status := 409
		body, _ := json.Marshal(map[string]any{"error": err.Error()})
		return ledger.Answer{Status: status, Body: body}
	}
	body, _ := json.Marshal(v)
	return ledger.Answer{Status: 201, Body: body}
}

// creditsEnv is a store with one user holding its 20 signup credits.
func creditsEnv(t *testing.T) (*postgres.Store, *bun.DB) {
	t.Helper()
	return creditsEnvWith(t, postgres.Options{MaxConns: 40})
}

// creditsEnvWith is creditsEnv on a handle opened with opts.
func creditsEnvWith(t *testing.T, opts postgres.Options) (*postgres.Store, *bun.DB) {
	t.Helper()
	db, _ := pgtest.NewWith(t, opts)
	s := postgres.NewStore(db)
	svc := &ledger.Service{Store: s, Decode: clerk.Decode, SignupCredits: 20}
	if _, err := svc.Process(context.Background(), delivery("msg_signup", userCreated("user_c", ""))); err != nil {
		t.Fatal(err)
	}
	return s, db
}

func req(key string) ledger.Request {
	return ledger.Request{ClerkID: "user_c", Actor: "app", Key: key, Fingerprint: []byte("fp:" + key)}
}

func balance(t *testing.T, s *postgres.Store) ledger.Balance {
	t.Helper()
	b, err := s.Balance(context.Background(), "user_c")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestConcurrentDebitsNeverOverdraw: 50 concurrent debits of 1 on a user
// holding 20 take exactly 20; the other 30 are refused with what was
// available; the balance ends at 0, never below.
func TestConcurrentDebitsNeverOverdraw(t *testing.T) {
	t.Parallel()
	s, db := creditsEnv(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	var mu sync.Mutex
	statuses := map[int]int{}
	for i := range 50 {
		wg.Go(func() {
			ans, err := s.Debit(ctx, req(fmt.Sprintf("k%d", i)), ledger.Spend{Amount: 1, Reason: "generation"}, render)
			if err != nil {
				t.Errorf("debit %d: %v", i, err)
				return
			}
			mu.Lock()
			statuses[ans.Status]++
			mu.Unlock()
		})
	}
	wg.Wait()
	if statuses[201] != 20 || statuses[409] != 30 {
		t.Errorf("answers = %v, want 20 × 201 and 30 × 409", statuses)
	}
	if b := balance(t, s); b.Available != 0 || b.Used != 20 || b.Held != 0 {
		t.Errorf("balance = %+v, want 0 available, 20 used", b)
	}
	pgtest.CheckInvariants(t, db)
}

// TestOneKeyTakesEffectOnce: 50 concurrent requests with one key make one
// entry and get 50 identical answers; the same key with another request is
// refused and changes nothing; a refusal stays refused under its key.
func TestOneKeyTakesEffectOnce(t *testing.T) {
	t.Parallel()
	s, db := creditsEnv(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	answers := make([]ledger.Answer, 50)
	for i := range answers {
		wg.Go(func() {
			var err error
			answers[i], err = s.Debit(ctx, req("same"), ledger.Spend{Amount: 3, Reason: "generation"}, render)
			if err != nil {
				t.Errorf("debit %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	replayed := 0
	for _, a := range answers {
		if a.Status != 201 || string(a.Body) != string(answers[0].Body) {
			t.Fatalf("answers differ: %d %s vs %d %s", a.Status, a.Body, answers[0].Status, answers[0].Body)
		}
		if a.Replayed {
			replayed++
		}
	}
	if replayed != 49 {
		t.Errorf("%d replayed answers, want 49", replayed)
	}
	if b := balance(t, s); b.Available != 17 {
		t.Errorf("available = %d, want 17 (one debit of 3)", b.Available)
	}
	other := req("same")
	other.Fingerprint = []byte("another request")
	if _, err := s.Debit(ctx, other, ledger.Spend{Amount: 5, Reason: "generation"}, render); !errors.Is(err, ledger.ErrIdempotencyKeyReused) {
		t.Errorf("same key, other request: %v, want ErrIdempotencyKeyReused", err)
	}
	// A refusal is an answer: after a top-up the same key is still refused.
	refused, err := s.Debit(ctx, req("big"), ledger.Spend{Amount: 100, Reason: "generation"}, render)
	if err != nil || refused.Status != 409 {
		t.Fatalf("debit of 100 = %+v, %v; want 409", refused, err)
	}
	if _, err := s.Grant(ctx, req("topup"), ledger.Grant{Amount: 200, Reason: "purchase"}, render); err != nil {
		t.Fatal(err)
	}
	again, err := s.Debit(ctx, req("big"), ledger.Spend{Amount: 100, Reason: "generation"}, render)
	if err != nil || again.Status != 409 || !again.Replayed || string(again.Body) != string(refused.Body) {
		t.Errorf("retry of the refused key = %+v, %v; want the stored refusal", again, err)
	}
	if b := balance(t, s); b.Available != 217 {
		t.Errorf("available = %d, want 217", b.Available)
	}
	pgtest.CheckInvariants(t, db)
}

// TestHolds: a hold takes its credits at once; a partial capture debits what
// it takes and gives the rest back; a finished hold refuses more; an expired
// hold no longer counts at the next read, before anything books it, and
// refuses a capture.
func TestHolds(t *testing.T) {
	t.Parallel()
	s, db := creditsEnv(t)
	ctx := context.Background()
	holdOf := func(a ledger.Answer) ledger.Hold {
		t.Helper()
		var h ledger.Hold
		if a.Status != 201 || json.Unmarshal(a.Body, &h) != nil {
			t.Fatalf("hold answer %d %s", a.Status, a.Body)
		}
		return h
	}
	a, err := s.PlaceHold(ctx, req("h1"), ledger.Spend{Amount: 12, Reason: "generation", TTL: time.Minute}, render)
	if err != nil {
		t.Fatal(err)
	}
	h := holdOf(a)
	if b := balance(t, s); b.Available != 8 || b.Held != 12 {
		t.Errorf("after the hold: %+v, want 8 available, 12 held", b)
	}
	if a, _ := s.Debit(ctx, req("d1"), ledger.Spend{Amount: 9, Reason: "generation"}, render); a.Status != 409 {
		t.Errorf("a debit of 9 beside a hold of 12 out of 20: %d %s, want refused", a.Status, a.Body)
	}
	if _, err := s.CaptureHold(ctx, h.ID, 13, req("c0"), render); !errors.Is(err, ledger.ErrInvalidRequest) {
		t.Errorf("capture above the hold: %v, want ErrInvalidRequest", err)
	}
	a, err = s.CaptureHold(ctx, h.ID, 5, req("c1"), render)
	if err != nil || a.Status != 201 {
		t.Fatalf("capture 5: %+v, %v", a, err)
	}
	if b := balance(t, s); b.Available != 15 || b.Held != 0 || b.Used != 5 {
		t.Errorf("after capturing 5 of 12: %+v, want 15 available, 5 used", b)
	}
	for _, op := range []func() (ledger.Answer, error){
		func() (ledger.Answer, error) { return s.CaptureHold(ctx, h.ID, 0, req("c2"), render) },
		func() (ledger.Answer, error) { return s.VoidHold(ctx, h.ID, req("v1"), render) },
	} {
		if a, err := op(); err != nil || a.Status != 409 {
			t.Errorf("on a captured hold: %+v, %v; want refused (hold not active)", a, err)
		}
	}

	// Expiry, read before anything books it.
	a, _ = s.PlaceHold(ctx, req("h2"), ledger.Spend{Amount: 10, Reason: "generation", TTL: time.Minute}, render)
	h2 := holdOf(a)
	if _, err := db.ExecContext(ctx, "UPDATE credit_holds SET expires_at = now() - interval '1 second' WHERE id = ?", h2.ID); err != nil {
		t.Fatal(err)
	}
	if b := balance(t, s); b.Available != 15 || b.Held != 0 {
		t.Errorf("after the hold expired: %+v, want 15 available again", b)
	}
	if got, err := s.Hold(ctx, h2.ID); err != nil || got.Status != ledger.HoldExpired {
		t.Errorf("expired hold reads %+v, %v", got, err)
	}
	a, err = s.CaptureHold(ctx, h2.ID, 0, req("c3"), render)
	if err != nil || a.Status != 409 {
		t.Errorf("capture after expiry: %+v, %v; want refused", a, err)
	}
	pgtest.CheckInvariants(t, db)

	// Void gives everything back; extend moves the expiry.
	a, _ = s.PlaceHold(ctx, req("h3"), ledger.Spend{Amount: 4, Reason: "generation", TTL: time.Minute}, render)
	h3 := holdOf(a)
	a, err = s.ExtendHold(ctx, h3.ID, time.Hour, req("e1"), render)
	if err != nil || a.Status != 201 {
		t.Fatalf("extend: %+v, %v", a, err)
	}
	if got, _ := s.Hold(ctx, h3.ID); got.ExpiresAt.Before(time.Now().Add(50 * time.Minute)) {
		t.Errorf("extended hold expires %s, want about an hour from now", got.ExpiresAt)
	}
	if a, err := s.VoidHold(ctx, h3.ID, req("v3"), render); err != nil || a.Status != 201 {
		t.Fatalf("void: %+v, %v", a, err)
	}
	if b := balance(t, s); b.Available != 15 || b.Held != 0 {
		t.Errorf("after the void: %+v, want 15", b)
	}
	pgtest.CheckInvariants(t, db)
}

// TestExpiringGrantsSpentFirst: credits that expire go first, soonest first;
// an expired grant is spendable no more at the next read.
func TestExpiringGrantsSpentFirst(t *testing.T) {
	t.Parallel()
	s, db := creditsEnv(t)
	ctx := context.Background()
	soon, later := time.Now().Add(time.Hour), time.Now().Add(48*time.Hour)
	// The later grant first: spending order is by expiry, not by age.
	for _, g := range []struct {
		key string
		ledger.Grant
	}{
		{"g_later", ledger.Grant{Amount: 7, Reason: "promo", ExpiresAt: later}},
		{"g_soon", ledger.Grant{Amount: 5, Reason: "promo", ExpiresAt: soon}},
	} {
		if a, err := s.Grant(ctx, req(g.key), g.Grant, render); err != nil || a.Status != 201 {
			t.Fatalf("grant %s: %+v, %v", g.key, a, err)
		}
	}
	b := balance(t, s)
	if b.Available != 32 || b.NextExpiry == nil || b.NextExpiry.Amount != 5 || !b.NextExpiry.At.Round(time.Second).Equal(soon.Round(time.Second)) {
		t.Errorf("balance = %+v (next %+v), want 32 with 5 expiring in an hour", b, b.NextExpiry)
	}
	if a, err := s.Debit(ctx, req("d1"), ledger.Spend{Amount: 8, Reason: "generation"}, render); err != nil || a.Status != 201 {
		t.Fatalf("debit: %+v, %v", a, err)
	}
	// 5 from the soonest, 3 from the later grant; the signup's 20 untouched.
	var lots []string
	if err := db.NewRaw("SELECT format('%s/%s', remaining, amount) FROM credit_lots ORDER BY id").Scan(ctx, &lots); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(lots) != "[20/20 4/7 0/5]" {
		t.Errorf("lots = %v, want [20/20 4/7 0/5]", lots)
	}
	// The later grant expires: its 4 are gone from the next read.
	if _, err := db.ExecContext(ctx, "UPDATE credit_lots SET expires_at = now() - interval '1 second' WHERE remaining = 4"); err != nil {
		t.Fatal(err)
	}
	if b := balance(t, s); b.Available != 20 || b.NextExpiry != nil {
		t.Errorf("after the grant expired: %+v, want 20 and no expiry", b)
	}
	if a, _ := s.Debit(ctx, req("d2"), ledger.Spend{Amount: 21, Reason: "generation"}, render); a.Status != 409 {
		t.Errorf("a debit reaching into expired credits: %d %s, want refused", a.Status, a.Body)
	}
	pgtest.CheckInvariants(t, db)
}

// TestRefundsCapped: the refunds of one debit never exceed it.
func TestRefundsCapped(t *testing.T) {
	t.Parallel()
	s, db := creditsEnv(t)
	ctx := context.Background()
	a, err := s.Debit(ctx, req("d"), ledger.Spend{Amount: 10, Reason: "generation"}, render)
	if err != nil || a.Status != 201 {
		t.Fatal(a, err)
	}
	var e ledger.EntryView
	if err := json.Unmarshal(a.Body, &e); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		amount int64
		status int
	}{{4, 201}, {7, 409}, {0, 201}, {0, 409}, {1, 409}}
	for i, st := range steps {
		a, err := s.Refund(ctx, e.ID, st.amount, "failed_generation", req(fmt.Sprintf("r%d", i)), render)
		if err != nil || a.Status != st.status {
			t.Errorf("refund %d of %d: %d %s, %v; want %d", i, st.amount, a.Status, a.Body, err, st.status)
		}
	}
	if b := balance(t, s); b.Available != 20 || b.Used != 0 {
		t.Errorf("after refunding all: %+v, want 20 available, 0 used", b)
	}
	// A signup credit is not a debit.
	var signupID int64
	if err := db.NewRaw("SELECT id FROM credit_transactions WHERE reason = 'signup_bonus'").Scan(ctx, &signupID); err != nil {
		t.Fatal(err)
	}
	if a, err := s.Refund(ctx, signupID, 1, "x", req("r_signup"), render); err != nil || a.Status != 409 {
		t.Errorf("refund of the signup credit: %+v, %v; want refused", a, err)
	}
	pgtest.CheckInvariants(t, db)
}

// TestClosedAccount: after user.deleted nothing moves; the account's active
// holds were voided by the deletion, and its credits forfeited.
func TestClosedAccount(t *testing.T) {
	t.Parallel()
	s, db := creditsEnv(t)
	ctx := context.Background()
	if _, err := s.PlaceHold(ctx, req("h"), ledger.Spend{Amount: 5, Reason: "generation", TTL: time.Hour}, render); err != nil {
		t.Fatal(err)
	}
	svc := &ledger.Service{Store: s, Decode: clerk.Decode, SignupCredits: 20, ForfeitOnDelete: true}
	if _, err := svc.Process(ctx, delivery("msg_del", []byte(`{"type":"user.deleted","data":{"id":"user_c","deleted":true}}`))); err != nil {
		t.Fatal(err)
	}
	var status string
	if err := db.NewRaw("SELECT status FROM credit_holds").Scan(ctx, &status); err != nil || status != "voided" {
		t.Errorf("hold after the deletion: %q, %v; want voided", status, err)
	}
	if a, err := s.Debit(ctx, req("d"), ledger.Spend{Amount: 1, Reason: "generation"}, render); err != nil || a.Status != 409 {
		t.Errorf("debit of a closed account: %+v, %v; want refused", a, err)
	}
	if _, err := s.Balance(ctx, "user_c"); !errors.Is(err, ledger.ErrAccountClosed) {
		t.Errorf("balance of a closed account: %v, want ErrAccountClosed", err)
	}
	if _, err := s.Balance(ctx, "user_nobody"); !errors.Is(err, ledger.ErrNotFound) {
		t.Errorf("balance of an unknown user: %v, want ErrNotFound", err)
	}
	pgtest.CheckInvariants(t, db)
}

// TestExpiryBookedOnce: expired holds and grants are booked exactly once,
// whoever runs the pass and however often; a hold released into an expired
// lot after its booking is booked once more.
func TestExpiryBookedOnce(t *testing.T) {
	t.Parallel()
	s, db := creditsEnv(t)
	ctx := context.Background()
	if _, err := s.Grant(ctx, req("g"), ledger.Grant{Amount: 10, Reason: "promo", ExpiresAt: time.Now().Add(time.Hour)}, render); err != nil {
		t.Fatal(err)
	}
	// A hold of 6 takes 6 of the promo's 10; then the promo expires.
	a, _ := s.PlaceHold(ctx, req("h"), ledger.Spend{Amount: 6, Reason: "generation", TTL: time.Hour}, render)
	var h ledger.Hold
	_ = json.Unmarshal(a.Body, &h)
	if _, err := db.ExecContext(ctx, "UPDATE credit_lots SET expires_at = now() - interval '1 second' WHERE amount = 10"); err != nil {
		t.Fatal(err)
	}
	if b := balance(t, s); b.Available != 20 || b.Held != 6 {
		t.Errorf("after the promo expired: %+v, want 20 available (signup), 6 still held", b)
	}
	var wg sync.WaitGroup
	for range 4 { // concurrent passes
		wg.Go(func() {
			if _, _, err := s.ExpireDue(ctx, 100); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	expiries := func() string {
		var got []string
		if err := db.NewRaw("SELECT format('%s:%s', idempotency_key, amount) FROM credit_transactions WHERE kind = 'expiry' ORDER BY id").Scan(ctx, &got); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprint(got)
	}
	if got := expiries(); got != "[expiry:2:0:4]" {
		t.Errorf("expiry entries = %s, want the promo's 4 left, once", got)
	}
	// The hold is still capturable in full though its credits expired.
	if a, err := s.CaptureHold(ctx, h.ID, 2, req("c"), render); err != nil || a.Status != 201 {
		t.Fatalf("capture 2 of the hold: %+v, %v", a, err)
	}
	// Its other 4 went back to the expired lot: booked at the next pass, once.
	for range 2 {
		if _, _, err := s.ExpireDue(ctx, 100); err != nil {
			t.Fatal(err)
		}
	}
	if got := expiries(); got != "[expiry:2:0:4 expiry:2:4:4]" {
		t.Errorf("expiry entries = %s, want a second booking of the 4 released", got)
	}
	if b := balance(t, s); b.Available != 20 || b.Used != 2 {
		t.Errorf("balance = %+v, want 20 available, 2 used", b)
	}
	pgtest.CheckInvariants(t, db)
}

// TestPreviousReleaseWritesKeepLotsInStep: during a rolling upgrade the
// previous release's pods write signup credits and forfeits the way they
// always did (no kind, no lots); the schema keeps lots in step, so the money
// rules hold while old and new pods serve side by side.
func TestPreviousReleaseWritesKeepLotsInStep(t *testing.T) {
	t.Parallel()
	_, db := newService(t)
	ctx := context.Background()
	// The previous release's signup grant, as it wrote it.
	for _, q := range []string{
		"INSERT INTO users (clerk_id, available_credits) VALUES ('user_old', 20)",
		`INSERT INTO credit_transactions (user_id, clerk_id, amount, type, reason, idempotency_key)
			SELECT id, clerk_id, 20, 'credit', 'signup_bonus', 'signup:user_old' FROM users WHERE clerk_id = 'user_old'`,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	pgtest.CheckInvariants(t, db)
	// The new release spends from it.
	s := postgres.NewStore(db)
	r := ledger.Request{ClerkID: "user_old", Key: "k", Fingerprint: []byte("k")}
	if a, err := s.Debit(ctx, r, ledger.Spend{Amount: 5, Reason: "generation"}, render); err != nil || a.Status != 201 {
		t.Fatalf("debit: %+v, %v", a, err)
	}
	// The previous release's forfeit on user.deleted, as it wrote it.
	for _, q := range []string{
		`INSERT INTO credit_transactions (user_id, clerk_id, amount, type, reason, idempotency_key)
			SELECT id, clerk_id, 15, 'debit', 'account_deleted', 'account_deleted:user_old' FROM users WHERE clerk_id = 'user_old'`,
		"UPDATE users SET available_credits = 0, used_credits = used_credits + 15, deleted_at = now() WHERE clerk_id = 'user_old'",
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	pgtest.CheckInvariants(t, db)
}

// tracer records the statements pgx sends: when each starts and ends.
type tracer struct {
	mu     sync.Mutex
	events []string // "start <first words>" / "end"
}

func (tr *tracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	q := strings.Fields(d.SQL)
	tr.events = append(tr.events, "start "+strings.Join(q[:min(len(q), 3)], " "))
	return ctx
}

func (tr *tracer) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.events = append(tr.events, "end")
}

func (tr *tracer) take() []string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	ev := tr.events
	tr.events = nil
	return ev
}

// TestDebitIsOneTrip: a new debit with credits enough sends BEGIN, the
// account's lock, the debit and COMMIT together, as one trip (all four
// start before any ends); its replay is answered byte for byte from the
// entry it stored, metadata included; the cases it does not decide (too few
// credits, a reused key) fall back to the general path with the same
// answers as before.
func TestDebitIsOneTrip(t *testing.T) {
	t.Parallel()
	needPipelines(t)
	tr := &tracer{}
	s, db := creditsEnvWith(t, postgres.Options{Tracer: tr})
	ctx := context.Background()
	spend := ledger.Spend{Amount: 3, Reason: "generation", Reference: "job-1", Metadata: []byte(`{"model": "x", "n": 1}`)}
	tr.take()
	first, err := s.Debit(ctx, req("k1"), spend, render)
	if err != nil || first.Status != 201 || first.Replayed {
		t.Fatalf("debit = %+v, %v", first, err)
	}
	want := []string{"start begin", "start SELECT u.id, u.deleted_at", "start WITH acct AS", "start commit", "end", "end", "end", "end"}
	if got := tr.take(); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("statements:\n got %q\nwant %q", got, want)
	}
	again, err := s.Debit(ctx, req("k1"), spend, render)
	if err != nil || !again.Replayed || again.Status != 201 || string(again.Body) != string(first.Body) {
		t.Errorf("replay = %d %s (replayed %v), %v; want the first answer %s", again.Status, again.Body, again.Replayed, err, first.Body)
	}
	if got := tr.take(); len(got) != 8 {
		t.Errorf("the replay took %q, want one trip of 4 statements", got)
	}
	other := req("k1")
	other.Fingerprint = []byte("another request")
	if _, err := s.Debit(ctx, other, spend, render); !errors.Is(err, ledger.ErrIdempotencyKeyReused) {
		t.Errorf("same key, other request: %v, want ErrIdempotencyKeyReused", err)
	}
	refused, err := s.Debit(ctx, req("k2"), ledger.Spend{Amount: 18, Reason: "generation"}, render)
	if err != nil || refused.Status != 409 || !strings.Contains(string(refused.Body), "17") {
		t.Errorf("debit of 18 with 17 left = %d %s, %v; want 409 naming 17 available", refused.Status, refused.Body, err)
	}
	if got := tr.take(); len(got) <= 8 {
		t.Errorf("a refusal took %q, want the one trip and then the general path", got)
	}
	if b := balance(t, s); b.Available != 17 || b.Used != 3 {
		t.Errorf("balance = %+v, want 17 available, 3 used", b)
	}
	pgtest.CheckInvariants(t, db)
}

// TestAnswerEntriesMigrationDown: rolling back the answers stored as entries
// gives each such answer bytes naming its entry, so that a retried request
// is still answered from its key and never debits again; up applies again.
func TestAnswerEntriesMigrationDown(t *testing.T) {
	t.Parallel()
	needPipelines(t)
	s, db := creditsEnv(t)
	ctx := context.Background()
	ans, err := s.Debit(ctx, req("k"), ledger.Spend{Amount: 2, Reason: "generation"}, render)
	if err != nil || ans.Status != 201 {
		t.Fatalf("debit = %+v, %v", ans, err)
	}
	var entry int64
	if err := db.QueryRowContext(ctx, "SELECT entry_id FROM api_requests WHERE idempotency_key = 'k' AND response IS NULL").Scan(&entry); err != nil {
		t.Fatalf("the pipelined debit stored no entry answer: %v", err)
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
	exec("20261202000002_answer_entries.tx.down.sql")
	var body string
	if err := db.QueryRowContext(ctx, "SELECT convert_from(response, 'UTF8') FROM api_requests WHERE idempotency_key = 'k'").Scan(&body); err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf(`"entry_id" : "ent_%d"`, entry); !strings.Contains(body, want) || !strings.Contains(body, `"balance_after" : 18`) {
		t.Errorf("after down: response = %s, want it to name %s and balance 18", body, want)
	}
	exec("20261202000002_answer_entries.tx.up.sql")
	again, err := s.Debit(ctx, req("k"), ledger.Spend{Amount: 2, Reason: "generation"}, render)
	if err != nil || !again.Replayed || string(again.Body) != body {
		t.Errorf("retry after down and up = %+v, %v; want the stored bytes replayed", again, err)
	}
	if b := balance(t, s); b.Available != 18 {
		t.Errorf("available = %d, want 18 (one debit)", b.Available)
	}
	pgtest.CheckInvariants(t, db)
}

// TestEveryStatementIsTraced: with tracing on, every statement gets a span —
// the driver-direct new-user statement, the pipelined debit's four, bun's —
// named by its operation, and no span carries the statement's text or a
// value from it (bun's statements carry values inline, emails included).
func TestEveryStatementIsTraced(t *testing.T) {
	t.Parallel()
	needPipelines(t)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	counted := &tracer{}
	db, _ := pgtest.NewWith(t, postgres.Options{Tracing: true, TracerProvider: tp, Tracer: counted})
	// Statements are traced inside a request's span, as the service makes one.
	ctx, parent := tp.Tracer("test").Start(context.Background(), "request")
	s := postgres.NewStore(db)
	svc := &ledger.Service{Store: s, Decode: clerk.Decode, SignupCredits: 20}
	if _, err := svc.Process(ctx, delivery("msg_signup", userCreated("user_c", "secret.person@example.com"))); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Process(ctx, delivery("msg_update", personalBody("user.updated", "user_c", time.Now()))); err != nil {
		t.Fatal(err)
	}
	debitCtx, debit := tp.Tracer("test").Start(ctx, "debit")
	if _, err := s.Debit(debitCtx, req("k"), ledger.Spend{Amount: 2, Reason: "generation"}, render); err != nil {
		t.Fatal(err)
	}
	debit.End()
	if _, err := s.Balance(ctx, "user_c"); err != nil {
		t.Fatal(err)
	}
	parent.End()
	// The pipelined debit's statements, each a span of the debit's (a new
	// connection's prepares and connect, and the wait for a connection, are
	// spans of their own).
	var debitSpans []string
	for _, sp := range rec.Ended() {
		if sp.Parent().SpanID() != debit.SpanContext().SpanID() || sp.Name() == "connect" || sp.Name() == "pool.acquire" {
			continue
		}
		prepare := false
		for _, kv := range sp.Attributes() {
			prepare = prepare || kv.Key == "pgx.prepare_stmt.name"
		}
		if !prepare {
			debitSpans = append(debitSpans, sp.Name())
		}
	}
	if got, want := strings.Join(debitSpans, " "), "BEGIN SELECT WITH COMMIT"; got != want {
		t.Errorf("spans of the debit: %q, want %q", got, want)
	}
	statements := 0
	for _, e := range counted.take() {
		if e != "end" {
			statements++
		}
	}
	spans := rec.Ended()
	var queries int
	for _, sp := range spans {
		if sp.Name() == "request" {
			continue
		}
		prepare := false
		for _, kv := range sp.Attributes() {
			prepare = prepare || kv.Key == "pgx.prepare_stmt.name"
		}
		if !prepare && sp.Name() != "connect" && sp.Name() != "debit" && sp.Name() != "pool.acquire" {
			queries++
		}
		if len(sp.Name()) > 40 {
			t.Errorf("span name %q: want the operation, not the statement", sp.Name())
		}
		for _, kv := range sp.Attributes() {
			v := kv.Value.String()
			if strings.Contains(v, "@example.com") || strings.Contains(v, "user_c") || strings.Contains(v, "INSERT INTO") {
				t.Errorf("span %q attribute %s = %q: a statement's text or value", sp.Name(), kv.Key, v)
			}
		}
	}
	if statements < 8 || queries != statements {
		names := make([]string, len(spans))
		for i, sp := range spans {
			names[i] = sp.Name()
		}
		t.Errorf("%d statements sent, %d query spans: %q", statements, queries, names)
	}
}

// TestDebitSurvivesDiscardedStatements: when the server has dropped the
// connection's prepared statements (a pooler's DISCARD ALL, a DEALLOCATE),
// a debit does not fail: the connection is dropped and the debit runs on a
// new one, exactly once.
func TestDebitSurvivesDiscardedStatements(t *testing.T) {
	t.Parallel()
	s, db := creditsEnvWith(t, postgres.Options{MaxConns: 1})
	ctx := context.Background()
	if _, err := s.Debit(ctx, req("k1"), ledger.Spend{Amount: 1, Reason: "generation"}, render); err != nil {
		t.Fatal(err)
	}
	// The pool's one connection, whose statements are now prepared.
	if _, err := db.ExecContext(ctx, "DEALLOCATE ALL"); err != nil {
		t.Fatal(err)
	}
	ans, err := s.Debit(ctx, req("k2"), ledger.Spend{Amount: 1, Reason: "generation"}, render)
	if err != nil || ans.Status != 201 {
		t.Fatalf("debit after DEALLOCATE ALL = %+v, %v; want 201", ans, err)
	}
	if b := balance(t, s); b.Available != 18 {
		t.Errorf("available = %d, want 18 (two debits)", b.Available)
	}
	pgtest.CheckInvariants(t, db)
}

// TestNewUserSurvivesDiscardedStatements: a new user's one statement, whose
// prepared form the server dropped, is prepared again within the delivery
// instead of answering 503 once.
func TestNewUserSurvivesDiscardedStatements(t *testing.T) {
	t.Parallel()
	db, _ := pgtest.NewWith(t, postgres.Options{MaxConns: 1})
	ctx := context.Background()
	svc := &ledger.Service{Store: postgres.NewStore(db), Decode: clerk.Decode, SignupCredits: 20}
	if _, err := svc.Process(ctx, delivery("msg_a", userCreated("user_a", ""))); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, "DEALLOCATE ALL"); err != nil {
		t.Fatal(err)
	}
	res, err := svc.Process(ctx, delivery("msg_b", userCreated("user_b", "")))
	if err != nil || res.Status != ledger.OutcomeProcessed || res.CreditsGranted != 20 {
		t.Fatalf("delivery after DEALLOCATE ALL = %+v, %v; want processed with 20 credits", res, err)
	}
	pgtest.CheckInvariants(t, db)
}

// needPipelines skips a test of the one-trip debit where there is none:
// through a pooler in simple-protocol mode (TEST_PGBOUNCER=simple_protocol)
// the debit takes the general path, which the other tests cover.
func needPipelines(t *testing.T) {
	t.Helper()
	if pgtest.StatementMode() == "simple_protocol" {
		t.Skip("simple protocol: no pipelined debit to test")
	}
}
