package svixsender

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	svix "github.com/svix/svix-webhooks/go"

	"github.com/creditgate/creditgate/pkg/clerk/clerkevent"
)

// testSecret is a made-up whsec_ secret (base64 of 24 bytes).
const testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

func TestSignatureVerifiesWithSvix(t *testing.T) {
	t.Parallel()
	s, err := New("http://unused", testSecret, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, typ := range clerkevent.Types {
		g := &Generator{EventType: typ, User: "user_abc", Email: "ada@example.com"}
		m := g.Message()
		h := s.Headers(m, time.Now())
		wh, _ := svix.NewWebhook(testSecret)
		if err := wh.Verify(m.Body, h); err != nil {
			t.Fatalf("%s: Verify: %v", typ, err)
		}
		tampered := bytes.Replace(m.Body, []byte("user_abc"), []byte("user_abd"), 1)
		if err := wh.Verify(tampered, h); err == nil {
			t.Errorf("%s: Verify accepted a tampered body", typ)
		}
		other, _ := svix.NewWebhook("whsec_" + strings.Repeat("A", 32))
		if err := other.Verify(m.Body, h); err == nil {
			t.Errorf("%s: Verify accepted the signature under another secret", typ)
		}
	}
	if _, err := New("http://unused", "whsec_%%%", Options{}); err == nil || strings.Contains(err.Error(), "%%%") {
		t.Errorf("New with a bad secret: %v (want an error that does not echo it)", err)
	}
}

// TestDeliverRetriesLikeSvix: a 5xx is retried with the same id and body,
// signed afresh, until a 2xx; a 4xx with the abort header ends at once.
func TestDeliverRetriesLikeSvix(t *testing.T) {
	t.Parallel()
	wh, _ := svix.NewWebhook(testSecret)
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body bytes.Buffer
		_, _ = body.ReadFrom(r.Body)
		if err := wh.Verify(body.Bytes(), r.Header); err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		if r.Header.Get("svix-id") == "msg_abort" {
			w.Header().Set("webhook-delivery", "abort-message")
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		if calls.Add(1) < 3 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte(`{"status":"processed"}`))
	}))
	t.Cleanup(srv.Close)
	s, err := New(srv.URL, testSecret, Options{Schedule: []time.Duration{time.Millisecond, time.Millisecond, time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	m := Message{ID: "msg_1", Body: []byte(`{"type":"user.created"}`)}
	if a := s.Deliver(context.Background(), m); !a.OK() || string(a.Body) != `{"status":"processed"}` {
		t.Errorf("Deliver = %d %s %v, want 200 after two 503s", a.Status, a.Body, a.Err)
	}
	if a := s.Deliver(context.Background(), Message{ID: "msg_abort", Body: []byte(`{}`)}); a.Status != 400 || !a.Aborted() {
		t.Errorf("Deliver of an aborted message = %d aborted=%t", a.Status, a.Aborted())
	}
	c := s.Counts()
	if c.Attempts != 4 || c.Non2xx != 3 || c.Statuses[503] != 2 || c.Statuses[400] != 1 || c.Statuses[200] != 1 {
		t.Errorf("counts = %+v, want 4 attempts: 503, 503, 200, then one aborted 400", c)
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

// BenchmarkMessage measures the sender's own cost per event (body and
// signature), which shares the CPU with the service in docs/benchmarks.md.
func BenchmarkMessage(b *testing.B) {
	s, err := New("http://unused", testSecret, Options{})
	if err != nil {
		b.Fatal(err)
	}
	g := &Generator{EventType: clerkevent.UserCreated, Unique: true}
	b.ReportAllocs()
	for b.Loop() {
		_ = s.Headers(g.Message(), time.Now())
	}
}

// TestDeliverAll: every message is delivered, at most concurrency at a time,
// and only those that never got a 2xx are reported.
func TestDeliverAll(t *testing.T) {
	t.Parallel()
	var inFlight, most atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for m := most.Load(); n > m; m = most.Load() {
			if most.CompareAndSwap(m, n) {
				break
			}
		}
		time.Sleep(5 * time.Millisecond)
		if r.Header.Get("svix-id") == "msg_bad" {
			w.Header().Set("webhook-delivery", "abort-message")
			w.WriteHeader(http.StatusBadRequest)
		}
	}))
	t.Cleanup(srv.Close)
	s, err := New(srv.URL, testSecret, Options{})
	if err != nil {
		t.Fatal(err)
	}
	msgs := []Message{{ID: "msg_bad", Body: []byte(`{}`)}}
	for i := range 20 {
		msgs = append(msgs, Message{ID: fmt.Sprintf("msg_%d", i), Body: []byte(`{}`)})
	}
	failed := s.DeliverAll(context.Background(), msgs, 3)
	if len(failed) != 1 || !strings.HasPrefix(failed[0], "msg_bad: 400 ") {
		t.Errorf("failed = %q, want only msg_bad", failed)
	}
	if c := s.Counts(); c.Attempts != 21 || most.Load() > 3 {
		t.Errorf("%d attempts, at most %d at a time; want 21, at most 3", c.Attempts, most.Load())
	}
}
