package clerkfake_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clerk/clerk-sdk-go/v2"
	"github.com/clerk/clerk-sdk-go/v2/user"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/creditgate/creditgate/pkg/clerk/clerkfake"
)

const testKey = "sk_test_x"

// base is when the first seeded user signed up; the others follow a minute apart.
var base = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// newFake starts the fake behind httptest with the test key and n seeded
// users. User i (0-based) signed up at base+i minutes and has id
// user_<(7i mod n)>, so id order and sign-up order differ.
func newFake(t *testing.T, n int) (*clerkfake.Server, *httptest.Server) {
	t.Helper()
	fake := clerkfake.New()
	fake.SetSecretKey(testKey)
	fake.AddUsers(seedUsers(n)...)
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	return fake, srv
}

func seedUsers(n int) []clerkfake.User {
	users := make([]clerkfake.User, n)
	for i := range n {
		users[i] = clerkfake.User{
			ID:        seedID(i, n),
			Email:     fmt.Sprintf("u%02d@example.test", i),
			CreatedAt: base.Add(time.Duration(i) * time.Minute),
		}
	}
	return users
}

func seedID(i, n int) string { return fmt.Sprintf("user_%02d", (7*i)%n) }

// seedIDs is the ids of seeded users first..last (by sign-up), stepping by step.
func seedIDs(n, first, last, step int) []string {
	var ids []string
	for i := first; step > 0 && i <= last || step < 0 && i >= last; i += step {
		ids = append(ids, seedID(i, n))
	}
	return ids
}

// newClient is the real clerk-sdk-go users client pointed at the fake.
func newClient(srv *httptest.Server, key string) *user.Client {
	return user.NewClient(&clerk.ClientConfig{BackendConfig: clerk.BackendConfig{
		URL:        clerk.String(srv.URL + "/v1"),
		Key:        clerk.String(key),
		HTTPClient: srv.Client(),
	}})
}

func ids(users []*clerk.User) []string {
	out := make([]string, 0, len(users))
	for _, u := range users {
		out = append(out, u.ID)
	}
	return out
}

func apiError(t *testing.T, err error) *clerk.APIErrorResponse {
	t.Helper()
	apiErr, ok := errors.AsType[*clerk.APIErrorResponse](err)
	if !ok {
		t.Fatalf("error = %v (%T), want *clerk.APIErrorResponse", err, err)
	}
	return apiErr
}

