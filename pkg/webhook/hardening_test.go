package webhook_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/creditgate/creditgate/pkg/clerk"
	"github.com/creditgate/creditgate/pkg/ledger"
	"github.com/creditgate/creditgate/pkg/pgtest"
	"github.com/creditgate/creditgate/pkg/postgres"
	"github.com/creditgate/creditgate/pkg/webhook"
)

// storedEvent is how one webhook_events row keeps its delivery.
type storedEvent struct {
	Status     string
	HasPayload bool
	RawBody    []byte
	LastError  string
	Attempts   int
}

func eventRow(t testing.TB, db bun.IDB, svixID string) (storedEvent, bool) {
	t.Helper()
	var ev storedEvent
	var lastErr sql.NullString
	err := db.QueryRowContext(context.Background(),
		"SELECT status, payload IS NOT NULL, raw_body, last_error, attempts FROM webhook_events WHERE svix_id = ?", svixID).
		Scan(&ev.Status, &ev.HasPayload, &ev.RawBody, &lastErr, &ev.Attempts)
	if errors.Is(err, sql.ErrNoRows) {
		return ev, false
	}
	if err != nil {
		t.Fatalf("read event %s: %v", svixID, err)
	}
	ev.LastError = lastErr.String
	return ev, true
}

// userBody is a Clerk-shaped user event for user_1 with extra fields spliced
// into data.
func userBody(typ, data string) string {
	return `{"type":"` + typ + `","object":"event","data":{"object":"user",` + data + `},"timestamp":1764000000000}`
}

// randomText is n bytes of printable ASCII that no index compresses.
func randomText(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + rand.IntN(26))
	}
	return string(b)
}

