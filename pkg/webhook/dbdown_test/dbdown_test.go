package dbdown_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/uptrace/bun"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/creditgate/creditgate/pkg/clerk"
	"github.com/creditgate/creditgate/pkg/clerk/clerkevent"
	"github.com/creditgate/creditgate/pkg/ledger"
	"github.com/creditgate/creditgate/pkg/metricstest"
	"github.com/creditgate/creditgate/pkg/pgtest"
	"github.com/creditgate/creditgate/pkg/postgres"
	"github.com/creditgate/creditgate/pkg/webhook"
	"github.com/creditgate/creditgate/pkg/webhook/svixsender"
)

var secret = "whsec_" + base64.StdEncoding.EncodeToString([]byte("creditgate test secret A 32 byte"))

type response struct {
	Status int
	Header http.Header
	Body   map[string]any
}

type client struct {
	url string
	c   *http.Client
}

func (c client) do(t *testing.T, method, path string, header http.Header, body []byte) response {
	t.Helper()
	req, err := http.NewRequest(method, c.url+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := c.c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	r := response{Status: resp.StatusCode, Header: resp.Header}
	if err := json.Unmarshal(raw, &r.Body); err != nil {
		t.Fatalf("%s %s: body %q is not a JSON object: %v", method, path, raw, err)
	}
	return r
}

// deliver sends body as Svix sends every attempt: signed afresh, timestamped now.
func (c client) deliver(t *testing.T, svixID string, body []byte) response {
	t.Helper()
	h, err := svixsender.Sign(secret, svixsender.Message{ID: svixID, Body: body}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return c.do(t, http.MethodPost, "/api/webhooks/clerk", h, body)
}

func userCreated(clerkID, email string) []byte {
	return clerkevent.Event{Type: clerkevent.UserCreated, UserID: clerkID, Email: email}.MustBody()
}

func processed(svixID, clerkID string) map[string]any {
	return map[string]any{
		"svix_id": svixID, "status": "processed", "event_type": "user.created",
		"clerk_user_id": clerkID, "credits_granted": float64(20),
	}
}

func wantResponse(t *testing.T, what string, got response, wantStatus int, wantBody map[string]any) {
	t.Helper()
	if got.Status != wantStatus {
		t.Errorf("%s: status %d, want %d (body %v)", what, got.Status, wantStatus, got.Body)
	}
	if diff := cmp.Diff(wantBody, got.Body); diff != "" {
		t.Errorf("%s: body (-want +got):\n%s", what, diff)
	}
}

// state is what deliveries can change: balances by clerk_id, ledger entries
// as "clerk_id reason amount svix_id", and event statuses by svix_id.
type state struct {
	Balances map[string]int64
	Entries  []string
	Events   map[string]string
}

func snapshot(t *testing.T, db bun.IDB) state {
	t.Helper()
	ctx := context.Background()
	s := state{Balances: map[string]int64{}, Events: map[string]string{}}
	scan := func(q string, each func(*sql.Rows) error) {
		t.Helper()
		rows, err := db.QueryContext(ctx, q)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		defer rows.Close()
		for rows.Next() {
			if err := each(rows); err != nil {
				t.Fatal(err)
			}
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
	}
	scan(`SELECT clerk_id, available_credits FROM users`, func(r *sql.Rows) error {
		var id string
		var n int64
		err := r.Scan(&id, &n)
		s.Balances[id] = n
		return err
	})
	scan(`SELECT clerk_id || ' ' || reason || ' ' || amount || ' ' || coalesce(webhook_event_id, '') FROM credit_transactions ORDER BY id`,
		func(r *sql.Rows) error {
			var e string
			err := r.Scan(&e)
			s.Entries = append(s.Entries, e)
			return err
		})
	scan(`SELECT svix_id, status FROM webhook_events`, func(r *sql.Rows) error {
		var id, status string
		err := r.Scan(&id, &status)
		s.Events[id] = status
		return err
	})
	return s
}

func wantState(t *testing.T, what string, db bun.IDB, want state) {
	t.Helper()
	if diff := cmp.Diff(want, snapshot(t, db)); diff != "" {
		t.Errorf("%s: database state (-want +got):\n%s", what, diff)
	}
}

// TestDatabaseDown stops PostgreSQL between two deliveries: the second gets a
// 503 that Svix retries, leaves nothing behind, and its retry after the
// restart is processed exactly once. Not parallel: it stops the server.
// Against a server that is not the tests' own (TEST_DATABASE_URL), the
// receiver reaches it through a relay that the test cuts off instead.
func TestDatabaseDown(t *testing.T) {
	db, dbURL := pgtest.New(t)
	var server interface {
		Stop() error
		Restart(context.Context) error
	}
	if s := pgtest.Server(); s != nil {
		server = s
	} else {
		u, err := url.Parse(dbURL)
		if err != nil {
			t.Fatal(err)
		}
		p := startProxy(t, u.Host)
		server = p
		if db, err = postgres.Open(p.url(dbURL), postgres.Options{MaxConns: 4}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
	}
	v, err := webhook.NewVerifier([]string{secret})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	h := webhook.New(webhook.Config{
		Verifier: v,
		Processor: &ledger.Service{
			Store: postgres.NewStore(db), Decode: clerk.Decode, SignupCredits: ledger.DefaultSignupCredits,
		},
		Ready:          func(ctx context.Context) error { return postgres.Ready(ctx, db) },
		Metrics:        webhook.NewMetrics(reg),
		Logger:         slog.New(slog.DiscardHandler),
		Tracer:         noop.NewTracerProvider().Tracer("dbdown_test"),
		ProcessTimeout: 5 * time.Second,
	})
	srv := httptest.NewServer(h.Routes())
	t.Cleanup(srv.Close)
	c := client{url: srv.URL, c: srv.Client()}

	wantResponse(t, "/healthz", c.do(t, http.MethodGet, "/healthz", nil, nil), http.StatusOK, map[string]any{"status": "ok"})
	wantResponse(t, "/readyz", c.do(t, http.MethodGet, "/readyz", nil, nil), http.StatusOK, map[string]any{"status": "ready"})
	wantResponse(t, "first delivery", c.deliver(t, "msg_1", userCreated("user_1", "a@example.com")),
		http.StatusOK, processed("msg_1", "user_1"))

	if err := server.Stop(); err != nil {
		t.Fatalf("stop PostgreSQL: %v", err)
	}
	up := false
	t.Cleanup(func() {
		// Bring the server back for pgtest's own cleanup if the test stopped early.
		if !up {
			_ = server.Restart(context.Background())
		}
	})

	wantResponse(t, "/healthz while the database is down", c.do(t, http.MethodGet, "/healthz", nil, nil),
		http.StatusOK, map[string]any{"status": "ok"})
	if got := c.do(t, http.MethodGet, "/readyz", nil, nil); got.Status != http.StatusServiceUnavailable || got.Body["status"] != "not ready" {
		t.Errorf("/readyz while the database is down = %d %v, want 503 not ready", got.Status, got.Body)
	}
	body2 := userCreated("user_2", "b@example.com")
	got := c.deliver(t, "msg_2", body2)
	wantResponse(t, "delivery while the database is down", got, http.StatusServiceUnavailable,
		map[string]any{"error": "Service Unavailable", "svix_id": "msg_2"})
	if ra := got.Header.Get("Retry-After"); ra != strconv.Itoa(webhook.RetryAfterSeconds) {
		t.Errorf("Retry-After = %q, want %d", ra, webhook.RetryAfterSeconds)
	}
	if n := metricstest.Value(t, reg, "creditgate_webhook_deliveries_total", "outcome", "failed"); n != 1 {
		t.Errorf(`creditgate_webhook_deliveries_total{outcome="failed"} = %v, want 1`, n)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := server.Restart(ctx); err != nil {
		t.Fatalf("restart PostgreSQL: %v", err)
	}
	up = true

	// The receiver's pool reconnects on its own; readiness says when. Bounded,
	// as a kubelet's probe would be. (Through PgBouncer, a server that was
	// down is not tried again for server_login_retry: readiness covers that
	// too.)
	ready := false
	for range 50 {
		if c.do(t, http.MethodGet, "/readyz", nil, nil).Status == http.StatusOK {
			ready = true
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !ready {
		t.Fatal("/readyz did not return 200 within 5s of the restart")
	}

	// A fresh pool for the assertions: the receiver's pool may still hold
	// connections the restart killed.
	check, err := postgres.Open(dbURL, postgres.Options{MaxConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer check.Close()
	wantState(t, "after the failed delivery", check, state{
		Balances: map[string]int64{"user_1": 20},
		Entries:  []string{"user_1 signup_bonus 20 msg_1"},
		Events:   map[string]string{"msg_1": "processed"},
	})

	// Svix retries the same message, re-signed with a fresh timestamp. A dead
	// pooled connection may still cost one more 503, which Svix would retry.
	var attempts int
	for attempts = 1; attempts <= 5; attempts++ {
		got = c.deliver(t, "msg_2", body2)
		if got.Status != http.StatusServiceUnavailable {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("retry processed after %d attempt(s)", attempts)
	wantResponse(t, "retry after the restart", got, http.StatusOK, processed("msg_2", "user_2"))
	wantResponse(t, "second retry", c.deliver(t, "msg_2", body2), http.StatusOK, map[string]any{
		"svix_id": "msg_2", "status": "duplicate", "event_type": "user.created",
		"clerk_user_id": "user_2", "credits_granted": float64(0),
	})

	wantState(t, "after the restart", check, state{
		Balances: map[string]int64{"user_1": 20, "user_2": 20},
		Entries:  []string{"user_1 signup_bonus 20 msg_1", "user_2 signup_bonus 20 msg_2"},
		Events:   map[string]string{"msg_1": "processed", "msg_2": "processed"},
	})
	pgtest.CheckInvariants(t, check)
}
