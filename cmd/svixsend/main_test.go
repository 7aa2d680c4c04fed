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

	svix "github.com/svix/svix-webhooks/go"
)

// testSecret is a made-up whsec_ secret (base64 of 24 bytes).
const testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

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
	var ev struct {
		Data struct {
			ID string `json:"id"`
		} `json:"data"`
	}
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