// TestSignedBodiesAre200Or400 is every class of signed body that once got a
// 5xx (retried by Svix in vain), a wrong user, or a user never created. The
// rules: a field the ledger does not need never blocks the grant; a field it
// needs and cannot trust rejects the event for good (400 + abort-message +
// one rejected row holding the exact bytes); jsonb's limits never lose a body.
func TestSignedBodiesAre200Or400(t *testing.T) {
	t.Parallel()
	now := time.Now()
	version := now.Add(-time.Minute).UnixMilli()
	credited := func(id, email string) snapshot {
		return snapshot{
			Users:   map[string]userState{id: {Email: email, Available: 20}},
			Entries: []entry{signup(id, "msg_h")},
			Events:  map[string]string{"msg_h": "processed"},
		}
	}
	rejected := snapshot{Events: map[string]string{"msg_h": "rejected"}}
	longEmail := randomText(3000) + "@example.com"
	deep := strings.Repeat(`{"a":`, 9000) + "1" + strings.Repeat("}", 9000)
	tests := []struct {
		name string
		body string
		// status is the answer; reason a part of a 400's reason, or
		// ignored the field left out of a 200.
		status  int
		reason  string
		ignored string
		want    snapshot
		// payload: the body is (also) stored as jsonb; raw: the exact bytes
		// are kept.
		payload, raw bool
	}{
		// Values jsonb cannot hold, in fields creditgate does not read: the
		// user is credited and the body kept as bytes.
		{name: "number beyond numeric's range", body: userBody("user.created", `"id":"user_1","public_metadata":{"n":1e1000000}`),
			status: 200, want: credited("user_1", ""), raw: true},
		{name: "number that expands to 131072 digits", body: userBody("user.created", `"id":"user_1","public_metadata":{"n":1e131071}`),
			status: 200, want: credited("user_1", ""), raw: true},
		{name: "number below numeric's scale", body: userBody("user.created", `"id":"user_1","public_metadata":{"n":-1e-99999}`),
			status: 200, want: credited("user_1", ""), raw: true},
		{name: "ordinary numbers", body: userBody("user.created", `"id":"user_1","public_metadata":{"n":1.5e3,"m":-0.25,"big":12345678901234567890}`),
			status: 200, want: credited("user_1", ""), payload: true},
		{name: "NUL escape in a name", body: userBody("user.created", `"id":"user_1","first_name":"a\u0000b"`),
			status: 200, want: credited("user_1", ""), raw: true},
		{name: "lone surrogate in a name", body: userBody("user.created", `"id":"user_1","last_name":"\udfff"`),
			status: 200, want: credited("user_1", ""), raw: true},
		{name: "invalid UTF-8 in a name", body: userBody("user.created", "\"id\":\"user_1\",\"first_name\":\"\xc3\x28\""),
			status: 200, want: credited("user_1", ""), raw: true},
		{name: "9000 levels of nesting", body: userBody("user.created", `"id":"user_1","unsafe_metadata":`+deep),
			status: 200, want: credited("user_1", ""), payload: true},
		// The email is not needed for the ledger: one that cannot be stored
		// or indexed is left out, and the user credited.
		{name: "primary email of 3 kB", body: userBody("user.created", fmt.Sprintf(
			`"id":"user_1","updated_at":%d,"email_addresses":[{"id":"e1","email_address":%q}],"primary_email_address_id":"e1"`, version, longEmail)),
			status: 200, ignored: "longer than 320 bytes", want: credited("user_1", ""), payload: true},
		{name: "primary email of invalid UTF-8", body: userBody("user.created",
			"\"id\":\"user_1\",\"email_addresses\":[{\"id\":\"e1\",\"email_address\":\"a\xff@x.org\"}],\"primary_email_address_id\":\"e1\""),
			status: 200, ignored: "not valid text", want: credited("user_1", ""), raw: true},
		{name: "email list of the wrong type", body: userBody("user.created", `"id":"user_1","email_addresses":"a@x.org","primary_email_address_id":"e1"`),
			status: 200, ignored: "not a list", want: credited("user_1", ""), payload: true},
		// Keys match exactly: "ID" is not "id".
		{name: "id and ID", body: userBody("user.created", `"ID":"user_2","id":"user_1","Id":"user_3"`),
			status: 200, want: credited("user_1", ""), payload: true},
		// Fields the ledger needs and cannot trust.
		{name: "updated_at in the year 300000", body: userBody("user.updated", `"id":"user_1","updated_at":9405595996800000`),
			status: 400, reason: "not a time Clerk can have written", want: rejected, payload: true, raw: true},
		{name: "updated_at int64 max", body: userBody("user.updated", `"id":"user_1","updated_at":9223372036854775807`),
			status: 400, reason: "not a time Clerk can have written", want: rejected, payload: true, raw: true},
		{name: "updated_at in 2200", body: userBody("user.updated", `"id":"user_1","updated_at":7258118400000`),
			status: 400, reason: "later than the delivery", want: rejected, payload: true, raw: true},
		{name: "updated_at in seconds", body: userBody("user.updated", fmt.Sprintf(`"id":"user_1","updated_at":%d`, now.Unix())),
			status: 400, reason: "before the year 2000", want: rejected, payload: true, raw: true},
		{name: "updated_at beyond numeric", body: userBody("user.updated", `"id":"user_1","updated_at":1e1000000`),
			status: 400, reason: "whole Unix milliseconds", want: rejected, raw: true},
		{name: "data.id of spaces", body: userBody("user.created", `"id":"   "`),
			status: 400, reason: `"data.id" must be letters, digits`, want: rejected, payload: true, raw: true},
		{name: "data.id with a path", body: userBody("user.created", `"id":"user_1/../../users"`),
			status: 400, reason: `"data.id" must be letters, digits`, want: rejected, payload: true, raw: true},
		{name: "data.id twice", body: userBody("user.created", `"id":"user_1","id":"user_2"`),
			status: 400, reason: `repeats the key at "/data/id"`, want: rejected, payload: true, raw: true},
		{name: "type with spaces", body: `{"type":"user created","data":{"id":"user_1"}}`,
			status: 400, reason: `"type" must be letters`, want: rejected, payload: true, raw: true},
		{name: "not JSON", body: `{"type":"user.created","data":{"id":"user_1"`,
			status: 400, reason: "not valid JSON", want: rejected, raw: true},
		// Other event types and deletes with the same odd values.
		// A delete scrubs the user's stored bodies at once (its own too):
		// jsonb keeps the ids and times, the bytes go.
		{name: "user.deleted with a huge number", body: `{"type":"user.deleted","data":{"id":"user_1","deleted":true,"n":1e999999}}`,
			status: 200, want: snapshot{Users: map[string]userState{"user_1": {}}, Events: map[string]string{"msg_h": "processed"}}, payload: true},
		{name: "session.created with a huge number", body: `{"type":"session.created","data":{"id":"sess_1","user_id":"user_1","n":1e999999}}`,
			status: 200, want: snapshot{Events: map[string]string{"msg_h": "ignored"}}, raw: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)

			got := e.deliver(t, "msg_h", []byte(tt.body))

			if got.Status != tt.status {
				t.Fatalf("status %d, want %d: %v", got.Status, tt.status, got.Body)
			}
			switch tt.status {
			case http.StatusOK:
				if tt.ignored != "" {
					f, _ := got.Body["ignored_fields"].([]any)
					if len(f) != 1 || !strings.Contains(fmt.Sprint(f[0]), tt.ignored) {
						t.Errorf("ignored_fields = %v, want the email: %q", got.Body["ignored_fields"], tt.ignored)
					}
					e.wantCounters(t, map[string]float64{`creditgate_webhook_ignored_fields_total{field="email"}`: 1})
				} else if _, ok := got.Body["ignored_fields"]; ok {
					t.Errorf("ignored_fields = %v, want none", got.Body["ignored_fields"])
				}
			case http.StatusBadRequest:
				if got.Header.Get("webhook-delivery") != "abort-message" {
					t.Error("400 without webhook-delivery: abort-message")
				}
				if r, _ := got.Body["reason"].(string); !strings.Contains(r, tt.reason) {
					t.Errorf("reason %q, want it to contain %q", r, tt.reason)
				}
			}
			wantSnapshot(t, e.db, tt.want)
			ev, ok := eventRow(t, e.db, "msg_h")
			if !ok {
				t.Fatal("no webhook_events row: the body was lost")
			}
			if ev.HasPayload != tt.payload {
				t.Errorf("payload stored as jsonb: %v, want %v", ev.HasPayload, tt.payload)
			}
			if gotRaw := ev.RawBody != nil; gotRaw != tt.raw || gotRaw && string(ev.RawBody) != tt.body {
				t.Errorf("raw_body kept: %v (exact: %v), want %v", gotRaw, string(ev.RawBody) == tt.body, tt.raw)
			}
			pgtest.CheckInvariants(t, e.db)

			// A redelivery (Svix's retry) answers the same way and changes nothing.
			again := e.deliver(t, "msg_h", []byte(tt.body))
			if again.Status != tt.status {
				t.Errorf("redelivery: status %d, want %d", again.Status, tt.status)
			}
			wantSnapshot(t, e.db, tt.want)
		})
	}
}