func TestList(t *testing.T) {
	t.Parallel()
	const n = 25
	_, srv := newFake(t, n)
	client := newClient(srv, testKey)
	ms := func(i int) int64 { return base.Add(time.Duration(i) * time.Minute).UnixMilli() }

	tests := []struct {
		name      string
		params    user.ListParams
		wantIDs   []string
		wantTotal int64
	}{
		{
			name:      "defaults are newest first, ten",
			wantIDs:   seedIDs(n, 24, 15, -1),
			wantTotal: n,
		},
		{
			name:      "oldest first, first page",
			params:    user.ListParams{OrderBy: clerk.String("+created_at"), ListParams: clerk.ListParams{Limit: clerk.Int64(10)}},
			wantIDs:   seedIDs(n, 0, 9, 1),
			wantTotal: n,
		},
		{
			name:      "unsigned created_at is oldest first",
			params:    user.ListParams{OrderBy: clerk.String("created_at"), ListParams: clerk.ListParams{Limit: clerk.Int64(3), Offset: clerk.Int64(1)}},
			wantIDs:   seedIDs(n, 1, 3, 1),
			wantTotal: n,
		},
		{
			name:      "oldest first, last partial page",
			params:    user.ListParams{OrderBy: clerk.String("+created_at"), ListParams: clerk.ListParams{Limit: clerk.Int64(10), Offset: clerk.Int64(20)}},
			wantIDs:   seedIDs(n, 20, 24, 1),
			wantTotal: n,
		},
		{
			name:      "offset past the end",
			params:    user.ListParams{ListParams: clerk.ListParams{Offset: clerk.Int64(100)}},
			wantIDs:   []string{},
			wantTotal: n,
		},
		{
			name:      "newest first, second page",
			params:    user.ListParams{OrderBy: clerk.String("-created_at"), ListParams: clerk.ListParams{Limit: clerk.Int64(5), Offset: clerk.Int64(5)}},
			wantIDs:   seedIDs(n, 19, 15, -1),
			wantTotal: n,
		},
		{
			name: "created_at_after is strictly after",
			params: user.ListParams{
				OrderBy:        clerk.String("+created_at"),
				CreatedAtAfter: clerk.Int64(ms(19)),
			},
			wantIDs:   seedIDs(n, 20, 24, 1),
			wantTotal: 5,
		},
		{
			name: "created_at_after with paging; total ignores paging",
			params: user.ListParams{
				OrderBy:        clerk.String("+created_at"),
				CreatedAtAfter: clerk.Int64(ms(9)),
				ListParams:     clerk.ListParams{Limit: clerk.Int64(2), Offset: clerk.Int64(1)},
			},
			wantIDs:   seedIDs(n, 11, 12, 1),
			wantTotal: 15,
		},
		{
			name: "created_at window",
			params: user.ListParams{
				CreatedAtAfter:  clerk.Int64(ms(2)),
				CreatedAtBefore: clerk.Int64(ms(6)),
			},
			wantIDs:   seedIDs(n, 5, 3, -1),
			wantTotal: 3,
		},
		{
			name:      "user_id filter",
			params:    user.ListParams{UserIDs: []string{seedID(4, n), seedID(2, n), "user_missing"}, OrderBy: clerk.String("+created_at")},
			wantIDs:   []string{seedID(2, n), seedID(4, n)},
			wantTotal: 2,
		},
		{
			name:      "email filter",
			params:    user.ListParams{EmailAddresses: []string{"U07@example.test"}},
			wantIDs:   []string{seedID(7, n)},
			wantTotal: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			list, err := client.List(context.Background(), &tt.params)
			if err != nil {
				t.Fatalf("List: %v", err)
			}
			if diff := cmp.Diff(tt.wantIDs, ids(list.Users), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("ids (-want +got):\n%s", diff)
			}
			if list.TotalCount != tt.wantTotal {
				t.Errorf("TotalCount = %d, want %d", list.TotalCount, tt.wantTotal)
			}
		})
	}
}

// TestListPagesThroughEveryone pages the way a reconciler would: oldest
// first, advancing the offset, until a short page.
func TestListPagesThroughEveryone(t *testing.T) {
	t.Parallel()
	const n = 23
	_, srv := newFake(t, n)
	client := newClient(srv, testKey)

	var got []string
	for offset := int64(0); ; offset += 7 {
		list, err := client.List(context.Background(), &user.ListParams{
			OrderBy:    clerk.String("+created_at"),
			ListParams: clerk.ListParams{Limit: clerk.Int64(7), Offset: clerk.Int64(offset)},
		})
		if err != nil {
			t.Fatalf("List offset %d: %v", offset, err)
		}
		got = append(got, ids(list.Users)...)
		if len(list.Users) < 7 {
			break
		}
	}
	if diff := cmp.Diff(seedIDs(n, 0, n-1, 1), got); diff != "" {
		t.Errorf("ids (-want +got):\n%s", diff)
	}
}

func TestListRejectsWhatItCannotAnswer(t *testing.T) {
	t.Parallel()
	_, srv := newFake(t, 3)
	client := newClient(srv, testKey)

	tests := []struct {
		name     string
		params   user.ListParams
		wantCode string
	}{
		{"limit over 500", user.ListParams{ListParams: clerk.ListParams{Limit: clerk.Int64(501)}}, "form_param_value_invalid"},
		{"limit 0", user.ListParams{ListParams: clerk.ListParams{Limit: clerk.Int64(0)}}, "form_param_value_invalid"},
		{"negative offset", user.ListParams{ListParams: clerk.ListParams{Offset: clerk.Int64(-1)}}, "form_param_value_invalid"},
		{"order by a field the fake lacks", user.ListParams{OrderBy: clerk.String("-last_sign_in_at")}, "form_param_value_invalid"},
		{"filter the fake lacks", user.ListParams{Query: clerk.String("bob")}, "form_param_unknown"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := client.List(context.Background(), &tt.params)
			apiErr := apiError(t, err)
			if apiErr.HTTPStatusCode != http.StatusUnprocessableEntity || apiErr.Errors[0].Code != tt.wantCode {
				t.Errorf("got %d %q, want 422 %q", apiErr.HTTPStatusCode, apiErr.Errors[0].Code, tt.wantCode)
			}
		})
	}
}

