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
	"sync/atomic"
	"testing"

	svix "github.com/svix/svix-webhooks/go"

	"github.com/creditgate/creditgate/pkg/pgtest"
)

// TestSelftestAgainstTheWebhook runs `webhook selftest` against the real
// webhook and PostgreSQL: it passes with the webhook's secret, every run
// leaves exactly one ignored creditgate.selftest event, and users and
// credit_transactions are untouched. With another secret it fails on the 401
// and stores nothing.
func TestSelftestAgainstTheWebhook(t *testing.T) {
	t.Parallel()
	db, url := pgtest.New(t)
	httpAddr, metricsAddr := freeAddr(t), freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, nil, envMap(map[string]string{
			"DATABASE_URL": url, "CLERK_WEBHOOK_SIGNING_SECRET": testSecret,
			"HTTP_ADDR": httpAddr, "METRICS_ADDR": metricsAddr, "API_ADDR": freeAddr(t), "LOG_LEVEL": "error",
		}), io.Discard, io.Discard)
	}()
	defer waitExit(t, done)
	defer cancel()
	base := "http://" + httpAddr
	waitReady(t, base)

	// A ledger with something in it, so that "unchanged" means something.
	if status, b := postSigned(t, base, "msg_before", `{"type":"user.created","data":{"id":"user_before","email_addresses":[]}}`); status != http.StatusOK {
		t.Fatalf("user.created = %d %s", status, b)
	}
	checksum := func(table string) string {
		t.Helper()
		var v string
		q := fmt.Sprintf("SELECT count(*) || ':' || COALESCE(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM %s t", table)
		if err := db.NewRaw(q).Scan(context.Background(), &v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	users, credits := checksum("users"), checksum("credit_transactions")

	endpoint := base + "/api/webhooks/clerk"
	for i := range 2 {
		var out bytes.Buffer
		// The secret as the chart passes it during a rotation: the first signs.
		env := envMap(map[string]string{"CLERK_WEBHOOK_SIGNING_SECRET": testSecret + " whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"})
		if err := run(context.Background(), []string{"selftest", endpoint}, env, &out, io.Discard); err != nil {
			t.Fatalf("selftest #%d: %v\n%s", i+1, err, out.String())
		}
		if !strings.HasPrefix(out.String(), "200 OK") || !strings.Contains(out.String(), "selftest ok") {
			t.Errorf("selftest #%d printed %q", i+1, out.String())
		}
	}
	var events []struct {
		Status      string  `bun:"status"`
		ClerkUserID *string `bun:"clerk_user_id"`
	}
	if err := db.NewRaw("SELECT status, clerk_user_id FROM webhook_events WHERE event_type = ?", selftestEventType).
		Scan(context.Background(), &events); err != nil {
		t.Fatal(err)
	}
	if len(events) != 2 {
		t.Fatalf("%d %s events, want one per run (2)", len(events), selftestEventType)
	}
	for _, e := range events {
		if e.Status != "ignored" || e.ClerkUserID != nil {
			t.Errorf("selftest event stored as %q for user %v, want ignored for no user", e.Status, e.ClerkUserID)
		}
	}
	if got := checksum("users"); got != users {
		t.Errorf("users changed: %s -> %s", users, got)
	}
	if got := checksum("credit_transactions"); got != credits {
		t.Errorf("credit_transactions changed: %s -> %s", credits, got)
	}

	other := envMap(map[string]string{"CLERK_WEBHOOK_SIGNING_SECRET": "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"})
	err := run(context.Background(), []string{"selftest", endpoint}, other, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "401") || !strings.Contains(err.Error(), "does not verify") {
		t.Errorf("selftest with another secret = %v, want a 401 naming the secret mismatch", err)
	}
	var n int
	if err := db.NewRaw("SELECT count(*) FROM webhook_events WHERE event_type = ?", selftestEventType).Scan(context.Background(), &n); err != nil || n != 2 {
		t.Errorf("%d %s events after the refused run (%v), want still 2", n, selftestEventType, err)
	}
	pgtest.CheckInvariants(t, db)
}

// TestSelftestRefuses checks that selftest succeeds only on 200 "ignored" for
// its own, correctly signed delivery, and says what is wrong otherwise.
func TestSelftestRefuses(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		secret  string
		answer  func(w http.ResponseWriter, svixID string)
		wantErr string
	}{
		{name: "ignored", answer: answerJSON(http.StatusOK, "ignored", 0)},
		{name: "no secret", secret: " ", wantErr: "CLERK_WEBHOOK_SIGNING_SECRET is required"},
		{name: "secret without whsec_", secret: "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", wantErr: "does not start with whsec_"},
		{name: "secret not base64", secret: "whsec_…", wantErr: "not valid base64"},
		{name: "processed", answer: answerJSON(http.StatusOK, "processed", 20), wantErr: `status "processed"`},
		{name: "duplicate", answer: answerJSON(http.StatusOK, "duplicate", 0), wantErr: `status "duplicate"`},
		{name: "another delivery's answer", answer: func(w http.ResponseWriter, _ string) {
			answerJSON(http.StatusOK, "ignored", 0)(w, "msg_other")
		}, wantErr: `svix-id "msg_other"`},
		{name: "not JSON", answer: func(w http.ResponseWriter, _ string) { fmt.Fprint(w, "ok") }, wantErr: "not creditgate's"},
		{name: "unavailable", answer: func(w http.ResponseWriter, _ string) {
			http.Error(w, `{"error":"Service Unavailable"}`, http.StatusServiceUnavailable)
		}, wantErr: "503 Service Unavailable"},
		{name: "unauthorized", answer: func(w http.ResponseWriter, _ string) {
			http.Error(w, `{"error":"no matching signature"}`, http.StatusUnauthorized)
		}, wantErr: "does not verify with this CLERK_WEBHOOK_SIGNING_SECRET"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			secret := testSecret
			if tt.secret != "" {
				secret = tt.secret
			}
			var posted atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				posted.Add(1)
				body, _ := io.ReadAll(r.Body)
				// What the webhook checks first: a signature by the secret.
				wh, err := svix.NewWebhook(testSecret)
				if err != nil {
					t.Error(err)
				}
				if err := wh.Verify(body, r.Header); err != nil {
					t.Errorf("selftest's delivery does not verify: %v", err)
				}
				var ev struct {
					Type string         `json:"type"`
					Data map[string]any `json:"data"`
				}
				if err := json.Unmarshal(body, &ev); err != nil || ev.Type != selftestEventType || ev.Data == nil {
					t.Errorf("selftest sent %s (%v), want a %s event with a data object", body, err, selftestEventType)
				}
				tt.answer(w, r.Header.Get("svix-id"))
			}))
			defer srv.Close()

			var out bytes.Buffer
			err := run(context.Background(), []string{"selftest", srv.URL}, envMap(map[string]string{"CLERK_WEBHOOK_SIGNING_SECRET": secret}), &out, io.Discard)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("selftest = %v\n%s", err, out.String())
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("selftest = %v, want an error with %q", err, tt.wantErr)
			}
			if tt.answer == nil && posted.Load() != 0 {
				t.Errorf("posted %d times with an unusable secret", posted.Load())
			}
			if err != nil && strings.Contains(err.Error(), strings.TrimPrefix(secret, "whsec_")) && strings.TrimSpace(secret) != "" {
				t.Errorf("the error shows the secret: %v", err)
			}
		})
	}
}

// answerJSON answers like the webhook: a ledger.Result for svixID.
func answerJSON(status int, outcome string, granted int) func(http.ResponseWriter, string) {
	return func(w http.ResponseWriter, svixID string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		fmt.Fprintf(w, `{"svix_id":%q,"status":%q,"event_type":%q,"credits_granted":%d}`, svixID, outcome, selftestEventType, granted)
	}
}