// TestFutureVersionDoesNotFreezeTheUser: an event dated 2200, had it been
// applied, would have made every later real update stale.
func TestFutureVersionDoesNotFreezeTheUser(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	t0 := time.Now().Add(-time.Hour).UnixMilli()
	emails := func(addr string) string {
		return fmt.Sprintf(`"email_addresses":[{"id":"e1","email_address":%q}],"primary_email_address_id":"e1"`, addr)
	}
	create := userBody("user.created", fmt.Sprintf(`"id":"user_1","updated_at":%d,%s`, t0, emails("old@example.com")))
	future := userBody("user.updated", fmt.Sprintf(`"id":"user_1","updated_at":%d,%s`, int64(7258118400000), emails("evil@example.com")))
	realBody := userBody("user.updated", fmt.Sprintf(`"id":"user_1","updated_at":%d,%s`, t0+1000, emails("new@example.com")))

	if got := e.deliver(t, "msg_1", []byte(create)); got.Status != http.StatusOK {
		t.Fatalf("create: %d %v", got.Status, got.Body)
	}
	if got := e.deliver(t, "msg_2", []byte(future)); got.Status != http.StatusBadRequest {
		t.Fatalf("update from 2200: %d %v, want 400", got.Status, got.Body)
	}
	if got := e.deliver(t, "msg_3", []byte(realBody)); got.Status != http.StatusOK || got.Body["status"] != "processed" {
		t.Fatalf("real update: %d %v, want 200 processed", got.Status, got.Body)
	}
	wantSnapshot(t, e.db, snapshot{
		Users:   map[string]userState{"user_1": {Email: "new@example.com", Available: 20}},
		Entries: []entry{signup("user_1", "msg_1")},
		Events:  map[string]string{"msg_1": "processed", "msg_2": "rejected", "msg_3": "processed"},
	})
}

