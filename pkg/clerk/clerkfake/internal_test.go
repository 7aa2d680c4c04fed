package clerkfake

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestMergeMetadata(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		dst   string
		patch string
		want  string
	}{
		{"empty patch", `{"a":1}`, `{}`, `{"a":1}`},
		{"add", `{"a":1}`, `{"b":2}`, `{"a":1,"b":2}`},
		{"replace scalar", `{"a":1}`, `{"a":"x"}`, `{"a":"x"}`},
		{"deep merge", `{"a":{"b":{"c":1,"d":2}}}`, `{"a":{"b":{"d":3,"e":4}}}`, `{"a":{"b":{"c":1,"d":3,"e":4}}}`},
		{"null deletes deep", `{"a":{"b":{"c":1,"d":2}}}`, `{"a":{"b":{"c":null}}}`, `{"a":{"b":{"d":2}}}`},
		{"null deletes top", `{"a":1,"b":2}`, `{"a":null}`, `{"b":2}`},
		{"deleting every key leaves an empty object", `{"a":{"b":1}}`, `{"a":{"b":null}}`, `{"a":{}}`},
		{"array replaces array", `{"a":[1,2,3]}`, `{"a":[4]}`, `{"a":[4]}`},
		{"object replaces array", `{"a":[1]}`, `{"a":{"x":1}}`, `{"a":{"x":1}}`},
		{"nulls inside a new object are dropped", `{}`, `{"a":{"x":null,"y":{"z":null}}}`, `{"a":{"y":{}}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dst, patch, want := decode(t, tt.dst), decode(t, tt.patch), decode(t, tt.want)
			mergeMetadata(dst, patch)
			if diff := cmp.Diff(want, dst); diff != "" {
				t.Errorf("merge (-want +got):\n%s", diff)
			}
			// The patch must not be aliased into the result.
			if inner, ok := patch["a"].(map[string]any); ok {
				inner["poison"] = true
				if got, ok := dst["a"].(map[string]any); ok && got["poison"] != nil {
					t.Error("result shares maps with the patch")
				}
			}
		})
	}
}

func decode(t *testing.T, s string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatalf("decode %s: %v", s, err)
	}
	return m
}

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// TestRateLimitWindow steps a fake clock through Clerk's 10 writes per 10 s.
func TestRateLimitWindow(t *testing.T) {
	t.Parallel()
	clk := &clock{t: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	s := New()
	s.now = clk.now
	s.AddUsers(User{ID: "user_a"}, User{ID: "user_b"})
	s.SetRateLimit(10, 10*time.Second)

	write := func(id string) (int, string) {
		t.Helper()
		req := httptest.NewRequest(http.MethodPatch, "/v1/users/"+id+"/metadata", strings.NewReader(`{"public_metadata":{"n":1}}`))
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		return rec.Code, rec.Header().Get("Retry-After")
	}

	steps := []struct {
		advance        time.Duration
		writes         int
		id             string
		wantStatus     int
		wantRetryAfter string
	}{
		{0, 5, "user_a", 200, ""},                        // t=0: 5 writes
		{4 * time.Second, 5, "user_a", 200, ""},          // t=4: 10 in the window
		{0, 1, "user_a", 429, "6"},                       // t=4: the 11th waits for t=10
		{0, 10, "user_b", 200, ""},                       // another user has its own window
		{5500 * time.Millisecond, 1, "user_a", 429, "1"}, // t=9.5: still full, 0.5 s rounds up
		{500 * time.Millisecond, 5, "user_a", 200, ""},   // t=10: the first five left
		{0, 1, "user_a", 429, "4"},                       // t=10: full again until t=14
		{4 * time.Second, 1, "user_a", 200, ""},          // t=14
	}
	for i, st := range steps {
		clk.add(st.advance)
		for range st.writes {
			status, retry := write(st.id)
			if status != st.wantStatus || retry != st.wantRetryAfter {
				t.Fatalf("step %d: %d Retry-After %q, want %d %q", i, status, retry, st.wantStatus, st.wantRetryAfter)
			}
		}
	}
	if got := s.RateLimitViolations(); got != 3 {
		t.Errorf("RateLimitViolations = %d, want 3", got)
	}
	if got := s.MetadataWrites("user_a"); got != 16 {
		t.Errorf("MetadataWrites(user_a) = %d, want 16", got)
	}
	u, _ := s.User("user_a")
	if want := clk.now(); !u.UpdatedAt.Equal(want) {
		t.Errorf("UpdatedAt = %v, want %v", u.UpdatedAt, want)
	}

	s.SetRateLimit(0, 0)
	for range 20 {
		if status, _ := write("user_a"); status != 200 {
			t.Fatalf("limit off: status %d", status)
		}
	}
}

func TestCeilSeconds(t *testing.T) {
	t.Parallel()
	tests := []struct {
		d    time.Duration
		want int64
	}{
		{time.Nanosecond, 1},
		{999 * time.Millisecond, 1},
		{time.Second, 1},
		{time.Second + time.Nanosecond, 2},
		{10 * time.Second, 10},
	}
	for _, tt := range tests {
		if got := ceilSeconds(tt.d); got != tt.want {
			t.Errorf("ceilSeconds(%v) = %d, want %d", tt.d, got, tt.want)
		}
	}
}
