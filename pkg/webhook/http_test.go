package webhook_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
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
)

const webhookPath = "/api/webhooks/clerk"

// env is one receiver as cmd/webhook wires it (real router, verifier, ledger
// service and PostgreSQL store) served over real HTTP, on its own database.
type env struct {
	url    string
	client *http.Client
	db     *bun.DB
	reg    *prometheus.Registry
	// handler is the router itself, for callers that skip the network.
	handler http.Handler
}

// newEnv serves a receiver that accepts signatures made with any of secrets
// (secretA when none is given).
func newEnv(t testing.TB, secrets ...string) *env {
	t.Helper()
	return newEnvWith(t, func(*webhook.Config) {}, secrets...)
}

// newEnvWith is newEnv with the handler's configuration adjusted by tune.
func newEnvWith(t testing.TB, tune func(*webhook.Config), secrets ...string) *env {
	t.Helper()
	if len(secrets) == 0 {
		secrets = []string{secretA}
	}
	db, _ := pgtest.New(t)
	v, err := webhook.NewVerifier(secrets)
	if err != nil {
		t.Fatalf("NewVerifier: %v", err)
	}
	reg := prometheus.NewRegistry()
	cfg := webhook.Config{
		Verifier: v,
		Processor: &ledger.Service{
			Store: postgres.NewStore(db), Decode: clerk.Decode, SignupCredits: ledger.DefaultSignupCredits,
		},
		Ready:   func(ctx context.Context) error { return postgres.Ready(ctx, db) },
		Metrics: webhook.NewMetrics(reg),
		Logger:  slog.New(slog.DiscardHandler),
		Tracer:  noop.NewTracerProvider().Tracer("webhook_test"),
	}
	tune(&cfg)
	h := webhook.New(cfg)
	srv := httptest.NewServer(h.Routes())
	t.Cleanup(srv.Close)
	return &env{url: srv.URL, client: srv.Client(), db: db, reg: reg, handler: h.Routes()}
}

// response is what the receiver answered.
type response struct {
	Status int
	Header http.Header
	// Body is the decoded JSON body.
	Body map[string]any
}

// roundTrip sends req and decodes the JSON answer; it does not fail the test,
// so that goroutines can use it.
func (e *env) roundTrip(req *http.Request) (response, error) {
	resp, err := e.client.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, fmt.Errorf("read response: %w", err)
	}
	r := response{Status: resp.StatusCode, Header: resp.Header}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		return r, fmt.Errorf("response Content-Type = %q, want application/json; body %q", ct, raw)
	}
	if err := json.Unmarshal(raw, &r.Body); err != nil {
		return r, fmt.Errorf("response body %q is not a JSON object: %w", raw, err)
	}
	return r, nil
}

func (e *env) request(t testing.TB, method, path string, header http.Header, body []byte) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, e.url+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	req.Header.Set("Content-Type", "application/json")
	return req
}

// post sends body with header to the webhook endpoint.
func (e *env) post(t testing.TB, header http.Header, body []byte) response {
	t.Helper()
	r, err := e.roundTrip(e.request(t, http.MethodPost, webhookPath, header, body))
	if err != nil {
		t.Fatalf("POST %s: %v", webhookPath, err)
	}
	return r
}

// deliver sends body as Svix does: signed with secretA, timestamped now.
func (e *env) deliver(t testing.TB, svixID string, body []byte) response {
	t.Helper()
	return e.post(t, signed(t, secretA, svixID, time.Now(), body), body)
}

func (e *env) get(t testing.TB, path string) response {
	t.Helper()
	r, err := e.roundTrip(e.request(t, http.MethodGet, path, nil, nil))
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return r
}

// wantCounters checks counter series, keyed name{label="value"} as in PromQL.
func (e *env) wantCounters(t testing.TB, want map[string]float64) {
	t.Helper()
	got := map[string]float64{}
	for series := range want {
		name, label, value := series, "", ""
		if i := strings.IndexByte(series, '{'); i >= 0 {
			name = series[:i]
			kv := strings.TrimSuffix(series[i+1:], "}")
			label, value, _ = strings.Cut(kv, "=")
			value = strings.Trim(value, `"`)
		}
		var pairs []string
		if label != "" {
			pairs = []string{label, value}
		}
		got[series] = metricstest.Value(t, e.reg, name, pairs...)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("metrics (-want +got):\n%s", diff)
	}
}

// userState is one users row.
type userState struct {
	Email     string // "" for NULL
	Available int64
	Used      int64
}