// TestFailedAndDeadEventsRerunOnRedelivery: an event parked dead during an
// outage is not the end; Svix's or an operator's redelivery re-runs it, and
// then it is done for good.
func TestFailedAndDeadEventsRerunOnRedelivery(t *testing.T) {
	t.Parallel()
	for _, status := range []string{"failed", "dead"} {
		t.Run(status, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			body := userCreated("user_1", "a@example.com")
			if _, err := e.db.ExecContext(context.Background(), `INSERT INTO webhook_events
				(svix_id, event_type, clerk_user_id, payload, status, attempts, last_error, received_at)
				VALUES ('msg_1', 'user.created', 'user_1', ?::jsonb, ?, 10, 'connection refused', now() - interval '1 day')`,
				string(body), status); err != nil {
				t.Fatal(err)
			}

			wantResponse(t, "redelivery", e.deliver(t, "msg_1", body), http.StatusOK, processed("msg_1", "user_1", 20))
			again := e.deliver(t, "msg_1", body)
			if again.Status != http.StatusOK || again.Body["status"] != "duplicate" {
				t.Errorf("second redelivery: %d %v, want 200 duplicate", again.Status, again.Body)
			}
			wantSnapshot(t, e.db, snapshot{
				Users:   map[string]userState{"user_1": {Email: "a@example.com", Available: 20}},
				Entries: []entry{signup("user_1", "msg_1")},
				Events:  map[string]string{"msg_1": "processed"},
			})
			pgtest.CheckInvariants(t, e.db)
		})
	}
}

// TestTimedOutDeliveryLeavesATrace: a delivery that runs out of time (here:
// its user's row held by another transaction) is kept as failed for the
// reconciler; it used to be recorded with its own expired context, so
// nothing was kept.
func TestTimedOutDeliveryLeavesATrace(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, func(c *webhook.Config) { c.ProcessTimeout = 300 * time.Millisecond })
	// 300 ms is short on a busy machine even without a lock: deliveries
	// that must succeed are retried on 503, as Svix does.
	if got := e.deliverUntilOK(t, "msg_1", userCreated("user_1", "a@example.com")); got.Status != http.StatusOK {
		t.Fatalf("create: %d %v", got.Status, got.Body)
	}
	ctx := context.Background()
	tx, err := e.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, "SELECT 1 FROM users WHERE clerk_id = 'user_1' FOR UPDATE"); err != nil {
		t.Fatal(err)
	}

	update := []byte(userBody("user.updated", fmt.Sprintf(`"id":"user_1","updated_at":%d`, time.Now().UnixMilli())))
	got := e.deliver(t, "msg_2", update)

	if got.Status != http.StatusServiceUnavailable || got.Header.Get("Retry-After") == "" {
		t.Fatalf("delivery while the user is locked: %d %v, want 503 with Retry-After", got.Status, got.Body)
	}
	ev, ok := eventRow(t, e.db, "msg_2")
	if !ok {
		t.Fatal("the timed-out delivery left no webhook_events row")
	}
	if ev.Status != "failed" || string(ev.RawBody) != string(update) || !strings.Contains(ev.LastError, "context deadline exceeded") {
		t.Errorf("stored %+v, want failed with the exact bytes and the deadline as its error", ev)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	// Svix's retry, once the row is free, applies it.
	if got := e.deliverUntilOK(t, "msg_2", update); got.Status != http.StatusOK || got.Body["status"] != "processed" {
		t.Errorf("retry: %d %v, want 200 processed", got.Status, got.Body)
	}
	pgtest.CheckInvariants(t, e.db)
}