func TestCount(t *testing.T) {
	t.Parallel()
	const n = 12
	fake, srv := newFake(t, n)
	client := newClient(srv, testKey)

	tests := []struct {
		name   string
		params user.ListParams
		want   int64
	}{
		{"everyone", user.ListParams{}, n},
		{"paging is ignored", user.ListParams{ListParams: clerk.ListParams{Limit: clerk.Int64(1), Offset: clerk.Int64(5)}}, n},
		{"created after", user.ListParams{CreatedAtAfter: clerk.Int64(base.Add(9 * time.Minute).UnixMilli())}, 2},
		{"created before", user.ListParams{CreatedAtBefore: clerk.Int64(base.Add(2 * time.Minute).UnixMilli())}, 2},
		{"nobody", user.ListParams{CreatedAtBefore: clerk.Int64(base.UnixMilli())}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := client.Count(context.Background(), &tt.params)
			if err != nil {
				t.Fatalf("Count: %v", err)
			}
			if got.TotalCount != tt.want || got.Object != "total_count" {
				t.Errorf("Count = %q %d, want total_count %d", got.Object, got.TotalCount, tt.want)
			}
		})
	}

	// Count is GET /v1/users/count, and List is two requests: the bare
	// array, then the count with the same query.
	fake.Reset()
	if _, err := client.List(context.Background(), &user.ListParams{ListParams: clerk.ListParams{Limit: clerk.Int64(2)}}); err != nil {
		t.Fatalf("List: %v", err)
	}
	var got []string
	for _, c := range fake.Calls() {
		got = append(got, c.Method+" "+c.Path+"?"+c.Query)
	}
	want := []string{"GET /v1/users?limit=2", "GET /v1/users/count?limit=2"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
}

