package creditsapi_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/uptrace/bun"

	"github.com/creditgate/creditgate/pkg/clerk"
	"github.com/creditgate/creditgate/pkg/clerk/clerkfake"
	"github.com/creditgate/creditgate/pkg/creditsapi"
	"github.com/creditgate/creditgate/pkg/creditsapi/client"
	"github.com/creditgate/creditgate/pkg/ledger"
	"github.com/creditgate/creditgate/pkg/pgtest"
	"github.com/creditgate/creditgate/pkg/postgres"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

const (
	appKey    = "app-key-0123456789abcdef0123456789"
	readerKey = "reader-key-0123456789abcdef01234567"
)

// validator checks every response a test sees against api/openapi.yaml.
type validator struct {
	t      testing.TB
	router routers.Router
	next   http.RoundTripper
}

func (v *validator) RoundTrip(req *http.Request) (*http.Response, error) {
	var reqBody []byte
	if req.Body != nil {
		reqBody, _ = io.ReadAll(req.Body)
		req.Body = io.NopCloser(bytes.NewReader(reqBody))
	}
	resp, err := v.next.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	vreq := req.Clone(context.Background())
	vreq.Body = io.NopCloser(bytes.NewReader(reqBody))
	route, params, err := v.router.FindRoute(vreq)
	if err != nil {
		if resp.StatusCode != http.StatusNotFound && resp.StatusCode != http.StatusMethodNotAllowed {
			v.t.Errorf("%s %s is not in the OpenAPI document: %v", req.Method, req.URL.Path, err)
		}
		return resp, nil
	}
	in := &openapi3filter.RequestValidationInput{Request: vreq, PathParams: params, Route: route,
		Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: resp.StatusCode, Header: resp.Header,
		Options: &openapi3filter.Options{IncludeResponseStatus: true}}
	out.SetBodyBytes(body)
	if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
		v.t.Errorf("%s %s answered %d %s, which the OpenAPI document does not allow: %v", req.Method, req.URL.Path, resp.StatusCode, body, err)
	}
	return resp, nil
}

// apiEnv is the API as cmd/webhook serves it, over real HTTP, on its own
// database holding user_a with its 20 signup credits.
type apiEnv struct {
	db     *bun.DB
	url    string
	c      *client.ClientWithResponses
	reader *client.ClientWithResponses
	anon   *client.ClientWithResponses
	http   *http.Client
}

func newAPIEnv(t *testing.T) *apiEnv {
	t.Helper()
	return newAPIEnvWith(t, nil)
}

// newAPIEnvWith is newAPIEnv with just-in-time provisioning from a Clerk
// Backend API (the fake) when fake is set.
func newAPIEnvWith(t *testing.T, fake *clerkfake.Server) *apiEnv {
	t.Helper()
	return newAPIEnvFull(t, fake, nil)
}

// newAPIEnvWithReviewer is newAPIEnv accepting ServiceAccount tokens.
func newAPIEnvWithReviewer(t *testing.T, rv *creditsapi.TokenReviewer) *apiEnv {
	t.Helper()
	return newAPIEnvFull(t, nil, rv)
}

func newAPIEnvFull(t *testing.T, fake *clerkfake.Server, rv *creditsapi.TokenReviewer) *apiEnv {
	t.Helper()
	return newAPIEnvTuned(t, fake, rv, nil)
}

// newAPIEnvConfig is newAPIEnv with the server's configuration adjusted.
func newAPIEnvConfig(t *testing.T, tune func(*creditsapi.Config)) *apiEnv {
	t.Helper()
	return newAPIEnvTuned(t, nil, nil, tune)
}