// entry is one credit_transactions row.
type entry struct {
	ClerkID string
	Amount  int64
	Type    string
	Reason  string
	Key     string
	SvixID  string
}

// snapshot is the whole database state that deliveries can change. Empty
// tables are nil, so that want values stay short.
type snapshot struct {
	Users   map[string]userState // by clerk_id
	Entries []entry              // by id
	Events  map[string]string    // svix_id → status
}

func snap(t testing.TB, db bun.IDB) snapshot {
	t.Helper()
	ctx := context.Background()
	var s snapshot
	rows, err := db.QueryContext(ctx, `SELECT clerk_id, coalesce(email, ''), available_credits, used_credits FROM users`)
	if err != nil {
		t.Fatalf("read users: %v", err)
	}
	for rows.Next() {
		var id string
		var u userState
		if err := rows.Scan(&id, &u.Email, &u.Available, &u.Used); err != nil {
			t.Fatal(err)
		}
		if s.Users == nil {
			s.Users = map[string]userState{}
		}
		s.Users[id] = u
	}
	if err := rows.Close(); err != nil {
		t.Fatal(err)
	}
	rows, err = db.QueryContext(ctx, `SELECT clerk_id, amount, type, reason, idempotency_key, coalesce(webhook_event_id, '')
		FROM credit_transactions ORDER BY id`)
	if err != nil {
		t.Fatalf("read credit_transactions: %v", err)
	}
	for rows.Next() {
		var e entry
		if err := rows.Scan(&e.ClerkID, &e.Amount, &e.Type, &e.Reason, &e.Key, &e.SvixID); err != nil {
			t.Fatal(err)
		}
		s.Entries = append(s.Entries, e)
	}
	if err := rows.Close(); err != nil {
		t.Fatal(err)
	}
	rows, err = db.QueryContext(ctx, `SELECT svix_id, status FROM webhook_events`)
	if err != nil {
		t.Fatalf("read webhook_events: %v", err)
	}
	for rows.Next() {
		var id, status string
		if err := rows.Scan(&id, &status); err != nil {
			t.Fatal(err)
		}
		if s.Events == nil {
			s.Events = map[string]string{}
		}
		s.Events[id] = status
	}
	if err := rows.Close(); err != nil {
		t.Fatal(err)
	}
	return s
}

func wantSnapshot(t testing.TB, db bun.IDB, want snapshot) {
	t.Helper()
	if diff := cmp.Diff(want, snap(t, db)); diff != "" {
		t.Errorf("database state (-want +got):\n%s", diff)
	}
}

// signup is the ledger state of one user after their signup grant.
func signup(clerkID, svixID string) entry {
	return entry{ClerkID: clerkID, Amount: 20, Type: "credit", Reason: "signup_bonus", Key: "signup:" + clerkID, SvixID: svixID}
}

// userCreated is a user.created body as Clerk sends it (pkg/clerk/clerkevent),
// with a second, non-primary address listed first. An empty email makes a
// phone-only user (primary_email_address_id null).
func userCreated(clerkID, email string) []byte {
	if email == "" {
		return clerkevent.Event{Type: clerkevent.UserCreated, UserID: clerkID, Phone: "+15555550100"}.MustBody()
	}
	return clerkevent.Event{Type: clerkevent.UserCreated, UserID: clerkID, Email: email, OtherEmails: []string{"other@example.com"}}.MustBody()
}

// processed is the 200 body of a delivery that granted credits.
func processed(svixID, clerkID string, credits float64) map[string]any {
	return map[string]any{
		"svix_id": svixID, "status": "processed", "event_type": "user.created",
		"clerk_user_id": clerkID, "credits_granted": credits,
	}
}

func wantResponse(t testing.TB, what string, got response, wantStatus int, wantBody map[string]any) {
	t.Helper()
	if got.Status != wantStatus {
		t.Errorf("%s: status %d, want %d (body %v)", what, got.Status, wantStatus, got.Body)
	}
	if diff := cmp.Diff(wantBody, got.Body); diff != "" {
		t.Errorf("%s: body (-want +got):\n%s", what, diff)
	}
}