func TestUserShape(t *testing.T) {
	t.Parallel()
	fake, srv := newFake(t, 0)
	created := time.Date(2025, 1, 2, 3, 4, 5, 678_900_000, time.UTC)
	fake.AddUsers(
		clerkfake.User{ID: "user_2abc", Email: "a@example.test", CreatedAt: created, PublicMetadata: map[string]any{"credits": 5}},
		clerkfake.User{ID: "user_noemail", CreatedAt: created.Add(time.Second)},
	)
	client := newClient(srv, testKey)

	u, err := client.Get(context.Background(), "user_2abc")
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if u.Object != "user" || u.CreatedAt != created.UnixMilli() || u.UpdatedAt != created.UnixMilli() {
		t.Errorf("object %q created_at %d updated_at %d, want user %d %d", u.Object, u.CreatedAt, u.UpdatedAt, created.UnixMilli(), created.UnixMilli())
	}
	if u.PrimaryEmailAddressID == nil || *u.PrimaryEmailAddressID != "idn_2abc" {
		t.Errorf("primary_email_address_id = %v, want idn_2abc", u.PrimaryEmailAddressID)
	}
	if len(u.EmailAddresses) != 1 || u.EmailAddresses[0].ID != "idn_2abc" ||
		u.EmailAddresses[0].Object != "email_address" || u.EmailAddresses[0].EmailAddress != "a@example.test" {
		t.Errorf("email_addresses = %s", mustJSON(t, u.EmailAddresses))
	}
	if got := string(u.PublicMetadata); got != `{"credits":5}` {
		t.Errorf("public_metadata = %s", got)
	}
	if got := string(u.PrivateMetadata); got != `{}` {
		t.Errorf("private_metadata = %s", got)
	}

	u, err = client.Get(context.Background(), "user_noemail")
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if u.PrimaryEmailAddressID != nil || u.EmailAddresses == nil || len(u.EmailAddresses) != 0 {
		t.Errorf("no-email user: primary %v, email_addresses %s; want null and []", u.PrimaryEmailAddressID, mustJSON(t, u.EmailAddresses))
	}

	_, err = client.Get(context.Background(), "user_gone")
	if apiErr := apiError(t, err); apiErr.HTTPStatusCode != http.StatusNotFound || apiErr.Errors[0].Code != "resource_not_found" {
		t.Errorf("unknown user: %v", apiErr)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestUpdateMetadata(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		public      map[string]any // before
		private     map[string]any
		patches     []string // UpdateMetadata bodies, applied in order
		wantPublic  map[string]any
		wantPrivate map[string]any
	}{
		{
			name:       "into empty",
			patches:    []string{`{"public_metadata":{"credits":{"granted":10}}}`},
			wantPublic: map[string]any{"credits": map[string]any{"granted": 10.0}},
		},
		{
			name:   "nested objects merge",
			public: map[string]any{"plan": "free", "credits": map[string]any{"granted": 10, "used": 2}},
			patches: []string{
				`{"public_metadata":{"credits":{"used":3,"ledger":{"v":1}}}}`,
				`{"public_metadata":{"credits":{"ledger":{"at":7}}}}`,
			},
			wantPublic: map[string]any{"plan": "free", "credits": map[string]any{
				"granted": 10.0, "used": 3.0, "ledger": map[string]any{"v": 1.0, "at": 7.0},
			}},
		},
		{
			name:       "null deletes a nested key",
			public:     map[string]any{"credits": map[string]any{"granted": 10, "used": 2}},
			patches:    []string{`{"public_metadata":{"credits":{"used":null}}}`},
			wantPublic: map[string]any{"credits": map[string]any{"granted": 10.0}},
		},
		{
			name:       "null deletes a top-level key",
			public:     map[string]any{"credits": map[string]any{"granted": 10}, "plan": "pro"},
			patches:    []string{`{"public_metadata":{"credits":null}}`},
			wantPublic: map[string]any{"plan": "pro"},
		},
		{
			name:       "null for a key that is not there",
			public:     map[string]any{"plan": "pro"},
			patches:    []string{`{"public_metadata":{"nope":null,"obj":{"x":null,"y":1}}}`},
			wantPublic: map[string]any{"plan": "pro", "obj": map[string]any{"y": 1.0}},
		},
		{
			name:       "arrays and scalars replace",
			public:     map[string]any{"tags": []any{"a", "b"}, "credits": map[string]any{"granted": 1}},
			patches:    []string{`{"public_metadata":{"tags":["c"],"credits":5}}`},
			wantPublic: map[string]any{"tags": []any{"c"}, "credits": 5.0},
		},
		{
			name:       "object replaces scalar",
			public:     map[string]any{"credits": 5},
			patches:    []string{`{"public_metadata":{"credits":{"granted":1}}}`},
			wantPublic: map[string]any{"credits": map[string]any{"granted": 1.0}},
		},
		{
			name:        "private is separate; absent public is untouched",
			public:      map[string]any{"plan": "pro"},
			private:     map[string]any{"stripe": map[string]any{"customer": "cus_1"}},
			patches:     []string{`{"private_metadata":{"stripe":{"sub":"sub_1"}}}`},
			wantPublic:  map[string]any{"plan": "pro"},
			wantPrivate: map[string]any{"stripe": map[string]any{"customer": "cus_1", "sub": "sub_1"}},
		},
		{
			name:       "null public is a no-op",
			public:     map[string]any{"plan": "pro"},
			patches:    []string{`{"public_metadata":null}`},
			wantPublic: map[string]any{"plan": "pro"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fake, srv := newFake(t, 0)
			fake.AddUser(clerkfake.User{ID: "user_1", CreatedAt: base, PublicMetadata: tt.public, PrivateMetadata: tt.private})
			client := newClient(srv, testKey)

			var last *clerk.User
			for _, p := range tt.patches {
				var params user.UpdateMetadataParams
				if err := json.Unmarshal([]byte(p), &params); err != nil {
					t.Fatalf("bad patch %s: %v", p, err)
				}
				u, err := client.UpdateMetadata(context.Background(), "user_1", &params)
				if err != nil {
					t.Fatalf("UpdateMetadata(%s): %v", p, err)
				}
				last = u
			}

			var gotPublic map[string]any
			if err := json.Unmarshal(last.PublicMetadata, &gotPublic); err != nil {
				t.Fatalf("decode returned public_metadata: %v", err)
			}
			if diff := cmp.Diff(tt.wantPublic, gotPublic, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("returned public_metadata (-want +got):\n%s", diff)
			}
			stored, ok := fake.User("user_1")
			if !ok {
				t.Fatal("user_1 gone")
			}
			if diff := cmp.Diff(tt.wantPublic, stored.PublicMetadata, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("stored public (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantPrivate, stored.PrivateMetadata, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("stored private (-want +got):\n%s", diff)
			}
			if !stored.UpdatedAt.After(base) || last.UpdatedAt != stored.UpdatedAt.UnixMilli() {
				t.Errorf("updated_at: stored %v, returned %d; want moved past %v and equal", stored.UpdatedAt, last.UpdatedAt, base)
			}
			if got := fake.MetadataWrites("user_1"); got != len(tt.patches) {
				t.Errorf("MetadataWrites = %d, want %d", got, len(tt.patches))
			}
		})
	}
}

func TestUpdateMetadataErrors(t *testing.T) {
	t.Parallel()
	fake, srv := newFake(t, 1)
	client := newClient(srv, testKey)
	params := &user.UpdateMetadataParams{PublicMetadata: clerk.JSONRawMessage(json.RawMessage(`{"a":1}`))}

	_, err := client.UpdateMetadata(context.Background(), "user_missing", params)
	apiErr := apiError(t, err)
	if apiErr.HTTPStatusCode != http.StatusNotFound || apiErr.Errors[0].Code != "resource_not_found" || apiErr.TraceID == "" {
		t.Errorf("unknown user: %+v", apiErr)
	}

	_, err = client.UpdateMetadata(context.Background(), seedID(0, 1), &user.UpdateMetadataParams{
		PublicMetadata: clerk.JSONRawMessage(json.RawMessage(`[1,2]`)),
	})
	if apiErr := apiError(t, err); apiErr.HTTPStatusCode != http.StatusUnprocessableEntity {
		t.Errorf("array metadata: %+v", apiErr)
	}
	if got := fake.MetadataWrites("user_missing") + fake.MetadataWrites(seedID(0, 1)); got != 0 {
		t.Errorf("MetadataWrites = %d, want 0", got)
	}
}

// TestFaults checks what a clerk-sdk-go caller sees for each injected fault,
// the Retry-After header above all: the SDK hands it over in
// APIErrorResponse.Response.Header.
func TestFaults(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name           string
		fault          clerkfake.Fault
		wantStatus     int
		wantCode       string
		wantRetryAfter string
	}{
		{"429 with Retry-After rounded up", clerkfake.Fault{Status: 429, RetryAfter: 1500 * time.Millisecond}, 429, "too_many_requests", "2"},
		{"429 whole seconds", clerkfake.Fault{Status: 429, RetryAfter: 3 * time.Second}, 429, "too_many_requests", "3"},
		{"429 without Retry-After", clerkfake.Fault{Status: 429}, 429, "too_many_requests", ""},
		{"500", clerkfake.Fault{Status: 500}, 500, "internal_clerk_error", ""},
		{"zero status is 500", clerkfake.Fault{}, 500, "internal_clerk_error", ""},
		{"503 with Retry-After", clerkfake.Fault{Status: 503, RetryAfter: time.Second}, 503, "internal_clerk_error", "1"},
		{"403", clerkfake.Fault{Status: 403}, 403, "forbidden", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fake, srv := newFake(t, 1)
			client := newClient(srv, testKey)
			id := seedID(0, 1)
			params := &user.UpdateMetadataParams{PublicMetadata: clerk.JSONRawMessage(json.RawMessage(`{"a":1}`))}
			fake.FailNext("PATCH /v1/users/", tt.fault)

			// A GET does not match the PATCH fault.
			if _, err := client.Get(context.Background(), id); err != nil {
				t.Fatalf("Get: %v", err)
			}
			_, err := client.UpdateMetadata(context.Background(), id, params)
			apiErr := apiError(t, err)
			if apiErr.HTTPStatusCode != tt.wantStatus || apiErr.Errors[0].Code != tt.wantCode {
				t.Errorf("got %d %q, want %d %q", apiErr.HTTPStatusCode, apiErr.Errors[0].Code, tt.wantStatus, tt.wantCode)
			}
			if apiErr.Response == nil {
				t.Fatal("APIErrorResponse.Response is nil")
			}
			if got := apiErr.Response.Header.Get("Retry-After"); got != tt.wantRetryAfter {
				t.Errorf("Retry-After = %q, want %q", got, tt.wantRetryAfter)
			}
			if apiErr.TraceID == "" || apiErr.Response.TraceID != apiErr.TraceID {
				t.Errorf("trace ids: body %q, header %q", apiErr.TraceID, apiErr.Response.TraceID)
			}

			// Used once: the retry goes through.
			if _, err := client.UpdateMetadata(context.Background(), id, params); err != nil {
				t.Fatalf("retry: %v", err)
			}
			if got := fake.MetadataWrites(id); got != 1 {
				t.Errorf("MetadataWrites = %d, want 1", got)
			}
		})
	}
}