// deliverUntilOK delivers as Svix does: again after a 503, for at most two
// minutes (a bound for a broken build only).
func (e *env) deliverUntilOK(t *testing.T, svixID string, body []byte) response {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Minute); ; {
		got := e.deliver(t, svixID, body)
		if got.Status != http.StatusServiceUnavailable || time.Now().After(deadline) {
			return got
		}
	}
}

// TestSchemaBehindIs503: a binary whose migrations the database lacks says
// so with a 503 (a retry helps once `webhook migrate` ran), as /readyz does,
// not with a 500.
func TestSchemaBehindIs503(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if _, err := e.db.ExecContext(context.Background(), "DROP TABLE clerk_metadata_outbox"); err != nil {
		t.Fatal(err)
	}
	got := e.deliver(t, "msg_1", userCreated("user_1", ""))
	if got.Status != http.StatusServiceUnavailable || got.Header.Get("Retry-After") == "" {
		t.Errorf("delivery: %d %v, want 503 with Retry-After", got.Status, got.Body)
	}
}

// TestHeadersCheckedBeforeTheBody: a request without plausible Svix headers
// is answered without its body being read, so unauthenticated senders cannot
// make the process buffer anything.
func TestHeadersCheckedBeforeTheBody(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	valid := signed(t, secretA, "msg_1", time.Now(), []byte("{}"))
	tests := []struct {
		name   string
		header func() http.Header
		status int
	}{
		{"no svix headers", func() http.Header { return http.Header{} }, http.StatusBadRequest},
		{"timestamp not a number", func() http.Header {
			h := valid.Clone()
			h.Set("svix-timestamp", "soon")
			return h
		}, http.StatusBadRequest},
		{"timestamp an hour old", func() http.Header {
			return signed(t, secretA, "msg_1", time.Now().Add(-time.Hour), []byte("{}"))
		}, http.StatusUnauthorized},
		{"signature header of 5 kB", func() http.Header {
			h := valid.Clone()
			h.Set("svix-signature", "v1,"+strings.Repeat("A", 5000))
			return h
		}, http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A body that never ends: were it read, no answer would come.
			pr, pw := io.Pipe()
			defer pw.Close()
			req, err := http.NewRequest(http.MethodPost, e.url+webhookPath, pr)
			if err != nil {
				t.Fatal(err)
			}
			req.ContentLength = webhook.MaxBodyBytes
			req.Header = tt.header()
			go func() { _, _ = pw.Write(make([]byte, 1024)) }()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			resp, err := e.client.Do(req.WithContext(ctx))
			if err != nil {
				t.Fatalf("no answer before the body was sent: %v", err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Errorf("status %d, want %d", resp.StatusCode, tt.status)
			}
		})
	}
	wantSnapshot(t, e.db, snapshot{})
}

