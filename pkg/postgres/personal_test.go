package postgres_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/creditgate/creditgate/pkg/ledger"
	"github.com/creditgate/creditgate/pkg/pgtest"
	"github.com/creditgate/creditgate/pkg/postgres"
)

// personalBody is a user event as Clerk sends it, personal data included.
func personalBody(typ, clerkID string, v time.Time) []byte {
	return fmt.Appendf(nil, `{"type":%q,"object":"event","timestamp":%d,"instance_id":"ins_1","data":{"id":%q,"object":"user",`+
		`"first_name":"Ada","last_name":"Lovelace","image_url":"https://img.example/ada.png","email_addresses":[{"id":"idn_1","email_address":"ada@example.com"}],`+
		`"primary_email_address_id":"idn_1","phone_numbers":[{"id":"idn_p","phone_number":"+15555550100"}],"unsafe_metadata":{"note":"ada@example.com"},`+
		`"created_at":%d,"updated_at":%d}}`, typ, v.UnixMilli(), clerkID, v.UnixMilli(), v.UnixMilli())
}

// storedBodies returns every stored body of a user's events (payload and
// raw bytes as text), by svix id, and whether each is marked scrubbed.
func storedBodies(t *testing.T, svc *ledger.Service, clerkID string) map[string]string {
	t.Helper()
	db := svc.Store.(*postgres.Store).DB()
	var rows []struct {
		SvixID   string `bun:"svix_id"`
		Body     string `bun:"body"`
		Scrubbed bool   `bun:"scrubbed"`
	}
	if err := db.NewRaw(`SELECT svix_id, coalesce(payload::text, '') || '|' || coalesce(convert_from(raw_body, 'UTF8'), '') AS body,
		scrubbed_at IS NOT NULL AS scrubbed FROM webhook_events WHERE clerk_user_id = ?`, clerkID).Scan(context.Background(), &rows); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, r := range rows {
		out[r.SvixID] = fmt.Sprintf("%v %s", r.Scrubbed, r.Body)
	}
	return out
}