func TestFaultsAreUsedInOrder(t *testing.T) {
	t.Parallel()
	fake, srv := newFake(t, 2)
	client := newClient(srv, testKey)
	fake.FailNext("PATCH /v1/users/", clerkfake.Fault{Status: 429, RetryAfter: time.Second}, clerkfake.Fault{Status: 500})
	fake.FailNext("", clerkfake.Fault{Status: 502})
	params := &user.UpdateMetadataParams{PublicMetadata: clerk.JSONRawMessage(json.RawMessage(`{"a":1}`))}

	var got []int
	for range 3 {
		_, err := client.UpdateMetadata(context.Background(), seedID(0, 2), params)
		if err == nil {
			got = append(got, 200)
			continue
		}
		got = append(got, apiError(t, err).HTTPStatusCode)
	}
	// 429 and 500 from the PATCH rule, then the "" rule takes the third PATCH.
	if diff := cmp.Diff([]int{429, 500, 502}, got); diff != "" {
		t.Errorf("statuses (-want +got):\n%s", diff)
	}
	if _, err := client.Get(context.Background(), seedID(1, 2)); err != nil {
		t.Fatalf("every fault used, yet Get failed: %v", err)
	}
	if _, err := client.UpdateMetadata(context.Background(), seedID(0, 2), params); err != nil {
		t.Fatalf("every fault used, yet UpdateMetadata failed: %v", err)
	}

	// A fault on "GET /v1/users" also matches the count request user.List sends.
	fake.FailNext("GET /v1/users/count", clerkfake.Fault{Status: 500})
	if _, err := client.List(context.Background(), &user.ListParams{}); apiError(t, err).HTTPStatusCode != 500 {
		t.Errorf("List with failing count: %v", err)
	}
}

