package webhook_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// FuzzDelivery drives any signed body through the whole delivery path (real
// router, Svix signature, decoder, ledger service, PostgreSQL) and holds it to
// the webhook's promise while the database is healthy: the answer is 200 or
// 400, never a 5xx that Svix would retry in vain; a 400 tells Svix to stop;
// the body is never lost (its event row exists, the exact bytes kept for a
// rejection); and the ledger invariants hold for the user it names. The seed
// corpus (below and testdata/fuzz/FuzzDelivery) runs in `make test`; `make
// fuzz-delivery` fuzzes for FUZZTIME.
func FuzzDelivery(f *testing.F) {
	version := time.Now().Add(-time.Minute).UnixMilli()
	for _, seed := range []string{
		string(userCreated("user_1", "a@example.com")),
		string(userCreated("user_2", "")),
		fmt.Sprintf(`{"type":"user.updated","data":{"id":"user_1","updated_at":%d,"email_addresses":[{"id":"e","email_address":"b@example.com"}],"primary_email_address_id":"e"}}`, version),
		`{"type":"user.deleted","data":{"id":"user_1","deleted":true,"object":"user"}}`,
		`{"type":"session.created","data":{"id":"sess_1","user_id":"user_1"}}`,
		// The classes that once got a 5xx, a wrong user or a lost user.
		`{"type":"user.created","data":{"id":"user_3","public_metadata":{"n":1e1000000}}}`,
		`{"type":"user.created","data":{"id":"user_3","public_metadata":{"n":1e131071,"m":-1e-99999}}}`,
		`{"type":"user.updated","data":{"id":"user_3","updated_at":9405595996800000}}`,
		`{"type":"user.updated","data":{"id":"user_3","updated_at":9223372036854775807}}`,
		`{"type":"user.updated","data":{"id":"user_3","updated_at":7258118400000}}`,
		`{"type":"user.created","data":{"id":"   "}}`,
		`{"type":"user.created","data":{"id":"user_4","ID":"user_5"}}`,
		`{"type":"user.created","data":{"id":"user_4","id":"user_5"}}`,
		`{"type":"user.created","data":{"id":"user_6","email_addresses":[{"id":"e","email_address":"` + strings.Repeat("0123456789abcdefghijklmnopqrstuvwxyz", 90) + `"}],"primary_email_address_id":"e"}}`,
		`{"type":"user.created","data":{"id":"user_7","first_name":"\u0000\ud800"}}`,
		"{\"type\":\"user.created\",\"data\":{\"id\":\"user_8\",\"first_name\":\"\xff\"}}",
		`{"type":"user.created","data":{"id":"\udc00"}}`,
		`{"type":"user.created","data":`,
		`[]`, `null`, ``,
	} {
		f.Add([]byte(seed))
	}
	e := newEnv(f)
	var n atomic.Int64
	f.Fuzz(func(t *testing.T, body []byte) {
		svixID := fmt.Sprintf("msg_fuzz_%d_%d", os.Getpid(), n.Add(1))
		// Straight into the router, without a socket: the coverage-guided
		// fuzzer stalls when the server's connection goroutines outlive an
		// input. Everything after the network is the same path.
		req := httptest.NewRequest(http.MethodPost, webhookPath, bytes.NewReader(body))
		req.Header = signed(t, secretA, svixID, time.Now(), body)
		rec := httptest.NewRecorder()
		e.handler.ServeHTTP(rec, req)
		got := response{Status: rec.Code, Header: rec.Header()}
		if err := json.Unmarshal(rec.Body.Bytes(), &got.Body); err != nil {
			t.Fatalf("answer %q is not JSON: %v", rec.Body.Bytes(), err)
		}
		switch got.Status {
		case http.StatusOK:
		case http.StatusBadRequest:
			if got.Header.Get("webhook-delivery") != "abort-message" {
				t.Errorf("400 without webhook-delivery: abort-message: %v", got.Body)
			}
		default:
			t.Fatalf("status %d for a signed body while PostgreSQL is healthy: %v", got.Status, got.Body)
		}
		ev, ok := eventRow(t, e.db, svixID)
		if !ok {
			t.Fatalf("answered %d but stored no event: the body is lost", got.Status)
		}
		if ev.Status == "rejected" && string(ev.RawBody) != string(body) {
			t.Errorf("rejected event keeps %q, want the exact body", ev.RawBody)
		}
		if ev.Status == "failed" || ev.Status == "dead" {
			t.Errorf("event stored %s while PostgreSQL is healthy: %s", ev.Status, ev.LastError)
		}
		checkUserInvariants(t, e, svixID)
	})
}

// checkUserInvariants checks the money rules for the user an event names.
// (The whole-database check would slow fuzzing as the database grows.)
func checkUserInvariants(t *testing.T, e *env, svixID string) {
	t.Helper()
	var broken []string
	err := e.db.NewRaw(`
WITH u AS (
	SELECT u.id, u.clerk_id, u.available_credits, u.used_credits,
		COALESCE(SUM(t.amount) FILTER (WHERE t.type = 'credit'), 0) AS credits,
		COALESCE(SUM(t.amount) FILTER (WHERE t.type = 'debit'), 0) AS debits,
		count(*) FILTER (WHERE t.reason = 'signup_bonus') AS signups
	FROM users u LEFT JOIN credit_transactions t ON t.user_id = u.id
	WHERE u.clerk_id = (SELECT clerk_user_id FROM webhook_events WHERE svix_id = ?)
	GROUP BY u.id
)
SELECT format('%s: available=%s used=%s credits=%s debits=%s signups=%s',
	clerk_id, available_credits, used_credits, credits, debits, signups) FROM u
WHERE available_credits <> credits - debits OR used_credits <> debits
	OR available_credits < 0 OR signups > 1`, svixID).Scan(context.Background(), &broken)
	if err != nil {
		t.Fatalf("check invariants: %v", err)
	}
	for _, b := range broken {
		t.Errorf("ledger invariant broken: %s", b)
	}
}
