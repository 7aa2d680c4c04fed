package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	svix "github.com/svix/svix-webhooks/go"
)

// testSecret is a made-up whsec_ secret (base64 of 24 bytes).
const testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// clerkShape is what creditgate reads of a Clerk event.
type clerkShape struct {
	Type       string `json:"type"`
	Object     string `json:"object"`
	Timestamp  int64  `json:"timestamp"`
	InstanceID string `json:"instance_id"`
	Data       struct {
		ID                    string  `json:"id"`
		Object                string  `json:"object"`
		Deleted               bool    `json:"deleted"`
		UserID                string  `json:"user_id"`
		PrimaryEmailAddressID *string `json:"primary_email_address_id"`
		EmailAddresses        []struct {
			ID           string `json:"id"`
			EmailAddress string `json:"email_address"`
		} `json:"email_addresses"`
	} `json:"data"`
}

func TestSignatureVerifiesWithSvix(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		eventType string
		// minSize and maxSize bound the body, to keep it Clerk-sized.
		minSize, maxSize int
		wantObject       string
	}{
		{"user.created", typeUserCreated, 1400, 2200, "user"},
		{"user.updated", typeUserUpdated, 1400, 2200, "user"},
		{"user.deleted", typeUserDeleted, 100, 600, "user"},
		{"session.created", typeSessionCreated, 300, 1000, "session"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, err := newSender("http://unused", testSecret, 1, time.Second)
			if err != nil {
				t.Fatal(err)
			}
			g := &generator{eventType: tt.eventType, instanceID: newID("ins"), user: "user_abc", email: "ada@example.com", now: time.Now}
			m, err := g.message(0)
			if err != nil {
				t.Fatal(err)
			}
			h, err := s.headers(m, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			wh, err := svix.NewWebhook(testSecret)
			if err != nil {
				t.Fatal(err)
			}
			if err := wh.Verify(m.Body, h); err != nil {
				t.Fatalf("Verify: %v", err)
			}
			tampered := bytes.Replace(m.Body, []byte("user_abc"), []byte("user_abd"), 1)
			if err := wh.Verify(tampered, h); err == nil {
				t.Error("Verify accepted a tampered body")
			}
			other, _ := svix.NewWebhook("whsec_" + strings.Repeat("A", 32))
			if err := other.Verify(m.Body, h); err == nil {
				t.Error("Verify accepted the signature under another secret")
			}

			if n := len(m.Body); n < tt.minSize || n > tt.maxSize {
				t.Errorf("body is %d bytes, want %d..%d", n, tt.minSize, tt.maxSize)
			}
			var ev clerkShape
			if err := json.Unmarshal(m.Body, &ev); err != nil {
				t.Fatalf("body is not JSON: %v", err)
			}
			if ev.Type != tt.eventType || ev.Object != "event" || ev.Data.Object != tt.wantObject ||
				ev.Timestamp == 0 || !strings.HasPrefix(ev.InstanceID, "ins_") {
				t.Errorf("envelope = %+v", ev)
			}
			switch tt.eventType {
			case typeUserCreated, typeUserUpdated:
				if ev.Data.ID != "user_abc" || ev.Data.PrimaryEmailAddressID == nil || len(ev.Data.EmailAddresses) != 1 ||
					ev.Data.EmailAddresses[0].ID != *ev.Data.PrimaryEmailAddressID ||
					ev.Data.EmailAddresses[0].EmailAddress != "ada@example.com" {
					t.Errorf("user data = %+v", ev.Data)
				}
			case typeUserDeleted:
				if ev.Data.ID != "user_abc" || !ev.Data.Deleted {
					t.Errorf("deleted data = %+v", ev.Data)
				}
			case typeSessionCreated:
				if ev.Data.UserID != "user_abc" || !strings.HasPrefix(ev.Data.ID, "sess_") {
					t.Errorf("session data = %+v", ev.Data)
				}
			}
		})
	}
}