func TestSecretKey(t *testing.T) {
	t.Parallel()
	fake, srv := newFake(t, 1)

	_, err := newClient(srv, "sk_test_wrong").List(context.Background(), &user.ListParams{})
	apiErr := apiError(t, err)
	if apiErr.HTTPStatusCode != http.StatusUnauthorized || apiErr.Errors[0].Code != "authentication_invalid" {
		t.Errorf("wrong key: %+v", apiErr)
	}

	resp, err := srv.Client().Get(srv.URL + "/v1/users")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("no Authorization: status %d, want 401", resp.StatusCode)
	}

	if _, err := newClient(srv, testKey).List(context.Background(), &user.ListParams{}); err != nil {
		t.Errorf("right key: %v", err)
	}

	fake.SetSecretKey("")
	if _, err := newClient(srv, "anything").List(context.Background(), &user.ListParams{}); err != nil {
		t.Errorf("no key set: %v", err)
	}
}

func TestUnknownEndpoint(t *testing.T) {
	t.Parallel()
	_, srv := newFake(t, 1)
	client := user.NewClient(&clerk.ClientConfig{BackendConfig: clerk.BackendConfig{
		URL: clerk.String(srv.URL), Key: clerk.String(testKey), HTTPClient: srv.Client(),
	}})
	_, err := client.Get(context.Background(), seedID(0, 1))
	apiErr := apiError(t, err)
	if apiErr.HTTPStatusCode != http.StatusNotFound || !strings.Contains(apiErr.Errors[0].LongMessage, "/v1") {
		t.Errorf("base URL without /v1: %+v", apiErr)
	}
}

