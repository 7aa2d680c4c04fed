package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/creditgate/creditgate/pkg/pgtest"
	"github.com/creditgate/creditgate/pkg/webhook/svixsender"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func TestMigrateCommand(t *testing.T) {
	t.Parallel()
	_, url := pgtest.New(t)
	// The test database is a clone of a migrated template: migrate is a no-op.
	var out, errOut bytes.Buffer
	getenv := envMap(map[string]string{"DATABASE_URL": url, "LOG_FORMAT": "text"})
	for i := 0; i < 2; i++ {
		if err := run(context.Background(), []string{"migrate"}, getenv, &out, &errOut); err != nil {
			t.Fatalf("migrate #%d: %v\n%s", i+1, err, errOut.String())
		}
	}
	if !strings.Contains(errOut.String(), "up to date") {
		t.Errorf("migrate log = %q, want it to say the schema is up to date", errOut.String())
	}
	if err := run(context.Background(), []string{"migrate", "status"}, getenv, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "applied  20261127000001 ledger") || strings.Contains(out.String(), "pending") {
		t.Errorf("migrate status = %q", out.String())
	}
}

func TestServeHandlesEventAndShutsDownGracefully(t *testing.T) {
	t.Parallel()
	db, url := pgtest.New(t)
	httpAddr, metricsAddr, apiAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	const apiKey = "0123456789abcdef0123456789abcdef"
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, nil, envMap(map[string]string{
			"DATABASE_URL": url, "CLERK_WEBHOOK_SIGNING_SECRET": testSecret, "SIGNUP_CREDITS": "7",
			"HTTP_ADDR": httpAddr, "METRICS_ADDR": metricsAddr, "API_ADDR": apiAddr, "LOG_LEVEL": "error",
			"CREDITS_API_KEYS": "app:read+spend:" + apiKey,
		}), io.Discard, io.Discard)
	}()
	base := "http://" + httpAddr
	waitReady(t, base)

	status, b := postSigned(t, base, "msg_main", `{"type":"user.created","data":{"id":"user_main","email_addresses":[]}}`)
	if status != http.StatusOK || !strings.Contains(b, `"credits_granted":7`) {
		t.Fatalf("POST = %d %s, want 200 granting 7", status, b)
	}
	var available int64
	if err := db.NewRaw("SELECT available_credits FROM users WHERE clerk_id = 'user_main'").Scan(context.Background(), &available); err != nil || available != 7 {
		t.Errorf("available_credits = %d, %v; want 7", available, err)
	}

	// The credits API on its own listener sees the webhook's grant.
	req, _ := http.NewRequest(http.MethodGet, "http://"+apiAddr+"/v1/users/user_main/balance", nil)
	req.Header.Set("Authorization", "Bearer "+apiKey)
	if resp, err := http.DefaultClient.Do(req); err != nil {
		t.Errorf("credits API: %v", err)
	} else {
		ab, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(ab), `"available":7`) {
			t.Errorf("credits API balance = %d %s, want 200 with 7 available", resp.StatusCode, ab)
		}
	}

	mresp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	mb, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	for _, want := range []string{
		`creditgate_webhook_deliveries_total{outcome="processed"} 1`,
		`creditgate_credits_granted_total 7`,
		`creditgate_db_pool_max_connections 10`,
		`creditgate_backlog_query_up 1`,
		`creditgate_users_without_signup_credit 0`,
		`creditgate_webhook_events_unfinished{status="failed"} 0`,
		`creditgate_outbox_messages{status="pending"} 0`,
		`creditgate_ledger_drift_users 0`,
		`creditgate_reconcile_last_success_timestamp_seconds 0`,
		`creditgate_credits_active_holds 0`,
		`creditgate_credits_expiry_backlog 0`,
		`creditgate_api_requests_total{code="200",operation="GET /v1/users/{user}/balance"} 1`,
	} {
		if !strings.Contains(string(mb), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	var probeOut bytes.Buffer
	if err := run(context.Background(), []string{"probe", base + "/readyz"}, envMap(nil), &probeOut, io.Discard); err != nil ||
		!strings.HasPrefix(probeOut.String(), "200 OK") {
		t.Errorf("probe /readyz = %v, %q", err, probeOut.String())
	}
	if err := run(context.Background(), []string{"probe", base + "/nope"}, envMap(nil), io.Discard, io.Discard); err == nil {
		t.Error("probe of a 404 succeeded")
	}

	cancel() // what SIGTERM does through signal.NotifyContext
	waitExit(t, done)
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Error("still accepting connections after shutdown")
	}
}

func discardLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// postSigned POSTs body to the webhook at base, signed like Svix with
// testSecret, and returns the status and body of the answer.
func postSigned(t *testing.T, base, svixID, body string) (int, string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(signedRequest(base, svixID, body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestDrainKeepsIdleConnectionsUntilTheirNextAnswer pins the graceful drain a
// rolling update relies on: after SIGTERM, within SHUTDOWN_DELAY, readiness
// fails, but a keep-alive connection a sender already holds is not closed
// under it (a POST written into a connection the server is closing is lost
// to a transport error); its next delivery is served and answered with
// Connection: close, and only then is the connection closed.
func TestDrainKeepsIdleConnectionsUntilTheirNextAnswer(t *testing.T) {
	t.Parallel()
	db, url := pgtest.New(t)
	httpAddr, metricsAddr := freeAddr(t), freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, nil, envMap(map[string]string{
			"DATABASE_URL": url, "CLERK_WEBHOOK_SIGNING_SECRET": testSecret,
			"HTTP_ADDR": httpAddr, "METRICS_ADDR": metricsAddr, "API_ADDR": freeAddr(t), "LOG_LEVEL": "error", "SHUTDOWN_DELAY": "3s",
		}), io.Discard, io.Discard)
	}()
	base := "http://" + httpAddr
	waitReady(t, base)

	conn, err := net.Dial("tcp", httpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	roundTrip := func(req *http.Request) *http.Response {
		t.Helper()
		if err := req.Write(conn); err != nil {
			t.Fatalf("write %s: %v", req.URL.Path, err)
		}
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			t.Fatalf("read answer to %s: %v", req.URL.Path, err)
		}
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	healthz, _ := http.NewRequest(http.MethodGet, base+"/healthz", nil)
	if resp := roundTrip(healthz); resp.StatusCode != http.StatusOK || resp.Close {
		t.Fatalf("before SIGTERM: %d close=%v, want 200 keep-alive", resp.StatusCode, resp.Close)
	}

	cancel() // SIGTERM
	waitStatus(t, base+"/readyz", http.StatusServiceUnavailable)

	req := signedRequest(base, "msg_drain", `{"type":"user.created","data":{"id":"user_drain","email_addresses":[]}}`)
	if resp := roundTrip(req); resp.StatusCode != http.StatusOK || !resp.Close {
		t.Fatalf("delivery on the held connection while draining: %d close=%v, want 200 with Connection: close", resp.StatusCode, resp.Close)
	}
	var available int64
	if err := db.NewRaw("SELECT available_credits FROM users WHERE clerk_id = 'user_drain'").Scan(context.Background(), &available); err != nil || available != 20 {
		t.Errorf("available_credits = %d, %v; want 20", available, err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	if n, err := br.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("after the Connection: close answer: read %d bytes, %v; want EOF", n, err)
	}
	waitExit(t, done)
}

// signedRequest is a delivery of body to the webhook at base, signed like
// Svix with testSecret.
func signedRequest(base, svixID, body string) *http.Request {
	h, _ := svixsender.Sign(testSecret, svixsender.Message{ID: svixID, Body: []byte(body)}, time.Now())
	req, _ := http.NewRequest(http.MethodPost, base+"/api/webhooks/clerk", strings.NewReader(body))
	req.Header = h
	return req
}

// waitExit waits for run to return after its context was cancelled.
func waitExit(t *testing.T, done <-chan error) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run after shutdown = %v, want nil", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("no exit within 15s of shutdown")
	}
}
