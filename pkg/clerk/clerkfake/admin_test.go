package clerkfake_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/clerk/clerk-sdk-go/v2"
	"github.com/clerk/clerk-sdk-go/v2/user"
	"github.com/google/go-cmp/cmp"

	"github.com/creditgate/creditgate/pkg/clerk/clerkfake"
)

// admin sends one admin API request and decodes a JSON answer into out, if
// out is not nil.
func admin(t *testing.T, srv *httptest.Server, method, path, body string, wantStatus int, out any) {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, bytes.NewBufferString(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != wantStatus {
		t.Fatalf("%s %s: status %d, want %d: %s", method, path, resp.StatusCode, wantStatus, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: decode %s: %v", method, path, b, err)
		}
	}
}

// TestAdminAPI drives the fake the way e2e does from another process.
func TestAdminAPI(t *testing.T) {
	t.Parallel()
	fake := clerkfake.New()
	fake.SetSecretKey(testKey)
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	client := newClient(srv, testKey)
	ctx := context.Background()
	created := base.UnixMilli()

	admin(t, srv, "GET", "/_fake/healthz", "", 200, nil)
	admin(t, srv, "POST", "/_fake/users", `[
		{"id":"user_a","email":"a@example.test","created_at":`+strconv.FormatInt(created, 10)+`},
		{"id":"user_b","created_at":`+strconv.FormatInt(created+1000, 10)+`,"updated_at":`+strconv.FormatInt(created+5000, 10)+`,"public_metadata":{"plan":"pro"}}
	]`, 200, nil)
	admin(t, srv, "POST", "/_fake/users", `[{"id":"user_c","emial":"typo"}]`, 400, nil)
	admin(t, srv, "POST", "/_fake/users", `[{"email":"no-id@example.test"}]`, 400, nil)

	list, err := client.List(ctx, &user.ListParams{OrderBy: clerk.String("+created_at")})
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if diff := cmp.Diff([]string{"user_a", "user_b"}, ids(list.Users)); diff != "" {
		t.Errorf("listed (-want +got):\n%s", diff)
	}
	if u := list.Users[1]; u.CreatedAt != created+1000 || u.UpdatedAt != created+5000 || string(u.PublicMetadata) != `{"plan":"pro"}` {
		t.Errorf("user_b = created %d updated %d public %s", u.CreatedAt, u.UpdatedAt, u.PublicMetadata)
	}

	admin(t, srv, "POST", "/_fake/faults", `{"match":"PATCH /v1/users/","faults":[{"status":429,"retry_after_seconds":1},{"status":500}]}`, 204, nil)
	params := &user.UpdateMetadataParams{PublicMetadata: clerk.JSONRawMessage(json.RawMessage(`{"credits":{"granted":10}}`))}
	var statuses []int
	for range 3 {
		_, err := client.UpdateMetadata(ctx, "user_a", params)
		if err != nil {
			apiErr := apiError(t, err)
			statuses = append(statuses, apiErr.HTTPStatusCode)
			if apiErr.HTTPStatusCode == 429 && apiErr.Response.Header.Get("Retry-After") != "1" {
				t.Errorf("Retry-After = %q", apiErr.Response.Header.Get("Retry-After"))
			}
			continue
		}
		statuses = append(statuses, 200)
	}
	if diff := cmp.Diff([]int{429, 500, 200}, statuses); diff != "" {
		t.Errorf("statuses (-want +got):\n%s", diff)
	}

	var got map[string]any
	admin(t, srv, "GET", "/_fake/users/user_a", "", 200, &got)
	if diff := cmp.Diff(map[string]any{"credits": map[string]any{"granted": 10.0}}, got["public_metadata"]); diff != "" {
		t.Errorf("GET /_fake/users/user_a public_metadata (-want +got):\n%s", diff)
	}
	if got["primary_email_address_id"] != "idn_a" {
		t.Errorf("primary_email_address_id = %v", got["primary_email_address_id"])
	}
	admin(t, srv, "GET", "/_fake/users/user_nobody", "", 404, nil)

	var all []map[string]any
	admin(t, srv, "GET", "/_fake/users", "", 200, &all)
	if len(all) != 2 {
		t.Errorf("GET /_fake/users: %d users, want 2", len(all))
	}

	var calls []clerkfake.AdminCall
	admin(t, srv, "GET", "/_fake/calls", "", 200, &calls)
	var summary []string
	for _, c := range calls {
		summary = append(summary, c.Method+" "+c.Path+" "+http.StatusText(c.Status))
		if c.At.IsZero() || c.At.After(time.Now()) {
			t.Errorf("call at %v", c.At)
		}
	}
	want := []string{
		"GET /v1/users OK",
		"GET /v1/users/count OK",
		"PATCH /v1/users/user_a/metadata Too Many Requests",
		"PATCH /v1/users/user_a/metadata Internal Server Error",
		"PATCH /v1/users/user_a/metadata OK",
	}
	if diff := cmp.Diff(want, summary); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
	if calls[2].Body != `{"public_metadata":{"credits":{"granted":10}}}` || calls[0].Query != "order_by=%2Bcreated_at" {
		t.Errorf("call details: body %q query %q", calls[2].Body, calls[0].Query)
	}

	admin(t, srv, "PUT", "/_fake/rate_limit", `{"limit":1,"window_seconds":60}`, 204, nil)
	_, _ = client.UpdateMetadata(ctx, "user_b", params)
	_, _ = client.UpdateMetadata(ctx, "user_b", params)
	var rl clerkfake.AdminRateLimit
	admin(t, srv, "GET", "/_fake/rate_limit", "", 200, &rl)
	if diff := cmp.Diff(clerkfake.AdminRateLimit{Limit: 1, WindowSeconds: 60, Violations: 1}, rl); diff != "" {
		t.Errorf("rate limit (-want +got):\n%s", diff)
	}

	admin(t, srv, "POST", "/_fake/faults", `{"match":"","faults":[{"status":503}]}`, 204, nil)
	admin(t, srv, "POST", "/_fake/reset", "", 204, nil)
	admin(t, srv, "GET", "/_fake/calls", "", 200, &calls)
	if len(calls) != 0 {
		t.Errorf("calls after reset: %d", len(calls))
	}
	if _, err := client.Get(ctx, "user_a"); err != nil {
		t.Errorf("after reset: %v", err)
	}

	admin(t, srv, "DELETE", "/_fake/users/user_a", "", 204, nil)
	admin(t, srv, "DELETE", "/_fake/users/user_a", "", 404, nil)
	if _, err := client.Get(ctx, "user_a"); apiError(t, err).HTTPStatusCode != 404 {
		t.Errorf("deleted user: %v", err)
	}
	admin(t, srv, "GET", "/_fake/nothing", "", 404, nil)
	if n := len(fake.Calls()); n != 2 {
		t.Errorf("admin requests were recorded as calls: %d calls, want 2", n)
	}
}