func TestCallsAndMetadataWrites(t *testing.T) {
	t.Parallel()
	fake, srv := newFake(t, 2)
	client := newClient(srv, testKey)
	a, b := seedID(0, 2), seedID(1, 2)
	params := &user.UpdateMetadataParams{PublicMetadata: clerk.JSONRawMessage(json.RawMessage(`{"credits":{"granted":10}}`))}
	ctx := context.Background()

	start := time.Now()
	fake.FailNext("PATCH /v1/users/"+a, clerkfake.Fault{Status: 429, RetryAfter: time.Second})
	_, _ = client.UpdateMetadata(ctx, a, params) // 429
	_, _ = client.UpdateMetadata(ctx, a, params) // 200
	_, _ = client.UpdateMetadata(ctx, a, params) // 200
	_, _ = newClient(srv, "sk_wrong").UpdateMetadata(ctx, a, params)
	_, _ = client.UpdateMetadata(ctx, "user_missing", params) // 404
	_, _ = client.UpdateMetadata(ctx, b, params)              // 200
	_, _ = client.Count(ctx, &user.ListParams{CreatedAtAfter: clerk.Int64(5)})

	body := []byte(`{"public_metadata":{"credits":{"granted":10}}}`)
	want := []clerkfake.Call{
		{Method: "PATCH", Path: "/v1/users/" + a + "/metadata", Body: body, Status: 429},
		{Method: "PATCH", Path: "/v1/users/" + a + "/metadata", Body: body, Status: 200},
		{Method: "PATCH", Path: "/v1/users/" + a + "/metadata", Body: body, Status: 200},
		{Method: "PATCH", Path: "/v1/users/" + a + "/metadata", Body: body, Status: 401},
		{Method: "PATCH", Path: "/v1/users/user_missing/metadata", Body: body, Status: 404},
		{Method: "PATCH", Path: "/v1/users/" + b + "/metadata", Body: body, Status: 200},
		{Method: "GET", Path: "/v1/users/count", Query: "created_at_after=5", Status: 200},
	}
	calls := fake.Calls()
	if diff := cmp.Diff(want, calls, cmpopts.IgnoreFields(clerkfake.Call{}, "At")); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
	for i, c := range calls {
		if c.At.Before(start) || (i > 0 && c.At.Before(calls[i-1].At)) {
			t.Errorf("call %d At = %v, not after %v and the previous call", i, c.At, start)
		}
	}
	for id, want := range map[string]int{a: 2, b: 1, "user_missing": 0, "user_never": 0} {
		if got := fake.MetadataWrites(id); got != want {
			t.Errorf("MetadataWrites(%s) = %d, want %d", id, got, want)
		}
	}

	fake.FailNext("", clerkfake.Fault{Status: 500})
	fake.Reset()
	if got := fake.Calls(); len(got) != 0 {
		t.Errorf("Calls after Reset = %d", len(got))
	}
	if got := fake.MetadataWrites(a); got != 0 {
		t.Errorf("MetadataWrites after Reset = %d", got)
	}
	if _, err := client.Get(ctx, a); err != nil {
		t.Errorf("Reset left a fault pending, or dropped users: %v", err)
	}
}

