package reconcile_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/uptrace/bun"

	"github.com/creditgate/creditgate/pkg/clerk"
	"github.com/creditgate/creditgate/pkg/clerk/clerkfake"
	"github.com/creditgate/creditgate/pkg/ledger"
	"github.com/creditgate/creditgate/pkg/metricstest"
	"github.com/creditgate/creditgate/pkg/pgtest"
	"github.com/creditgate/creditgate/pkg/postgres"
	"github.com/creditgate/creditgate/pkg/reconcile"
)

const secretKey = "sk_test_creditgate"

// fakeClerk starts the fake Backend API with Clerk's per-user rate limit on.
func fakeClerk(t *testing.T) (*clerkfake.Server, *clerk.API) {
	t.Helper()
	fake := clerkfake.New()
	fake.SetSecretKey(secretKey)
	fake.SetRateLimit(10, 10*time.Second)
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	api := clerk.NewAPI(clerk.APIConfig{SecretKey: secretKey, URL: srv.URL + "/v1", RequestsPerSecond: 200, HTTPClient: srv.Client()})
	return fake, api
}

func withClerk(db *bun.DB, api *clerk.API) *reconcile.Reconciler {
	r := newReconciler(db, nil)
	r.Directory, r.Writer = api, api
	r.Service.MetadataOutbox = true
	return r
}