func TestUserCreated(t *testing.T) {
	t.Parallel()
	e := newEnv(t)

	got := e.deliver(t, "msg_1", userCreated("user_1", "a@example.com"))

	wantResponse(t, "delivery", got, http.StatusOK, processed("msg_1", "user_1", 20))
	wantSnapshot(t, e.db, snapshot{
		Users:   map[string]userState{"user_1": {Email: "a@example.com", Available: 20}},
		Entries: []entry{signup("user_1", "msg_1")},
		Events:  map[string]string{"msg_1": "processed"},
	})
	pgtest.CheckInvariants(t, e.db)
	e.wantCounters(t, map[string]float64{
		`creditgate_webhook_deliveries_total{outcome="processed"}`: 1,
		`creditgate_credits_granted_total`:                         20,
	})
}

func TestSequentialDuplicates(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	body := userCreated("user_1", "a@example.com")
	first := signed(t, secretA, "msg_1", time.Now(), body)

	wantResponse(t, "first delivery", e.post(t, first, body), http.StatusOK, processed("msg_1", "user_1", 20))
	duplicate := map[string]any{
		"svix_id": "msg_1", "status": "duplicate", "event_type": "user.created",
		"clerk_user_id": "user_1", "credits_granted": float64(0),
	}
	// Svix re-signs a retry with a fresh timestamp; a replay of the very same
	// request must be just as harmless.
	for i := range 3 {
		wantResponse(t, fmt.Sprintf("retry %d", i), e.deliver(t, "msg_1", body), http.StatusOK, duplicate)
	}
	wantResponse(t, "replay of the first request", e.post(t, first, body), http.StatusOK, duplicate)

	wantSnapshot(t, e.db, snapshot{
		Users:   map[string]userState{"user_1": {Email: "a@example.com", Available: 20}},
		Entries: []entry{signup("user_1", "msg_1")},
		Events:  map[string]string{"msg_1": "processed"},
	})
	pgtest.CheckInvariants(t, e.db)
	e.wantCounters(t, map[string]float64{
		`creditgate_webhook_deliveries_total{outcome="processed"}`: 1,
		`creditgate_webhook_deliveries_total{outcome="duplicate"}`: 4,
		`creditgate_credits_granted_total`:                         20,
	})
}

func TestConcurrentDeliveries(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		n        int
		sameSvix bool
	}{
		{"50 deliveries of one svix-id", 50, true},
		{"20 svix-ids for one user", 20, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			body := userCreated("user_race", "race@example.com")
			svixID := func(i int) string {
				if tt.sameSvix {
					return "msg_race"
				}
				return fmt.Sprintf("msg_race_%02d", i)
			}
			reqs := make([]*http.Request, tt.n)
			for i := range reqs {
				reqs[i] = e.request(t, http.MethodPost, webhookPath, signed(t, secretA, svixID(i), time.Now(), body), body)
			}

			resps := make([]response, tt.n)
			errs := make([]error, tt.n)
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range tt.n {
				wg.Go(func() {
					<-start
					resps[i], errs[i] = e.roundTrip(reqs[i])
				})
			}
			close(start)
			wg.Wait()

			// Exactly one delivery grants the credit. Whatever each delivery
			// answered is what its webhook_events row says.
			want := snapshot{
				Users:  map[string]userState{"user_race": {Email: "race@example.com", Available: 20}},
				Events: map[string]string{},
			}
			statuses := map[string]int{}
			var grants []string
			for i, r := range resps {
				if errs[i] != nil {
					t.Errorf("delivery %d: %v", i, errs[i])
					continue
				}
				if r.Status != http.StatusOK {
					t.Errorf("delivery %d: status %d, want 200 (body %v)", i, r.Status, r.Body)
				}
				status := fmt.Sprint(r.Body["status"])
				statuses[status]++
				if status != "duplicate" {
					want.Events[svixID(i)] = status
				}
				switch c := r.Body["credits_granted"]; c {
				case float64(20):
					grants = append(grants, svixID(i))
				case float64(0):
				default:
					t.Errorf("delivery %d: credits_granted %v, want 20 or 0", i, c)
				}
			}
			if len(grants) != 1 {
				t.Fatalf("deliveries that granted credits: %q, want exactly one", grants)
			}
			want.Entries = []entry{signup("user_race", grants[0])}
			if tt.sameSvix {
				if diff := cmp.Diff(map[string]int{"processed": 1, "duplicate": tt.n - 1}, statuses); diff != "" {
					t.Errorf("response statuses (-want +got):\n%s", diff)
				}
			} else if len(want.Events) != tt.n {
				t.Errorf("%d distinct svix-ids answered, want %d (statuses %v)", len(want.Events), tt.n, statuses)
			}
			wantSnapshot(t, e.db, want)
			pgtest.CheckInvariants(t, e.db)
		})
	}
}