func TestRateLimit(t *testing.T) {
	t.Parallel()
	fake, srv := newFake(t, 2)
	client := newClient(srv, testKey)
	fake.SetRateLimit(2, time.Hour)
	a, b := seedID(0, 2), seedID(1, 2)
	params := &user.UpdateMetadataParams{PublicMetadata: clerk.JSONRawMessage(json.RawMessage(`{"a":1}`))}
	ctx := context.Background()

	for i := range 2 {
		if _, err := client.UpdateMetadata(ctx, a, params); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	_, err := client.UpdateMetadata(ctx, a, params)
	apiErr := apiError(t, err)
	if apiErr.HTTPStatusCode != http.StatusTooManyRequests || apiErr.Response.Header.Get("Retry-After") != "3600" {
		t.Errorf("third write: %d Retry-After %q, want 429 3600", apiErr.HTTPStatusCode, apiErr.Response.Header.Get("Retry-After"))
	}
	if _, err := client.UpdateMetadata(ctx, b, params); err != nil {
		t.Errorf("another user is limited separately: %v", err)
	}
	if _, err := client.Get(ctx, a); err != nil {
		t.Errorf("reads are not limited: %v", err)
	}
	if got := fake.RateLimitViolations(); got != 1 {
		t.Errorf("RateLimitViolations = %d, want 1", got)
	}
	if got := fake.MetadataWrites(a); got != 2 {
		t.Errorf("MetadataWrites = %d, want 2", got)
	}
	fake.Reset()
	if got := fake.RateLimitViolations(); got != 0 {
		t.Errorf("RateLimitViolations after Reset = %d", got)
	}
	if _, err := client.UpdateMetadata(ctx, a, params); err != nil {
		t.Errorf("Reset forgets the window: %v", err)
	}
}

// TestConcurrentWrites has many clients merge distinct keys into one user at
// once; every key must survive, and the race detector must stay quiet.
func TestConcurrentWrites(t *testing.T) {
	t.Parallel()
	fake, srv := newFake(t, 1)
	client := newClient(srv, testKey)
	id := seedID(0, 1)
	const writers = 40

	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for i := range writers {
		wg.Go(func() {
			raw := json.RawMessage(fmt.Sprintf(`{"w":{"k%02d":%d}}`, i, i))
			if _, err := client.UpdateMetadata(context.Background(), id, &user.UpdateMetadataParams{PublicMetadata: &raw}); err != nil {
				errs <- err
			}
			if _, err := client.List(context.Background(), &user.ListParams{}); err != nil {
				errs <- err
			}
			_ = fake.Calls()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	u, _ := fake.User(id)
	w, _ := u.PublicMetadata["w"].(map[string]any)
	if len(w) != writers {
		t.Errorf("merged %d keys, want %d", len(w), writers)
	}
	if got := fake.MetadataWrites(id); got != writers {
		t.Errorf("MetadataWrites = %d, want %d", got, writers)
	}
}

func TestUserReadBackIsACopy(t *testing.T) {
	t.Parallel()
	fake := clerkfake.New()
	md := map[string]any{"credits": map[string]any{"granted": 1}}
	fake.AddUser(clerkfake.User{ID: "user_1", PublicMetadata: md})
	md["credits"].(map[string]any)["granted"] = 99

	u, ok := fake.User("user_1")
	if !ok {
		t.Fatal("user_1 missing")
	}
	u.PublicMetadata["credits"].(map[string]any)["granted"] = 42
	again, _ := fake.User("user_1")
	if diff := cmp.Diff(map[string]any{"credits": map[string]any{"granted": 1.0}}, again.PublicMetadata); diff != "" {
		t.Errorf("stored metadata changed through a caller's map (-want +got):\n%s", diff)
	}
	if u.CreatedAt.IsZero() || !u.UpdatedAt.Equal(u.CreatedAt) {
		t.Errorf("defaults: created %v updated %v", u.CreatedAt, u.UpdatedAt)
	}

	if !fake.DeleteUser("user_1") || fake.DeleteUser("user_1") {
		t.Error("DeleteUser should report true once, then false")
	}
	if _, ok := fake.User("user_1"); ok {
		t.Error("user_1 still there after DeleteUser")
	}
}