// receiver is a test endpoint that verifies like creditgate and records
// the svix ids and users it saw.
type receiver struct {
	wh    *svix.Webhook
	mu    sync.Mutex
	ids   map[string]int
	users map[string]int
}

func newReceiver(t *testing.T) (*receiver, *httptest.Server) {
	t.Helper()
	wh, err := svix.NewWebhook(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	r := &receiver{wh: wh, ids: map[string]int{}, users: map[string]int{}}
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	return r, srv
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	if err := r.wh.Verify(body, req.Header); err != nil {
		http.Error(w, `{"error":"bad signature"}`, http.StatusUnauthorized)
		return
	}
	var ev clerkShape
	_ = json.Unmarshal(body, &ev)
	r.mu.Lock()
	r.ids[req.Header.Get("svix-id")]++
	r.users[ev.Data.ID]++
	r.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, `{"status":"processed"}`)
}

func TestRunLoad(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		client      string
		pregenerate bool
	}{{"net/http", false}, {"net/http", true}, {"lean", false}, {"lean", true}} {
		t.Run(fmt.Sprintf("client=%s,pregenerate=%t", tc.client, tc.pregenerate), func(t *testing.T) {
			t.Parallel()
			r, srv := newReceiver(t)
			var out, errOut bytes.Buffer
			err := run(context.Background(), []string{"-url", srv.URL, "-n", "50", "-c", "8",
				"-client", tc.client, fmt.Sprintf("-pregenerate=%t", tc.pregenerate)},
				func(k string) string {
					if k == envSigningSecret {
						return testSecret + " whsec_b3RoZXI="
					}
					return ""
				}, &out, &errOut)
			if err != nil {
				t.Fatalf("run: %v\n%s%s", err, out.String(), errOut.String())
			}
			for _, want := range []string{"events: 50\n", "concurrency: 8\n", "status_200: 50\n", "failed: 0\n", "latency_p99_ms: "} {
				if !strings.Contains(out.String(), want) {
					t.Errorf("summary lacks %q:\n%s", want, out.String())
				}
			}
			if len(r.ids) != 50 || len(r.users) != 50 {
				t.Errorf("saw %d svix ids and %d users, want 50 of each", len(r.ids), len(r.users))
			}
		})
	}
}

func TestRunLoadOneUserAndBadSecret(t *testing.T) {
	t.Parallel()
	r, srv := newReceiver(t)
	env := func(string) string { return "" }
	var out bytes.Buffer
	err := run(context.Background(), []string{"-url", srv.URL, "-secret", testSecret, "-n", "10", "-c", "3",
		"-unique=false", "-user", "user_same", "-svix-id", "msg_same"}, env, &out, io.Discard)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	if r.ids["msg_same"] != 10 || r.users["user_same"] != 10 {
		t.Errorf("ids %v users %v, want 10 deliveries of msg_same about user_same", r.ids, r.users)
	}

	out.Reset()
	err = run(context.Background(), []string{"-url", srv.URL, "-secret", "whsec_" + strings.Repeat("B", 32), "-n", "4", "-c", "2"},
		env, &out, io.Discard)
	if err == nil || !strings.Contains(out.String(), "status_401: 4\n") || !strings.Contains(out.String(), "first_body_401: ") {
		t.Errorf("with a wrong secret: err = %v, summary:\n%s", err, out.String())
	}
}

func TestParseFlagsErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		env  string
		want string
	}{
		{"no secret", nil, "", "-secret or CLERK_WEBHOOK_SIGNING_SECRET is required"},
		{"not whsec", []string{"-secret", "abc"}, "", "must start with whsec_"},
		{"bad type", []string{"-type", "user.exploded"}, testSecret, "-type must be one of"},
		{"user with unique load", []string{"-n", "5", "-user", "user_1"}, testSecret, "-unique=false"},
		{"zero n", []string{"-n", "0"}, testSecret, "-n must be at least 1"},
		{"unknown client", []string{"-client", "curl"}, testSecret, "-client must be net/http or lean"},
		{"lean over https", []string{"-client", "lean", "-url", "https://example.com/"}, testSecret, "plain http:// only"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := parseFlags(tt.args, func(string) string { return tt.env }, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want it to contain %q", err, tt.want)
			}
			if err != nil && tt.env != "" && strings.Contains(err.Error(), tt.env) {
				t.Errorf("error echoes the secret: %v", err)
			}
		})
	}
}