func TestUsersWithoutOrSharingEmail(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, d := range []struct{ svixID, clerkID, email string }{
		{"msg_phone", "user_phone", ""},
		{"msg_a", "user_a", "shared@example.com"},
		{"msg_b", "user_b", "shared@example.com"},
	} {
		got := e.deliver(t, d.svixID, userCreated(d.clerkID, d.email))
		wantResponse(t, d.svixID, got, http.StatusOK, processed(d.svixID, d.clerkID, 20))
	}
	wantSnapshot(t, e.db, snapshot{
		Users: map[string]userState{
			"user_phone": {Available: 20},
			"user_a":     {Email: "shared@example.com", Available: 20},
			"user_b":     {Email: "shared@example.com", Available: 20},
		},
		Entries: []entry{signup("user_phone", "msg_phone"), signup("user_a", "msg_a"), signup("user_b", "msg_b")},
		Events:  map[string]string{"msg_phone": "processed", "msg_a": "processed", "msg_b": "processed"},
	})
	pgtest.CheckInvariants(t, e.db)
}

// TestUnusualFormatting checks that the signature is verified on the exact
// bytes and that decoding does not depend on layout.
func TestUnusualFormatting(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		body      string
		wantEmail string
	}{
		{
			name: "pretty-printed with indentation and CRLF",
			body: "{\r\n    \"type\": \"user.created\",\r\n    \"object\": \"event\",\r\n    \"data\": {\r\n" +
				"        \"id\": \"user_1\",\r\n        \"email_addresses\": [\r\n            {\r\n" +
				"                \"id\": \"idn_1\",\r\n                \"email_address\": \"a@example.com\"\r\n" +
				"            }\r\n        ],\r\n        \"primary_email_address_id\": \"idn_1\"\r\n    }\r\n}\r\n",
			wantEmail: "a@example.com",
		},
		{
			name: "tabs and a trailing newline",
			body: "{\n\t\"data\":\t{\"id\":\"user_1\",\n\t\"email_addresses\":[{\"id\":\"idn_1\",\"email_address\":\"a@example.com\"}],\n" +
				"\t\"primary_email_address_id\":\"idn_1\"},\n\t\"type\":\"user.created\"\n}\n",
			wantEmail: "a@example.com",
		},
		{
			name:      `\u escapes in email, id and type`,
			body:      `{"type":"user\u002ecreated","data":{"id":"user\u005f1","email_addresses":[{"id":"idn_1","email_address":"a\u0040example.com"}],"primary_email_address_id":"idn\u005f1"}}`,
			wantEmail: "a@example.com",
		},
		{
			name:      "non-ASCII email, raw and escaped",
			body:      `{"type":"user.created","data":{"id":"user_1","first_name":"Zoë","email_addresses":[{"id":"idn_1","email_address":"z\u00f6e@b\u00fccher.example"}],"primary_email_address_id":"idn_1"}}`,
			wantEmail: "zöe@bücher.example",
		},
		{
			name:      "keys in odd order, primary id before the addresses",
			body:      `{"data":{"primary_email_address_id":"idn_2","email_addresses":[{"email_address":"b@example.com","id":"idn_1"},{"email_address":"a@example.com","id":"idn_2"}],"object":"user","id":"user_1"},"instance_id":"ins_1","type":"user.created","object":"event"}`,
			wantEmail: "a@example.com",
		},
		{
			name: "extra unknown fields everywhere",
			body: `{"type":"user.created","object":"event","event_attributes":{"http_request":{"client_ip":"192.0.2.1","user_agent":"x"}},"future":[1,2.5,null,true,{"a":[]}],` +
				`"data":{"id":"user_1","object":"user","unsafe_metadata":{},"public_metadata":{"plan":"free","nested":{"deep":[{"x":1e300}]}},` +
				`"email_addresses":[{"id":"idn_1","object":"email_address","email_address":"a@example.com","verification":{"status":"verified","strategy":"email_code"},"linked_to":[]}],` +
				`"primary_email_address_id":"idn_1","created_at":1764000000000,"updated_at":1764000000000,"new_field_2030":"hello"},"timestamp":1764000000000}`,
			wantEmail: "a@example.com",
		},
		{
			name:      "escaped surrogate pair in an unrelated field",
			body:      `{"type":"user.created","data":{"id":"user_1","first_name":"\ud83d\ude00 \u00e9","email_addresses":[{"id":"idn_1","email_address":"a@example.com"}],"primary_email_address_id":"idn_1"}}`,
			wantEmail: "a@example.com",
		},
		{
			// jsonb cannot hold \u0000: the body is kept as raw bytes instead.
			name:      "escaped NUL in an unrelated field",
			body:      `{"type":"user.created","data":{"id":"user_1","first_name":"A\u0000B","email_addresses":[{"id":"idn_1","email_address":"a@example.com"}],"primary_email_address_id":"idn_1"}}`,
			wantEmail: "a@example.com",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)

			got := e.deliver(t, "msg_fmt", []byte(tt.body))

			wantResponse(t, "delivery", got, http.StatusOK, processed("msg_fmt", "user_1", 20))
			wantSnapshot(t, e.db, snapshot{
				Users:   map[string]userState{"user_1": {Email: tt.wantEmail, Available: 20}},
				Entries: []entry{signup("user_1", "msg_fmt")},
				Events:  map[string]string{"msg_fmt": "processed"},
			})
			pgtest.CheckInvariants(t, e.db)
		})
	}
}