// TestUserDeletedErasesStoredPersonalData: after user.deleted, no stored
// body of that user holds an email address, a name, a phone number or
// metadata, including events that arrive after the delete; what audit needs
// (types, ids, times) and the ledger stay.
func TestUserDeletedErasesStoredPersonalData(t *testing.T) {
	t.Parallel()
	svc, db := newService(t)
	svc.ForfeitOnDelete = true
	ctx := context.Background()
	v := time.Now().Add(-time.Hour)
	for _, d := range []ledger.Delivery{
		delivery("msg_create", personalBody("user.created", "user_ada", v)),
		delivery("msg_update", personalBody("user.updated", "user_ada", v.Add(time.Minute))),
		delivery("msg_session", []byte(`{"type":"session.created","data":{"id":"sess_1","user_id":"user_ada","client_ip":"203.0.113.7","user_agent":"Mozilla/5.0"}}`)),
		delivery("msg_bob", personalBody("user.created", "user_bob", v)),
	} {
		if _, err := svc.Process(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	if b := storedBodies(t, svc, "user_ada"); !strings.Contains(b["msg_create"], "ada@example.com") {
		t.Fatalf("before the delete the body is kept as received: %q", b["msg_create"])
	}

	if _, err := svc.Process(ctx, delivery("msg_delete", []byte(`{"type":"user.deleted","object":"event","data":{"id":"user_ada","object":"user","deleted":true}}`))); err != nil {
		t.Fatal(err)
	}
	// A late update after the delete is stale, and stored scrubbed too.
	if res, err := svc.Process(ctx, delivery("msg_late", personalBody("user.updated", "user_ada", v.Add(2*time.Minute)))); err != nil || res.Status != ledger.OutcomeStale {
		t.Fatalf("late update = %+v, %v; want stale", res, err)
	}

	bodies := storedBodies(t, svc, "user_ada")
	if len(bodies) != 5 {
		t.Fatalf("stored events of user_ada: %v, want 5", bodies)
	}
	for id, b := range bodies {
		for _, personal := range []string{"ada@", "Ada", "Lovelace", "img.example", "+1555", "203.0.113.7", "Mozilla", "note"} {
			if strings.Contains(b, personal) {
				t.Errorf("%s still holds %q after user.deleted: %s", id, personal, b)
			}
		}
		if !strings.HasPrefix(b, "true ") {
			t.Errorf("%s not marked scrubbed: %s", id, b)
		}
	}
	if want := `true {"data": {"id": "user_ada", "object": "user", "created_at": ` + fmt.Sprint(v.UnixMilli()) + `, "updated_at": ` + fmt.Sprint(v.UnixMilli()) +
		`}, "type": "user.created", "object": "event", "timestamp": ` + fmt.Sprint(v.UnixMilli()) + `, "instance_id": "ins_1"}|`; bodies["msg_create"] != want {
		t.Errorf("scrubbed user.created = %s\nwant                    %s", bodies["msg_create"], want)
	}
	if want := `true {"data": {"id": "sess_1", "user_id": "user_ada"}, "type": "session.created"}|`; bodies["msg_session"] != want {
		t.Errorf("scrubbed session.created = %s, want %s", bodies["msg_session"], want)
	}
	// Another user's bodies are untouched; the ledger is whole.
	if b := storedBodies(t, svc, "user_bob"); !strings.Contains(b["msg_bob"], "ada@example.com") || strings.HasPrefix(b["msg_bob"], "true") {
		t.Errorf("user_bob's body was scrubbed: %s", b["msg_bob"])
	}
	if s := state(t, db, "user_ada"); s.Email != "" || s.Available != 0 || s.Used != 20 || s.Entries != 2 {
		t.Errorf("user_ada = %+v, want no email, 20 forfeited, 2 entries", s)
	}
	pgtest.CheckInvariants(t, db)
}

// TestRetentionScrubsFinishedEvents: after the retention period the bodies of
// finished events are reduced to ids, types and times, oldest first and a
// batch at a time; failed and dead events keep their bytes (the reconciler
// re-runs them from those); the ledger is untouched; a second pass changes
// nothing.
func TestRetentionScrubsFinishedEvents(t *testing.T) {
	t.Parallel()
	svc, db := newService(t)
	store := svc.Store.(*postgres.Store)
	ctx := context.Background()
	old, recent := time.Now().Add(-40*24*time.Hour), time.Now().Add(-time.Hour)
	deliver := func(id string, at time.Time, body []byte) {
		t.Helper()
		if _, err := svc.Process(ctx, ledger.Delivery{SvixID: id, Body: body, ReceivedAt: at}); err != nil && !strings.Contains(err.Error(), "invalid event") {
			t.Fatal(err)
		}
	}
	deliver("msg_old_1", old, personalBody("user.created", "user_1", old))
	deliver("msg_old_2", old.Add(time.Second), personalBody("user.created", "user_2", old))
	deliver("msg_old_rejected", old.Add(2*time.Second), []byte(`{"type":"user.created","data":{"id":"bad id","email":"ada@example.com"}}`))
	deliver("msg_recent", recent, personalBody("user.created", "user_3", recent))
	if _, err := db.ExecContext(ctx, `INSERT INTO webhook_events (svix_id, event_type, clerk_user_id, payload, raw_body, status, received_at)
		VALUES ('msg_old_failed', 'user.created', 'user_4', ?::jsonb, ?, 'failed', ?)`,
		string(personalBody("user.created", "user_4", old)), personalBody("user.created", "user_4", old), old); err != nil {
		t.Fatal(err)
	}
	before := state(t, db, "user_1")

	cutoff := time.Now().Add(-30 * 24 * time.Hour)
	if n, err := store.ExpiredPayloads(ctx, cutoff); err != nil || n != 3 {
		t.Fatalf("ExpiredPayloads = %d, %v; want 3", n, err)
	}
	if n, err := store.ScrubExpiredPayloads(ctx, cutoff, 2); err != nil || n != 2 {
		t.Fatalf("first batch = %d, %v; want 2", n, err)
	}
	if n, err := store.ScrubExpiredPayloads(ctx, cutoff, 2); err != nil || n != 1 {
		t.Fatalf("second batch = %d, %v; want 1", n, err)
	}
	if n, err := store.ScrubExpiredPayloads(ctx, cutoff, 2); err != nil || n != 0 {
		t.Fatalf("third batch = %d, %v; want 0", n, err)
	}
	var rows []struct {
		SvixID string `bun:"svix_id"`
		Body   string `bun:"body"`
	}
	if err := db.NewRaw(`SELECT svix_id, coalesce(payload::text, '') || '|' || coalesce(encode(raw_body, 'escape'), '') AS body
		FROM webhook_events ORDER BY svix_id`).Scan(ctx, &rows); err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		kept := strings.Contains(r.Body, "ada@example.com")
		switch r.SvixID {
		case "msg_recent", "msg_old_failed":
			if !kept {
				t.Errorf("%s lost its body: %s", r.SvixID, r.Body)
			}
		default:
			if kept || strings.Contains(r.Body, "Lovelace") {
				t.Errorf("%s keeps personal data past retention: %s", r.SvixID, r.Body)
			}
		}
	}
	if after := state(t, db, "user_1"); after != before {
		t.Errorf("user_1 changed: %+v → %+v", before, after)
	}
	pgtest.CheckInvariants(t, db)
}