func TestPercentile(t *testing.T) {
	t.Parallel()
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	for _, tt := range []struct {
		p    float64
		want time.Duration
	}{{50, 50 * time.Millisecond}, {90, 90 * time.Millisecond}, {99, 99 * time.Millisecond}, {100, 100 * time.Millisecond}} {
		if got := percentile(d, tt.p); got != tt.want {
			t.Errorf("p%v = %v, want %v", tt.p, got, tt.want)
		}
	}
	if got := percentile(nil, 50); got != 0 {
		t.Errorf("p50 of nothing = %v", got)
	}
}

// BenchmarkMessage measures the sender's own cost per event (payload and
// signature), which shares the CPU with the service in docs/benchmarks.md.
func BenchmarkMessage(b *testing.B) {
	s, err := newSender("http://unused", testSecret, 1, time.Second)
	if err != nil {
		b.Fatal(err)
	}
	g := &generator{eventType: typeUserCreated, instanceID: newID("ins"), unique: true, now: time.Now}
	b.ReportAllocs()
	for b.Loop() {
		m, err := g.message(0)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.headers(m, time.Now()); err != nil {
			b.Fatal(err)
		}
	}
}

func TestKSUID(t *testing.T) {
	var zero, most [20]byte
	for i := range most {
		most[i] = 0xff
	}
	// The bounds of segmentio/ksuid's encoding.
	if got := base62Of(zero); got != "000000000000000000000000000" {
		t.Errorf("base62Of(zero) = %q", got)
	}
	if got := base62Of(most); got != "aWgEPTl1tmebfsQzFP4bxwgy80V" {
		t.Errorf("base62Of(most) = %q, want aWgEPTl1tmebfsQzFP4bxwgy80V", got)
	}
	// Time-ordered: an id from a later second sorts after one from an
	// earlier second, whatever their random parts.
	now := time.Date(2026, 11, 28, 1, 0, 0, 0, time.UTC)
	for range 100 {
		if a, b := ksuid(now), ksuid(now.Add(time.Second)); a >= b {
			t.Fatalf("ksuid(now) = %s >= ksuid(now+1s) = %s", a, b)
		}
	}
	if id := newID("user"); !strings.HasPrefix(id, "user_") || len(id) != len("user_")+27 ||
		strings.Trim(id[5:], base62) != "" {
		t.Errorf("newID = %q, want user_ and 27 base62 digits", id)
	}
}

// TestLeanClientReconnects: the lean client opens a new connection after an
// answer with Connection: close, and after the server drops an idle one,
// without losing or doubling a delivery.
func TestLeanClientReconnects(t *testing.T) {
	t.Parallel()
	r, _ := newReceiver(t)
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if n.Add(1)%3 == 0 {
			w.Header().Set("Connection", "close")
		}
		r.ServeHTTP(w, req)
	}))
	t.Cleanup(srv.Close)
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"-url", srv.URL + "/api/webhooks/clerk?x=1", "-secret", testSecret,
		"-n", "30", "-c", "2", "-client", "lean"}, func(string) string { return "" }, &out, &errOut)
	if err != nil {
		t.Fatalf("run: %v\n%s%s", err, out.String(), errOut.String())
	}
	if !strings.Contains(out.String(), "status_200: 30\n") || len(r.ids) != 30 {
		t.Errorf("saw %d svix ids, summary:\n%s", len(r.ids), out.String())
	}
	for id, k := range r.ids {
		if k != 1 {
			t.Errorf("%s delivered %d times", id, k)
		}
	}
}