// TestLoneSurrogateEscape: a lone UTF-16 surrogate escape such as "\ud800" is
// valid JSON (encoding/json accepts it, and JavaScript's JSON.stringify emits
// it for a lone surrogate) but PostgreSQL's jsonb refuses it. A verified body
// carrying one, even in a field creditgate does not read, must get the answer
// its content deserves, never a 500 that Svix retries in vain.
func TestLoneSurrogateEscape(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		body       string
		wantStatus int
		wantBody   map[string]any
		want       snapshot
	}{
		{
			name:       "user.created with a lone surrogate in first_name",
			body:       `{"type":"user.created","data":{"id":"user_1","first_name":"\ud800","email_addresses":[{"id":"idn_1","email_address":"a@example.com"}],"primary_email_address_id":"idn_1"}}`,
			wantStatus: http.StatusOK,
			wantBody:   processed("msg_surrogate", "user_1", 20),
			want: snapshot{
				Users:   map[string]userState{"user_1": {Email: "a@example.com", Available: 20}},
				Entries: []entry{signup("user_1", "msg_surrogate")},
				Events:  map[string]string{"msg_surrogate": "processed"},
			},
		},
		{
			name:       "user.created whose data.id is a lone surrogate",
			body:       `{"type":"user.created","data":{"id":"\udc00"}}`,
			wantStatus: http.StatusBadRequest,
			wantBody: map[string]any{
				"error": "unprocessable event", "svix_id": "msg_surrogate",
				"reason": `invalid event: field "data.id" is not valid text`,
			},
			want: snapshot{Events: map[string]string{"msg_surrogate": "rejected"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)

			got := e.deliver(t, "msg_surrogate", []byte(tt.body))

			wantResponse(t, "delivery", got, tt.wantStatus, tt.wantBody)
			wantSnapshot(t, e.db, tt.want)
			pgtest.CheckInvariants(t, e.db)
		})
	}
}

// TestSigningSecretRotation covers our side of a rotation: two secrets
// configured, a delivery signed with either verifies.
func TestSigningSecretRotation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		value string
	}{
		{"space separated", secretA + " " + secretB},
		{"comma separated", secretA + "," + secretB},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			secrets, err := webhook.ParseSecrets(tt.value)
			if err != nil {
				t.Fatal(err)
			}
			e := newEnv(t, secrets...)
			now := time.Now()
			bodyA, bodyB, bodyX := userCreated("user_a", "a@example.com"), userCreated("user_b", "b@example.com"), userCreated("user_x", "x@example.com")

			wantResponse(t, "signed with the old secret", e.post(t, signed(t, secretA, "msg_a", now, bodyA), bodyA),
				http.StatusOK, processed("msg_a", "user_a", 20))
			wantResponse(t, "signed with the new secret", e.post(t, signed(t, secretB, "msg_b", now, bodyB), bodyB),
				http.StatusOK, processed("msg_b", "user_b", 20))
			wantResponse(t, "signed with an unknown secret", e.post(t, signed(t, secretUnknown, "msg_x", now, bodyX), bodyX),
				http.StatusUnauthorized, map[string]any{
					"error": "no signature matches a configured signing secret", "reason": webhook.ReasonInvalidSignature,
				})

			wantSnapshot(t, e.db, snapshot{
				Users: map[string]userState{
					"user_a": {Email: "a@example.com", Available: 20},
					"user_b": {Email: "b@example.com", Available: 20},
				},
				Entries: []entry{signup("user_a", "msg_a"), signup("user_b", "msg_b")},
				Events:  map[string]string{"msg_a": "processed", "msg_b": "processed"},
			})
			pgtest.CheckInvariants(t, e.db)
		})
	}
}