func newAPIEnvTuned(t *testing.T, fake *clerkfake.Server, rv *creditsapi.TokenReviewer, tune func(*creditsapi.Config)) *apiEnv {
	t.Helper()
	db, _ := pgtest.New(t)
	store := postgres.NewStore(db)
	svc := &ledger.Service{Store: store, Decode: clerk.Decode, SignupCredits: 20}
	if _, err := svc.Process(context.Background(), ledger.Delivery{SvixID: "msg_a", ReceivedAt: time.Now(),
		Body: []byte(`{"type":"user.created","data":{"id":"user_a"}}`)}); err != nil {
		t.Fatal(err)
	}
	keys, err := creditsapi.ParseKeys("app:read+spend+grant:" + appKey + ", reader:read:" + readerKey)
	if err != nil {
		t.Fatal(err)
	}
	cfg := creditsapi.Config{Credits: store, Keys: keys, Logger: slog.New(slog.DiscardHandler),
		Metrics: creditsapi.NewMetrics(prometheus.NewRegistry()), Reviewer: rv}
	if fake != nil {
		fs := httptest.NewServer(fake)
		t.Cleanup(fs.Close)
		api := clerk.NewAPI(clerk.APIConfig{SecretKey: "sk_test_jit", URL: fs.URL + "/v1", RequestsPerSecond: 1000})
		cfg.Provision = func(ctx context.Context, id string) error {
			u, err := api.User(ctx, id)
			if err != nil {
				return err
			}
			_, err = store.EnsureUser(ctx, u, 20, false)
			return err
		}
	}
	if tune != nil {
		tune(&cfg)
	}
	s := creditsapi.New(cfg)
	srv := httptest.NewServer(s.Routes())
	t.Cleanup(srv.Close)

	doc, err := openapi3.NewLoader().LoadFromFile("../../api/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	doc.Servers = openapi3.Servers{{URL: srv.URL}}
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: &validator{t: t, router: router, next: http.DefaultTransport}, Timeout: 30 * time.Second}
	mk := func(key string) *client.ClientWithResponses {
		opts := []client.ClientOption{client.WithHTTPClient(hc)}
		if key != "" {
			opts = append(opts, client.WithRequestEditorFn(func(_ context.Context, r *http.Request) error {
				r.Header.Set("Authorization", "Bearer "+key)
				return nil
			}))
		}
		c, err := client.NewClientWithResponses(srv.URL, opts...)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	return &apiEnv{db: db, url: srv.URL, c: mk(appKey), reader: mk(readerKey), anon: mk(""), http: hc}
}

func key(k string) *client.CreateDebitParams { return &client.CreateDebitParams{IdempotencyKey: k} }

func (e *apiEnv) balance(t *testing.T) client.Balance {
	t.Helper()
	r, err := e.c.GetBalanceWithResponse(context.Background(), "user_a")
	if err != nil || r.JSON200 == nil {
		t.Fatalf("balance: %v %s", err, r.Body)
	}
	return *r.JSON200
}

func TestOpenAPIServedWithoutCredentials(t *testing.T) {
	t.Parallel()
	e := newAPIEnv(t)
	r, err := e.anon.GetOpenAPIWithResponse(context.Background())
	if err != nil || r.StatusCode() != 200 {
		t.Fatalf("GET /v1/openapi.json: %v %d", err, r.StatusCode())
	}
	if _, err := openapi3.NewLoader().LoadFromData(r.Body); err != nil {
		t.Errorf("served document does not load: %v", err)
	}
	// It is api/openapi.yaml, as generated (make generate).
	want, _ := os.ReadFile("openapi.json")
	if !bytes.Equal(r.Body, want) {
		t.Error("served document differs from openapi.json")
	}
}

func TestAuthAndBadRequests(t *testing.T) {
	t.Parallel()
	e := newAPIEnv(t)
	ctx := context.Background()
	body := client.DebitRequest{Amount: 1, Reason: "generation"}
	if r, _ := e.anon.CreateDebitWithResponse(ctx, "user_a", key("k1"), body); r.StatusCode() != 401 || r.ApplicationproblemJSON401.Code != "unauthenticated" {
		t.Errorf("no credentials: %d %s", r.StatusCode(), r.Body)
	}
	if r, _ := e.reader.CreateDebitWithResponse(ctx, "user_a", key("k1"), body); r.StatusCode() != 403 || r.ApplicationproblemJSON403.Code != "forbidden" {
		t.Errorf("read-only key debits: %d %s", r.StatusCode(), r.Body)
	}
	if r, _ := e.reader.GetBalanceWithResponse(ctx, "user_a"); r.StatusCode() != 200 {
		t.Errorf("read-only key reads: %d %s", r.StatusCode(), r.Body)
	}
	raw := func(method, path, auth, idem, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, e.url+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		if idem != "" {
			req.Header.Set("Idempotency-Key", idem)
		}
		resp, err := e.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, tt := range []struct {
		name, method, path, idem, body string
		status                         int
		code                           string
	}{
		{"no Idempotency-Key", "POST", "/v1/users/user_a/debits", "", `{"amount":1,"reason":"generation"}`, 400, "idempotency_key_missing"},
		{"amount 0", "POST", "/v1/users/user_a/debits", "k", `{"amount":0,"reason":"generation"}`, 400, "invalid_request"},
		{"amount negative", "POST", "/v1/users/user_a/debits", "k", `{"amount":-5,"reason":"generation"}`, 400, "invalid_request"},
		{"amount fractional", "POST", "/v1/users/user_a/debits", "k", `{"amount":1.5,"reason":"generation"}`, 400, "invalid_request"},
		{"unknown field", "POST", "/v1/users/user_a/debits", "k", `{"amount":1,"reason":"generation","ammount":5}`, 400, "invalid_request"}, //nolint:misspell // a misspelt field, on purpose
		{"no body", "POST", "/v1/users/user_a/debits", "k", ``, 400, "invalid_request"},
		{"reason with spaces", "POST", "/v1/users/user_a/debits", "k", `{"amount":1,"reason":"a b"}`, 400, "invalid_request"},
		{"bad user id", "GET", "/v1/users/user%20a/balance", "", ``, 400, "invalid_request"},
		{"unknown user", "GET", "/v1/users/user_nobody/balance", "", ``, 404, "user_not_found"},
		{"unknown hold", "GET", "/v1/holds/hold_999", "", ``, 404, "hold_not_found"},
		{"ttl too long", "POST", "/v1/users/user_a/holds", "k", `{"amount":1,"reason":"generation","ttl_seconds":999999}`, 400, "invalid_request"},
		{"grant expiring in the past", "POST", "/v1/users/user_a/grants", "k", `{"amount":1,"reason":"promo","expires_at":"2020-01-01T00:00:00Z"}`, 400, "invalid_request"},
		{"no route", "GET", "/v1/nothing", "", ``, 404, "not_found"},
	} {
		status, b := raw(tt.method, tt.path, appKey, tt.idem, tt.body)
		if status != tt.status || !strings.Contains(b, `"code":"`+tt.code+`"`) {
			t.Errorf("%s: %d %s, want %d %s", tt.name, status, b, tt.status, tt.code)
		}
	}
	// None of it moved a credit.
	if b := e.balance(t); b.Available != 20 {
		t.Errorf("balance = %+v, want 20 untouched", b)
	}
	pgtest.CheckInvariants(t, e.db)
}

// TestConcurrentDebitsOverHTTP: 50 concurrent debits of 1 on a user holding
// 20: exactly 20 succeed, 30 get insufficient_credits, the balance ends at 0.
func TestConcurrentDebitsOverHTTP(t *testing.T) {
	t.Parallel()
	e := newAPIEnv(t)
	var wg sync.WaitGroup
	var mu sync.Mutex
	got := map[int]int{}
	for i := range 50 {
		wg.Go(func() {
			r, err := e.c.CreateDebitWithResponse(context.Background(), "user_a", key(fmt.Sprintf("k%d", i)), client.DebitRequest{Amount: 1, Reason: "generation"})
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			got[r.StatusCode()]++
			mu.Unlock()
			if r.StatusCode() == 409 && (r.ApplicationproblemJSON409.Code != "insufficient_credits" || r.ApplicationproblemJSON409.Available == nil) {
				t.Errorf("refusal %s", r.Body)
			}
		})
	}
	wg.Wait()
	if got[201] != 20 || got[409] != 30 {
		t.Errorf("answers %v, want 20 × 201, 30 × 409", got)
	}
	if b := e.balance(t); b.Available != 0 || b.Used != 20 {
		t.Errorf("balance = %+v, want 0 available, 20 used", b)
	}
	pgtest.CheckInvariants(t, e.db)
}

// TestIdempotencyOverHTTP: 50 concurrent requests with one key: one entry,
// 50 identical answers, 49 marked replayed; the key with another body: 422.
func TestIdempotencyOverHTTP(t *testing.T) {
	t.Parallel()
	e := newAPIEnv(t)
	var wg sync.WaitGroup
	bodies := make([]string, 50)
	replayed := make([]bool, 50)
	for i := range 50 {
		wg.Go(func() {
			r, err := e.c.CreateDebitWithResponse(context.Background(), "user_a", key("once"), client.DebitRequest{Amount: 2, Reason: "generation"})
			if err != nil || r.StatusCode() != 201 {
				t.Errorf("debit: %v %d %s", err, r.StatusCode(), r.Body)
				return
			}
			bodies[i], replayed[i] = string(r.Body), r.HTTPResponse.Header.Get("Idempotent-Replayed") == "true"
		})
	}
	wg.Wait()
	n := 0
	for i := range bodies {
		if bodies[i] != bodies[0] {
			t.Fatalf("answers differ:\n%s\n%s", bodies[i], bodies[0])
		}
		if replayed[i] {
			n++
		}
	}
	if n != 49 {
		t.Errorf("%d replayed, want 49", n)
	}
	r, _ := e.c.CreateDebitWithResponse(context.Background(), "user_a", key("once"), client.DebitRequest{Amount: 3, Reason: "generation"})
	if r.StatusCode() != 422 || r.ApplicationproblemJSON422.Code != "idempotency_key_reused" {
		t.Errorf("same key, other request: %d %s", r.StatusCode(), r.Body)
	}
	if b := e.balance(t); b.Available != 18 {
		t.Errorf("available %d, want 18", b.Available)
	}
	pgtest.CheckInvariants(t, e.db)
}

// TestHoldsRefundsGrantsAndEntriesOverHTTP walks an AI job's life: a hold,
// a partial capture, a refund of part of it, a grant that expires, and the
// history, newest first, a page at a time.
func TestHoldsRefundsGrantsAndEntriesOverHTTP(t *testing.T) {
	t.Parallel()
	e := newAPIEnv(t)
	ctx := context.Background()
	h, err := e.c.CreateHoldWithResponse(ctx, "user_a", &client.CreateHoldParams{IdempotencyKey: "h1"},
		client.HoldRequest{Amount: 10, Reason: "generation", TtlSeconds: 60, Reference: ptr("job_1")})
	if err != nil || h.JSON201 == nil {
		t.Fatalf("hold: %v %s", err, h.Body)
	}
	if b := e.balance(t); b.Available != 10 || b.Held != 10 {
		t.Errorf("after the hold: %+v", b)
	}
	c, err := e.c.CaptureHoldWithResponse(ctx, h.JSON201.HoldId, &client.CaptureHoldParams{IdempotencyKey: "c1"}, client.CaptureRequest{Amount: ptr(int64(7))})
	if err != nil || c.JSON200 == nil || c.JSON200.Status != "captured" || c.JSON200.Captured != 7 || c.JSON200.CaptureEntryId == nil {
		t.Fatalf("capture: %v %s", err, c.Body)
	}
	if v, _ := e.c.VoidHoldWithResponse(ctx, h.JSON201.HoldId, &client.VoidHoldParams{IdempotencyKey: "v1"}); v.StatusCode() != 409 ||
		v.ApplicationproblemJSON409.Code != "hold_not_active" {
		t.Errorf("void of a captured hold: %d %s", v.StatusCode(), v.Body)
	}
	rf, _ := e.c.CreateRefundWithResponse(ctx, *c.JSON200.CaptureEntryId, &client.CreateRefundParams{IdempotencyKey: "r1"},
		client.RefundRequest{Amount: ptr(int64(5)), Reason: "failed_generation"})
	if rf.JSON201 == nil || rf.JSON201.Kind != "refund" || rf.JSON201.RefundOf == nil || *rf.JSON201.RefundOf != *c.JSON200.CaptureEntryId {
		t.Fatalf("refund: %s", rf.Body)
	}
	over, _ := e.c.CreateRefundWithResponse(ctx, *c.JSON200.CaptureEntryId, &client.CreateRefundParams{IdempotencyKey: "r2"},
		client.RefundRequest{Amount: ptr(int64(3)), Reason: "failed_generation"})
	if over.StatusCode() != 409 || over.ApplicationproblemJSON409.Code != "exceeds_refundable" || *over.ApplicationproblemJSON409.Refundable != 2 {
		t.Errorf("refund past the debit: %d %s", over.StatusCode(), over.Body)
	}
	exp := time.Now().Add(24 * time.Hour).UTC().Truncate(time.Second)
	g, _ := e.c.CreateGrantWithResponse(ctx, "user_a", &client.CreateGrantParams{IdempotencyKey: "g1"},
		client.GrantRequest{Amount: 100, Reason: "purchase", ExpiresAt: &exp})
	if g.JSON201 == nil || g.JSON201.ExpiresAt == nil || !g.JSON201.ExpiresAt.Equal(exp) {
		t.Fatalf("grant: %s", g.Body)
	}
	b := e.balance(t)
	if b.Available != 118 || b.Used != 2 || b.NextExpiry == nil || b.NextExpiry.Amount != 100 {
		t.Errorf("balance = %+v (next %+v), want 118 available, 2 used, 100 expiring", b, b.NextExpiry)
	}
	// The history, two at a time: grant, refund, capture, signup.
	var kinds []string
	var cursor *string
	for page := 0; page < 5; page++ {
		r, err := e.c.ListEntriesWithResponse(ctx, "user_a", &client.ListEntriesParams{Limit: ptr(2), Cursor: cursor})
		if err != nil || r.JSON200 == nil {
			t.Fatalf("entries: %v %s", err, r.Body)
		}
		for _, en := range r.JSON200.Data {
			kinds = append(kinds, fmt.Sprintf("%s:%d:%d", en.Kind, en.Amount, en.BalanceAfter))
		}
		if cursor = r.JSON200.NextCursor; cursor == nil {
			break
		}
	}
	if got, want := strings.Join(kinds, " "), "grant:100:118 refund:5:18 capture:7:13 signup:20:20"; got != want {
		t.Errorf("entries = %s, want %s", got, want)
	}
	pgtest.CheckInvariants(t, e.db)
}

func ptr[T any](v T) *T { return &v }

// TestServedDocumentIsTheContract: openapi.json (served, embedded) is
// api/openapi.yaml; `make generate` rewrites it.
func TestServedDocumentIsTheContract(t *testing.T) {
	t.Parallel()
	yamlDoc, err := openapi3.NewLoader().LoadFromFile("../../api/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	jsonDoc, err := openapi3.NewLoader().LoadFromFile("openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := yamlDoc.Validate(context.Background()); err != nil {
		t.Errorf("api/openapi.yaml is not a valid OpenAPI document: %v", err)
	}
	a, _ := yamlDoc.MarshalJSON()
	b, _ := jsonDoc.MarshalJSON()
	if !bytes.Equal(a, b) {
		t.Error("pkg/creditsapi/openapi.json is stale: run make generate")
	}
}

// TestJustInTimeProvisioning: the first request of a user whose user.created
// has not arrived yet is not denied: Clerk is asked, the user created with
// its signup credit in the request's stead, and a user.created racing it
// grants nothing twice. A user Clerk does not have is 404; Clerk unreachable
// is 503, retryable, and stores nothing.
func TestJustInTimeProvisioning(t *testing.T) {
	t.Parallel()
	fake := clerkfake.New()
	fake.SetSecretKey("sk_test_jit")
	for _, id := range []string{"user_jit", "user_race", "user_down"} {
		fake.AddUser(clerkfake.User{ID: id, CreatedAt: time.Now()})
	}
	e := newAPIEnvWith(t, fake)
	ctx := context.Background()

	r, err := e.c.CreateDebitWithResponse(ctx, "user_jit", key("first"), client.DebitRequest{Amount: 5, Reason: "generation"})
	if err != nil || r.JSON201 == nil || r.JSON201.BalanceAfter != 15 {
		t.Fatalf("first debit of an unseen user: %v %d %s", err, r.StatusCode(), r.Body)
	}

	// Requests and the real user.created, all at once: one signup credit.
	svc := &ledger.Service{Store: postgres.NewStore(e.db), Decode: clerk.Decode, SignupCredits: 20}
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Go(func() {
			r, err := e.c.CreateDebitWithResponse(ctx, "user_race", key(fmt.Sprintf("race%d", i)), client.DebitRequest{Amount: 1, Reason: "generation"})
			if err != nil || r.StatusCode() != 201 {
				t.Errorf("debit %d: %v %d %s", i, err, r.StatusCode(), r.Body)
			}
		})
	}
	wg.Go(func() {
		if _, err := svc.Process(ctx, ledger.Delivery{SvixID: "msg_race", ReceivedAt: time.Now(),
			Body: []byte(`{"type":"user.created","data":{"id":"user_race"}}`)}); err != nil {
			t.Errorf("user.created: %v", err)
		}
	})
	wg.Wait()
	b, _ := e.c.GetBalanceWithResponse(ctx, "user_race")
	if b.JSON200 == nil || b.JSON200.Available != 10 {
		t.Errorf("user_race balance %s, want 10 (one signup credit of 20, ten debits of 1)", b.Body)
	}

	if r, _ := e.c.GetBalanceWithResponse(ctx, "user_ghost"); r.StatusCode() != 404 || r.ApplicationproblemJSON404.Code != "user_not_found" {
		t.Errorf("a user Clerk does not have: %d %s", r.StatusCode(), r.Body)
	}
	fake.FailNext("GET /v1/users/user_down", clerkfake.Fault{Status: 500})
	r, _ = e.c.CreateDebitWithResponse(ctx, "user_down", key("down"), client.DebitRequest{Amount: 1, Reason: "generation"})
	if r.StatusCode() != 503 || r.HTTPResponse.Header.Get("Retry-After") == "" {
		t.Errorf("Clerk unreachable: %d %s, want 503 with Retry-After", r.StatusCode(), r.Body)
	}
	// Retried with the same key once Clerk answers: served.
	r, _ = e.c.CreateDebitWithResponse(ctx, "user_down", key("down"), client.DebitRequest{Amount: 1, Reason: "generation"})
	if r.StatusCode() != 201 {
		t.Errorf("retry after Clerk recovered: %d %s", r.StatusCode(), r.Body)
	}
	pgtest.CheckInvariants(t, e.db)
}