// TestBodyMemoryBudget: bodies in flight share a fixed budget; a delivery
// that does not fit is answered 503 (Svix retries) instead of growing the
// process, and the budget is whole again once they are answered.
func TestBodyMemoryBudget(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, func(c *webhook.Config) { c.BodyMemory = webhook.MaxBodyBytes })
	// One sender holds the whole budget: a 1 MiB body sent slowly.
	prefix, suffix := `{"type":"user.created","data":{"id":"user_slow","pad":"`, `"}}`
	slowBody := []byte(prefix + strings.Repeat("x", webhook.MaxBodyBytes-len(prefix)-len(suffix)) + suffix)
	body := userCreated("user_1", "")
	// More than the transport's 4 KiB write buffer, so that the headers and
	// part of the body are on the wire, not buffered in the client.
	const head = 64 << 10
	var got response
	var pw *io.PipeWriter
	var slow chan response
	overloaded := 0.0
	for attempt := 1; ; attempt++ {
		var pr *io.PipeReader
		pr, pw = io.Pipe()
		req, err := http.NewRequest(http.MethodPost, e.url+webhookPath, pr)
		if err != nil {
			t.Fatal(err)
		}
		req.ContentLength = int64(len(slowBody))
		req.Header = signed(t, secretA, "msg_slow", time.Now(), slowBody)
		slow = make(chan response, 1)
		go func() {
			r, err := e.roundTrip(req)
			if err != nil {
				t.Errorf("slow delivery: %v", err)
			}
			slow <- r
		}()
		if _, err := pw.Write(slowBody[:head]); err != nil {
			t.Fatal(err)
		}
		// While it holds the budget, another delivery is refused with a
		// 503. Until the slow request has reached the handler the delivery
		// is served (its redeliveries are duplicates, changing nothing):
		// ask again. On a busy machine a delivery can take part of the
		// budget first, and then the slow request is the one refused: try
		// the whole again.
		lost := false
		deadline := time.Now().Add(2 * time.Minute) // for a broken build only
		for got = e.deliver(t, "msg_1", body); got.Status == http.StatusOK && time.Now().Before(deadline); got = e.deliver(t, "msg_1", body) {
			select {
			case r := <-slow:
				if r.Status != http.StatusServiceUnavailable {
					t.Fatalf("slow delivery answered %d %v before its body was sent", r.Status, r.Body)
				}
				lost = true
			default:
			}
			if lost {
				break
			}
		}
		if !lost {
			break
		}
		overloaded++
		t.Logf("attempt %d: a delivery took part of the budget before the slow request; again", attempt)
		pw.Close()
		if attempt == 10 {
			t.Fatal("the slow delivery never got the budget before another delivery in 10 attempts")
		}
	}
	if got.Status != http.StatusServiceUnavailable || got.Header.Get("Retry-After") == "" {
		slowState := "the slow request is still unanswered"
		select {
		case r := <-slow:
			slowState = fmt.Sprintf("the slow request was answered %d %v", r.Status, r.Body)
		default:
		}
		t.Fatalf("delivery while the budget is held: %d %v, want 503 with Retry-After (%s)", got.Status, got.Body, slowState)
	}
	// The slow body arrives whole; then the budget is free again.
	if _, err := pw.Write(slowBody[head:]); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	if r := <-slow; r.Status != http.StatusOK {
		t.Errorf("slow delivery: %d %v", r.Status, r.Body)
	}
	if got := e.deliver(t, "msg_2", body); got.Status != http.StatusOK {
		t.Errorf("delivery after the budget was released: %d %v", got.Status, got.Body)
	}
	e.wantCounters(t, map[string]float64{`creditgate_webhook_deliveries_total{outcome="overloaded"}`: 1 + overloaded})
	pgtest.CheckInvariants(t, e.db)
}

// TestReconcilerDecodesTheBytesTheWebhookDid: a failed event is re-run from
// the bytes Svix signed, not from jsonb's normalised copy (which sorts keys,
// so {"id":…,"ID":…} could name another user, and rewrites numbers).
func TestReconcilerDecodesTheBytesTheWebhookDid(t *testing.T) {
	t.Parallel()
	db, _ := pgtest.New(t)
	store := postgres.NewStore(db)
	body := []byte(`{"type":"user.created","data":{"ID":"user_b","id":"user_a","n":1.0E+2}}`)
	d := ledger.Delivery{SvixID: "msg_1", Body: body, ReceivedAt: time.Now()}
	change, err := clerk.Decode(body)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.RecordFailure(context.Background(), d, change, errors.New("connection reset")); err != nil {
		t.Fatal(err)
	}
	evs, err := store.FailedEvents(context.Background(), time.Now().Add(time.Minute), 10)
	if err != nil || len(evs) != 1 {
		t.Fatalf("FailedEvents = %v, %v", evs, err)
	}
	if string(evs[0].Delivery.Body) != string(body) {
		t.Errorf("re-run body = %s, want the received bytes %s", evs[0].Delivery.Body, body)
	}
	svc := &ledger.Service{Store: store, Decode: clerk.Decode, SignupCredits: 20}
	res, err := svc.Process(context.Background(), evs[0].Delivery)
	if err != nil || res.ClerkUserID != "user_a" || res.CreditsGranted != 20 {
		t.Errorf("re-run = %+v, %v; want user_a credited", res, err)
	}
	pgtest.CheckInvariants(t, db)
}