// TestSvixSignatureRotation covers Svix's side of a rotation: the header
// carries one signature per secret Svix holds, space separated.
func TestSvixSignatureRotation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	body := userCreated("user_1", "a@example.com")
	now := time.Now()
	h := signed(t, secretA, "msg_1", now, body)
	h.Set("svix-signature", signature(t, secretUnknown, "msg_1", now, body)+" "+h.Get("svix-signature"))

	wantResponse(t, "delivery", e.post(t, h, body), http.StatusOK, processed("msg_1", "user_1", 20))
	wantSnapshot(t, e.db, snapshot{
		Users:   map[string]userState{"user_1": {Email: "a@example.com", Available: 20}},
		Entries: []entry{signup("user_1", "msg_1")},
		Events:  map[string]string{"msg_1": "processed"},
	})
	pgtest.CheckInvariants(t, e.db)
}

// TestRefusedBeforeParsing covers deliveries that fail verification: nothing
// is parsed or stored, and each refusal is counted by reason.
func TestRefusedBeforeParsing(t *testing.T) {
	t.Parallel()
	body := userCreated("user_1", "a@example.com")
	type testCase struct {
		name       string
		header     func(t *testing.T) http.Header
		wantStatus int
		wantReason string
		wantError  string
	}
	var tests []testCase
	for _, missing := range []string{"svix-id", "svix-timestamp", "svix-signature"} {
		tests = append(tests, testCase{
			name: "missing " + missing,
			header: func(t *testing.T) http.Header {
				h := signed(t, secretA, "msg_1", time.Now(), body)
				h.Del(missing)
				return h
			},
			wantStatus: http.StatusBadRequest, wantReason: webhook.ReasonMissingHeaders,
			wantError: "missing header(s): " + missing,
		})
	}
	tests = append(tests, []testCase{
		{
			name:       "no svix headers at all",
			header:     func(*testing.T) http.Header { return http.Header{} },
			wantStatus: http.StatusBadRequest, wantReason: webhook.ReasonMissingHeaders,
			wantError: "missing header(s): svix-id, svix-timestamp, svix-signature",
		},
		{
			name: "svix-timestamp not a number",
			header: func(t *testing.T) http.Header {
				h := signed(t, secretA, "msg_1", time.Now(), body)
				h.Set("svix-timestamp", "yesterday")
				return h
			},
			wantStatus: http.StatusBadRequest, wantReason: webhook.ReasonInvalidHeaders,
			wantError: "svix-timestamp is not a Unix timestamp",
		},
		{
			name: "bad signature",
			header: func(t *testing.T) http.Header {
				h := signed(t, secretA, "msg_1", time.Now(), body)
				h.Set("svix-signature", "v1,"+strings.Repeat("A", 43)+"=")
				return h
			},
			wantStatus: http.StatusUnauthorized, wantReason: webhook.ReasonInvalidSignature,
			wantError: "no signature matches a configured signing secret",
		},
		{
			name: "signed for another body",
			header: func(t *testing.T) http.Header {
				return signed(t, secretA, "msg_1", time.Now(), userCreated("user_1", "evil@example.com"))
			},
			wantStatus: http.StatusUnauthorized, wantReason: webhook.ReasonInvalidSignature,
			wantError: "no signature matches a configured signing secret",
		},
		{
			name: "timestamp 6 minutes old",
			header: func(t *testing.T) http.Header {
				return signed(t, secretA, "msg_1", time.Now().Add(-6*time.Minute), body)
			},
			wantStatus: http.StatusUnauthorized, wantReason: webhook.ReasonTimestampTooOld,
			wantError: "svix-timestamp is more than 5 minutes old",
		},
		{
			name: "timestamp 6 minutes in the future",
			header: func(t *testing.T) http.Header {
				return signed(t, secretA, "msg_1", time.Now().Add(6*time.Minute), body)
			},
			wantStatus: http.StatusUnauthorized, wantReason: webhook.ReasonTimestampTooNew,
			wantError: "svix-timestamp is more than 5 minutes in the future",
		},
	}...)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)

			got := e.post(t, tt.header(t), body)

			wantResponse(t, "delivery", got, tt.wantStatus, map[string]any{"error": tt.wantError, "reason": tt.wantReason})
			wantSnapshot(t, e.db, snapshot{})
			outcome := "unauthorized"
			if tt.wantStatus == http.StatusBadRequest {
				outcome = "bad_request"
			}
			e.wantCounters(t, map[string]float64{
				`creditgate_webhook_verification_failures_total{reason="` + tt.wantReason + `"}`: 1,
				`creditgate_webhook_deliveries_total{outcome="` + outcome + `"}`:                 1,
				`creditgate_webhook_deliveries_total{outcome="processed"}`:                       0,
			})
		})
	}
}