func TestBackfillFromClerk(t *testing.T) {
	t.Parallel()
	db, _ := pgtest.New(t)
	ctx := context.Background()
	fake, api := fakeClerk(t)
	svc := &ledger.Service{Store: postgres.NewStore(db), Decode: clerk.Decode, SignupCredits: 20, MetadataOutbox: true}

	// Clerk holds 1,000 users; 137 of them never reached the webhook.
	const total, lost = 1000, 137
	base := time.Now().Add(-48 * time.Hour).Truncate(time.Millisecond)
	for i := range total {
		u := clerkfake.User{ID: fmt.Sprintf("user_bf%04d", i), Email: fmt.Sprintf("bf%04d@example.com", i),
			CreatedAt: base.Add(time.Duration(i) * time.Minute)}
		u.UpdatedAt = u.CreatedAt
		fake.AddUser(u)
		if i%7 == 3 && i/7 < lost { // 137 users spread across the range
			continue
		}
		body := fmt.Sprintf(`{"type":"user.created","data":{"id":%q,"email_addresses":[{"id":"e","email_address":%q}],"primary_email_address_id":"e","updated_at":%d}}`,
			u.ID, u.Email, u.UpdatedAt.UnixMilli())
		if _, err := svc.Process(ctx, ledger.Delivery{SvixID: "msg_" + u.ID, Body: []byte(body), ReceivedAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	if n := scalar[int](t, db, "SELECT count(*) FROM users"); n != total-lost {
		t.Fatalf("setup: %d users known, want %d", n, total-lost)
	}
	// The outbox already owes the known users their metadata; deliver it
	// first so that the run below shows only the backfill's own writes.
	rec := withClerk(db, api)
	first, err := rec.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if first.Backfill.Found != lost || first.Backfill.Done != lost || first.Backfill.Failed != 0 || first.Outcome != "success" {
		t.Errorf("backfill = %+v (outcome %s), want %d found and granted", first.Backfill, first.Outcome, lost)
	}
	if n := scalar[int](t, db, "SELECT count(*) FROM users WHERE available_credits = 20"); n != total {
		t.Errorf("%d users hold 20 credits, want all %d", n, total)
	}
	if n := scalar[int](t, db, "SELECT count(*) FROM credit_transactions WHERE reason = 'signup_bonus'"); n != total {
		t.Errorf("signup credits = %d, want exactly %d", n, total)
	}
	if first.Outbox.Done != total {
		t.Errorf("metadata written for %d users, want %d", first.Outbox.Done, total)
	}
	if v := fake.RateLimitViolations(); v != 0 {
		t.Errorf("the fake saw %d requests over Clerk's per-user rate limit", v)
	}
	wm, ok, err := postgres.NewStore(db).Watermark(ctx, reconcile.WatermarkBackfill)
	if err != nil || !ok || !wm.Equal(base.Add((total-1)*time.Minute)) {
		t.Errorf("watermark = %v, %v, %v; want the newest user's created_at", wm, ok, err)
	}

	// A second run lists only the overlap and changes nothing.
	before := snapshot(t, db)
	calls := len(fake.Calls())
	second, err := rec.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if second.Backfill.Found != 0 || second.Outbox.Found != 0 {
		t.Errorf("second run found work: %+v", second)
	}
	before["reconcile_state"], before["reconcile_runs"] = "", ""
	after := snapshot(t, db)
	after["reconcile_state"], after["reconcile_runs"] = "", ""
	if diff := cmp.Diff(before, after); diff != "" {
		t.Errorf("second run changed the ledger (-before +after):\n%s", diff)
	}
	if n := len(fake.Calls()) - calls; n != 1 {
		t.Errorf("second run made %d Clerk calls, want 1 list call", n)
	}
	pgtest.CheckInvariants(t, db)
}

func TestBackfillSkipsDeletedAndHonoursRetryAfter(t *testing.T) {
	t.Parallel()
	db, _ := pgtest.New(t)
	ctx := context.Background()
	fake, api := fakeClerk(t)
	now := time.Now().Truncate(time.Millisecond)
	fake.AddUsers(clerkfake.User{ID: "user_alive", CreatedAt: now.Add(-time.Hour)}, clerkfake.User{ID: "user_tomb", CreatedAt: now.Add(-time.Hour)})
	exec(t, db, "INSERT INTO users (clerk_id, deleted_at) VALUES ('user_tomb', now())")
	fake.FailNext("GET /v1/users", clerkfake.Fault{Status: 429, RetryAfter: time.Second})

	start := time.Now()
	sum, err := withClerk(db, api).Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < time.Second {
		t.Errorf("run took %s: the 429's Retry-After of 1s was not honoured", took)
	}
	if sum.Backfill.Done != 1 || sum.Backfill.Failed != 0 {
		t.Errorf("backfill = %+v, want the live user granted after the 429", sum.Backfill)
	}
	if got := scalar[string](t, db, "SELECT (deleted_at IS NOT NULL)::text || '/' || available_credits FROM users WHERE clerk_id = 'user_tomb'"); got != "true/0" {
		t.Errorf("tombstoned user = %s, want still deleted with no credits", got)
	}
	pgtest.CheckInvariants(t, db)
}

func TestBackfillFailureKeepsWatermark(t *testing.T) {
	t.Parallel()
	db, _ := pgtest.New(t)
	ctx := context.Background()
	fake, api := fakeClerk(t)
	fake.AddUsers(clerkfake.User{ID: "user_1", CreatedAt: time.Now().Add(-time.Hour)})
	fake.FailNext("GET /v1/users", clerkfake.Fault{Status: 500})
	sum, err := withClerk(db, api).Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Backfill.Error == "" || sum.Outcome != "partial" {
		t.Errorf("summary = %+v, want a backfill error and a partial run", sum)
	}
	if _, ok, _ := postgres.NewStore(db).Watermark(ctx, reconcile.WatermarkBackfill); ok {
		t.Error("watermark moved although the listing failed")
	}
	// The next run picks it up.
	sum, err = withClerk(db, api).Run(ctx)
	if err != nil || sum.Backfill.Done != 1 {
		t.Errorf("retry run = %+v, %v; want the user backfilled", sum.Backfill, err)
	}
}

func TestMetadataWrittenOnceThroughFailures(t *testing.T) {
	t.Parallel()
	db, _ := pgtest.New(t)
	ctx := context.Background()
	fake, api := fakeClerk(t)
	fake.AddUser(clerkfake.User{ID: "user_meta", Email: "m@example.com", CreatedAt: time.Now().Add(-time.Minute),
		PublicMetadata: map[string]any{"plan": "free"}})
	store := postgres.NewStore(db)
	svc := &ledger.Service{Store: store, Decode: clerk.Decode, SignupCredits: 20, MetadataOutbox: true}
	if _, err := svc.Process(ctx, ledger.Delivery{SvixID: "msg_meta", ReceivedAt: time.Now(),
		Body: []byte(`{"type":"user.created","data":{"id":"user_meta"}}`)}); err != nil {
		t.Fatal(err)
	}
	// Clerk answers 500 to the first write and 429 to the second.
	fake.FailNext("PATCH /v1/users/user_meta/metadata", clerkfake.Fault{Status: 500}, clerkfake.Fault{Status: 429, RetryAfter: time.Second})
	d := &reconcile.Deliverer{Store: store, Writer: api, Metrics: reconcile.NewMetrics(prometheus.NewRegistry()), Log: discard, MaxAttempts: 5}

	// The worker tries as soon as the grant commits: 500.
	res, err := d.DeliverOne(ctx)
	if err != nil || !res.Found || res.Delivered {
		t.Fatalf("first attempt = %+v, %v; want a failure", res, err)
	}
	// Not due again until the backoff passes; then 429.
	if res, _ := d.DeliverOne(ctx); res.Found {
		t.Fatal("retried before its backoff")
	}
	exec(t, db, "UPDATE clerk_metadata_outbox SET next_attempt_at = now()") // as if the backoff passed
	if res, err := d.DeliverOne(ctx); err != nil || res.Delivered {
		t.Fatalf("second attempt = %+v, %v; want a 429", res, err)
	}
	if got := scalar[string](t, db, "SELECT status || ':' || attempts FROM clerk_metadata_outbox"); got != "pending:1" {
		t.Errorf("after a 500 and a 429 the message is %s, want pending:1 (a 429 uses no attempt)", got)
	}
	exec(t, db, "UPDATE clerk_metadata_outbox SET next_attempt_at = now()") // Retry-After passed
	sum, err := withClerk(db, api).Run(ctx)
	if err != nil || sum.Outbox.Done != 1 {
		t.Fatalf("reconcile = %+v, %v; want the write delivered", sum.Outbox, err)
	}
	u, _ := fake.User("user_meta")
	want := map[string]any{"plan": "free", "creditgate": map[string]any{
		"user_id": float64(scalar[int64](t, db, "SELECT id FROM users WHERE clerk_id = 'user_meta'")), "signup_credits": float64(20)}}
	if diff := cmp.Diff(want, u.PublicMetadata); diff != "" {
		t.Errorf("public metadata (-want +got):\n%s", diff)
	}
	if n := fake.MetadataWrites("user_meta"); n != 1 {
		t.Errorf("successful metadata writes = %d, want exactly 1", n)
	}
	// Nothing more to do, ever.
	if sum, _ := withClerk(db, api).Run(ctx); sum.Outbox.Found != 0 || fake.MetadataWrites("user_meta") != 1 {
		t.Errorf("another run wrote again: %+v", sum.Outbox)
	}
}

func TestMetadataParkedDeadAfterAttempts(t *testing.T) {
	t.Parallel()
	db, _ := pgtest.New(t)
	ctx := context.Background()
	fake, api := fakeClerk(t)
	fake.AddUser(clerkfake.User{ID: "user_ghost", CreatedAt: time.Now()})
	// Clerk fails every write: a fault retrying can fix, until it cannot.
	fake.FailNext("PATCH /v1/users/user_ghost/metadata",
		clerkfake.Fault{Status: 500}, clerkfake.Fault{Status: 502}, clerkfake.Fault{Status: 503})
	store := postgres.NewStore(db)
	svc := &ledger.Service{Store: store, Decode: clerk.Decode, SignupCredits: 20, MetadataOutbox: true}
	if _, err := svc.Process(ctx, ledger.Delivery{SvixID: "m", ReceivedAt: time.Now(), Body: []byte(`{"type":"user.created","data":{"id":"user_ghost"}}`)}); err != nil {
		t.Fatal(err)
	}
	d := &reconcile.Deliverer{Store: store, Writer: api, Log: discard, MaxAttempts: 3}
	var dead bool
	for i := 0; i < 3; i++ {
		exec(t, db, "UPDATE clerk_metadata_outbox SET next_attempt_at = now()")
		res, err := d.DeliverOne(ctx)
		if err != nil {
			t.Fatal(err)
		}
		dead = res.Dead
	}
	if !dead {
		t.Error("not parked as dead after 3 attempts")
	}
	if got := scalar[string](t, db, "SELECT status || ':' || attempts FROM clerk_metadata_outbox"); got != "dead:3" {
		t.Errorf("message = %s, want dead:3", got)
	}
	var b ledger.Backlog
	if b, _ = store.Backlog(ctx); b.OutboxDead != 1 || b.OutboxPending != 0 {
		t.Errorf("backlog = %+v", b)
	}
}

// TestMetadataForAUserGoneFromClerkIsSkipped: a 404 (the user was deleted in
// Clerk before the write landed) cannot be fixed by retrying; the message
// ends as skipped with the reason at its first attempt, counted, and is
// neither pending nor dead (nothing pages).
func TestMetadataForAUserGoneFromClerkIsSkipped(t *testing.T) {
	t.Parallel()
	db, _ := pgtest.New(t)
	ctx := context.Background()
	fake, api := fakeClerk(t) // user_gone is unknown to Clerk: its write is a 404
	store := postgres.NewStore(db)
	svc := &ledger.Service{Store: store, Decode: clerk.Decode, SignupCredits: 20, MetadataOutbox: true}
	if _, err := svc.Process(ctx, ledger.Delivery{SvixID: "m", ReceivedAt: time.Now(), Body: []byte(`{"type":"user.created","data":{"id":"user_gone"}}`)}); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	d := &reconcile.Deliverer{Store: store, Writer: api, Log: discard, MaxAttempts: 12, Metrics: reconcile.NewMetrics(reg)}
	res, err := d.DeliverOne(ctx)
	if err != nil || !res.Found || !res.Skipped || res.Dead || !errors.Is(res.Err, ledger.ErrPermanent) {
		t.Fatalf("DeliverOne = %+v, %v; want skipped for good", res, err)
	}
	if got := scalar[string](t, db, "SELECT status || ':' || attempts || ':' || last_error FROM clerk_metadata_outbox"); !strings.HasPrefix(got, "skipped:1:") || !strings.Contains(got, "404") {
		t.Errorf("message = %s, want skipped:1 with the 404 as its reason", got)
	}
	if res, err := d.DeliverOne(ctx); err != nil || res.Found {
		t.Errorf("a skipped message was handed out again: %+v, %v", res, err)
	}
	if b, _ := store.Backlog(ctx); b.OutboxDead != 0 || b.OutboxPending != 0 {
		t.Errorf("backlog = %+v, want nothing pending or dead", b)
	}
	if n := metricstest.Value(t, reg, "creditgate_outbox_deliveries_total", "result", "skipped"); n != 1 {
		t.Errorf("creditgate_outbox_deliveries_total{result=\"skipped\"} = %v, want 1", n)
	}
	if fake.MetadataWrites("user_gone") != 0 {
		t.Error("a write for a user Clerk does not have succeeded")
	}
}

// TestSlowClerkHoldsNoConnection: while the outbox worker waits on a Clerk
// that does not answer, it holds no database connection, so deliveries keep
// going at full speed through a pool of ONE connection: 200 new users, none
// of them waiting for a connection. (Before the claim/call/record split the
// worker kept its claim's transaction, and the pool's one connection, open
// for the whole call.)
func TestSlowClerkHoldsNoConnection(t *testing.T) {
	t.Parallel()
	db, _ := pgtest.NewWith(t, postgres.Options{MaxConns: 1})
	ctx := context.Background()
	fake := clerkfake.New()
	fake.SetSecretKey(secretKey)
	fake.AddUser(clerkfake.User{ID: "user_first", Email: "f@example.com", CreatedAt: time.Now().Add(-time.Minute)})
	inCall, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPatch {
			once.Do(func() { close(inCall) })
			<-release // Clerk answers only when the test says so
		}
		fake.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	api := clerk.NewAPI(clerk.APIConfig{SecretKey: secretKey, URL: srv.URL + "/v1", RequestsPerSecond: 200, HTTPClient: srv.Client()})
	store := postgres.NewStore(db)
	svc := &ledger.Service{Store: store, Decode: clerk.Decode, SignupCredits: 20, MetadataOutbox: true}
	if _, err := svc.Process(ctx, ledger.Delivery{SvixID: "msg_first", ReceivedAt: time.Now(),
		Body: []byte(`{"type":"user.created","data":{"id":"user_first"}}`)}); err != nil {
		t.Fatal(err)
	}
	d := &reconcile.Deliverer{Store: store, Writer: api, Metrics: reconcile.NewMetrics(prometheus.NewRegistry()), Log: discard, MaxAttempts: 5}
	delivered := make(chan ledger.OutboxResult, 1)
	go func() {
		res, err := d.DeliverOne(ctx)
		if err != nil {
			t.Errorf("DeliverOne: %v", err)
		}
		delivered <- res
	}()
	<-inCall // the worker has claimed the message and is waiting on Clerk

	waits := db.DB.Stats().WaitCount
	for i := range 200 {
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := svc.Process(dctx, ledger.Delivery{SvixID: fmt.Sprintf("msg_%d", i), ReceivedAt: time.Now(),
			Body: fmt.Appendf(nil, `{"type":"user.created","data":{"id":"user_%d"}}`, i)})
		cancel()
		if err != nil {
			t.Fatalf("delivery %d while the worker waits on Clerk: %v", i, err)
		}
	}
	if n := db.DB.Stats().WaitCount - waits; n != 0 {
		t.Errorf("%d deliveries waited for the pool's connection while the worker waited on Clerk, want 0", n)
	}
	select {
	case res := <-delivered:
		t.Fatalf("the worker finished (%+v) before Clerk answered", res)
	default:
	}
	close(release)
	if res := <-delivered; !res.Delivered {
		t.Errorf("after Clerk answered: %+v, want the write delivered", res)
	}
	if got := scalar[int64](t, db, "SELECT count(*) FROM users"); got != 201 {
		t.Errorf("%d users, want 201", got)
	}
	pgtest.CheckInvariants(t, db)
}