// chunked hides a reader's length, so that the client sends the body with
// Transfer-Encoding: chunked and no Content-Length.
type chunked struct{ io.Reader }

func TestOversizedBody(t *testing.T) {
	t.Parallel()
	// pad returns a signed-able user.created body of exactly n bytes: JSON
	// followed by whitespace, which is still valid JSON.
	pad := func(n int) []byte {
		b := userCreated("user_big", "big@example.com")
		return append(b, bytes.Repeat([]byte(" "), n-len(b))...)
	}
	tests := []struct {
		name          string
		size          int
		contentLength bool
		wantStatus    int
	}{
		{"1 MiB + 1 with Content-Length", webhook.MaxBodyBytes + 1, true, http.StatusRequestEntityTooLarge},
		{"1 MiB + 1 chunked", webhook.MaxBodyBytes + 1, false, http.StatusRequestEntityTooLarge},
		{"4 MiB chunked", 4 * webhook.MaxBodyBytes, false, http.StatusRequestEntityTooLarge},
		{"exactly 1 MiB with Content-Length", webhook.MaxBodyBytes, true, http.StatusOK},
		{"exactly 1 MiB chunked", webhook.MaxBodyBytes, false, http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			body := pad(tt.size)
			req := e.request(t, http.MethodPost, webhookPath, signed(t, secretA, "msg_big", time.Now(), body), body)
			if !tt.contentLength {
				req.Body = io.NopCloser(chunked{bytes.NewReader(body)})
				req.ContentLength = -1
			}

			got, err := e.roundTrip(req)
			if err != nil {
				t.Fatal(err)
			}

			if tt.wantStatus == http.StatusOK {
				wantResponse(t, "delivery", got, http.StatusOK, processed("msg_big", "user_big", 20))
				wantSnapshot(t, e.db, snapshot{
					Users:   map[string]userState{"user_big": {Email: "big@example.com", Available: 20}},
					Entries: []entry{signup("user_big", "msg_big")},
					Events:  map[string]string{"msg_big": "processed"},
				})
				pgtest.CheckInvariants(t, e.db)
				return
			}
			wantResponse(t, "delivery", got, tt.wantStatus, map[string]any{"error": "body larger than 1 MiB"})
			wantSnapshot(t, e.db, snapshot{})
			e.wantCounters(t, map[string]float64{
				`creditgate_webhook_deliveries_total{outcome="too_large"}`: 1,
			})
		})
	}
}

// TestMalformedSignedEvents covers verified bodies that can never be
// processed: 400 with the header that stops Svix retrying, and the body kept
// as a rejected event for an operator.
func TestMalformedSignedEvents(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		body       string
		wantReason string
	}{
		{"not JSON", `{"type":"user.created","data":`, `invalid event: body is not valid JSON`},
		{"empty body", ``, `invalid event: body is not valid JSON`},
		{"JSON array", `[{"type":"user.created"}]`, `invalid event: body is not a JSON object`},
		{"missing type", `{"object":"event","data":{"id":"user_1"}}`, `invalid event: missing field "type"`},
		{"type a number", `{"type":7,"data":{"id":"user_1"}}`, `invalid event: field "type" must be a string`},
		{"missing data", `{"type":"user.created"}`, `invalid event: missing field "data"`},
		{"missing data.id", `{"type":"user.created","data":{"email_addresses":[]}}`, `invalid event: missing field "data.id"`},
		{"data.id a number", `{"type":"user.created","data":{"id":42}}`, `invalid event: field "data.id" must be a string`},
		{"data.id empty", `{"type":"user.created","data":{"id":""}}`, `invalid event: field "data.id" is empty`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			want := map[string]any{"error": "unprocessable event", "reason": tt.wantReason, "svix_id": "msg_bad"}

			// Svix would not retry after the first answer; a retry anyway
			// gets the same answer and changes nothing.
			for _, attempt := range []string{"delivery", "redelivery"} {
				got := e.deliver(t, "msg_bad", []byte(tt.body))
				wantResponse(t, attempt, got, http.StatusBadRequest, want)
				if h := got.Header.Get("webhook-delivery"); h != "abort-message" {
					t.Errorf("%s: webhook-delivery header = %q, want abort-message", attempt, h)
				}
			}
			wantSnapshot(t, e.db, snapshot{Events: map[string]string{"msg_bad": "rejected"}})
			e.wantCounters(t, map[string]float64{
				`creditgate_webhook_deliveries_total{outcome="rejected"}`: 2,
				`creditgate_webhook_deliveries_total{outcome="failed"}`:   0,
			})
		})
	}
}

func TestOtherEventTypeIgnored(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	body := []byte(`{"type":"session.created","object":"event","data":{"id":"sess_1","object":"session","user_id":"user_1","status":"active"}}`)

	got := e.deliver(t, "msg_sess", body)
	if got.Status != http.StatusOK || got.Body["status"] != "ignored" || got.Body["svix_id"] != "msg_sess" ||
		got.Body["event_type"] != "session.created" || got.Body["credits_granted"] != float64(0) {
		t.Errorf("delivery = %d %v, want 200 ignored session.created with 0 credits", got.Status, got.Body)
	}
	again := e.deliver(t, "msg_sess", body)
	if again.Status != http.StatusOK || again.Body["status"] != "duplicate" {
		t.Errorf("redelivery = %d %v, want 200 duplicate", again.Status, again.Body)
	}

	wantSnapshot(t, e.db, snapshot{Events: map[string]string{"msg_sess": "ignored"}})
	e.wantCounters(t, map[string]float64{
		`creditgate_webhook_deliveries_total{outcome="ignored"}`:   1,
		`creditgate_webhook_deliveries_total{outcome="duplicate"}`: 1,
	})
}

func TestHealth(t *testing.T) {
	t.Parallel()
	e := newEnv(t)

	wantResponse(t, "/healthz", e.get(t, "/healthz"), http.StatusOK, map[string]any{"status": "ok"})
	wantResponse(t, "/readyz", e.get(t, "/readyz"), http.StatusOK, map[string]any{"status": "ready"})

	// A database whose schema is behind this binary is not ready.
	if _, err := e.db.ExecContext(context.Background(), "DELETE FROM bun_migrations"); err != nil {
		t.Fatal(err)
	}
	got := e.get(t, "/readyz")
	if got.Status != http.StatusServiceUnavailable || got.Body["status"] != "not ready" ||
		!strings.Contains(fmt.Sprint(got.Body["error"]), "database schema is behind") {
		t.Errorf("/readyz on a schema-behind database = %d %v, want 503 not ready", got.Status, got.Body)
	}
	wantResponse(t, "/healthz", e.get(t, "/healthz"), http.StatusOK, map[string]any{"status": "ok"})
}

// TestUnmatchedRequestsAreCounted: a path no route has (404) and a route
// asked with a method it does not take (405) are counted in
// creditgate_http_requests_total under route "unmatched", with their status,
// so that a scanner or a misconfigured sender shows on the dashboard.
func TestUnmatchedRequestsAreCounted(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for path, want := range map[string]int{"/wp-login.php": http.StatusNotFound, "/api/webhooks/clerk": http.StatusMethodNotAllowed} {
		resp, err := e.client.Get(e.url + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s = %d, want %d", path, resp.StatusCode, want)
		}
	}
	want := map[string]float64{"404": 1, "405": 1}
	got := metricstest.ByLabel(t, e.reg, "creditgate_http_requests_total", "code", "route", "unmatched", "method", http.MethodGet)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("creditgate_http_requests_total{route=\"unmatched\",method=\"GET\"} by code (-want +got):\n%s", diff)
	}
}

// TestDeliverySeriesExistFromTheStart: the delivery route's 200, 500 and
// 503 series, which the error-rate alert divides, exist at 0 before the
// first delivery, so that Prometheus counts a new pod's first answers
// (rate() cannot count what a series held at its first scrape).
func TestDeliverySeriesExistFromTheStart(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	got := metricstest.ByLabel(t, e.reg, "creditgate_http_requests_total", "code", "route", "/api/webhooks/clerk", "method", http.MethodPost)
	if diff := cmp.Diff(map[string]float64{"200": 0, "500": 0, "503": 0}, got); diff != "" {
		t.Errorf("creditgate_http_requests_total{route=\"/api/webhooks/clerk\",method=\"POST\"} before any delivery (-want +got):\n%s", diff)
	}
}
