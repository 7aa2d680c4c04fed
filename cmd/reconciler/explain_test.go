package main

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/creditgate/creditgate/pkg/clerk"
	"github.com/creditgate/creditgate/pkg/ledger"
	"github.com/creditgate/creditgate/pkg/pgtest"
	"github.com/creditgate/creditgate/pkg/postgres"
)

// TestExplain answers a support question end to end: a user credited by
// user.created, with a failed update and a rejected event, is told as it is,
// email masked, with what the next run would do; explain changes nothing.
func TestExplain(t *testing.T) {
	t.Parallel()
	db, url := pgtest.New(t)
	ctx := context.Background()
	svc := &ledger.Service{Store: postgres.NewStore(db), Decode: clerk.Decode, SignupCredits: 20}
	if _, err := svc.Process(ctx, ledger.Delivery{SvixID: "msg_create", ReceivedAt: time.Now(),
		Body: []byte(`{"type":"user.created","data":{"id":"user_ann","email_addresses":[{"id":"e","email_address":"ann@example.com"}],"primary_email_address_id":"e"}}`)}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO webhook_events (svix_id, event_type, clerk_user_id, payload, status, attempts, last_error, received_at)
		VALUES ('msg_update', 'user.updated', 'user_ann', '{}', 'failed', 2, 'connection reset by peer', now() - interval '1 hour'),
		       ('msg_bad', 'user.updated', 'user_ann', '{}', 'rejected', 1, 'invalid event: field "data.updated_at" (9999) is before the year 2000', now())`); err != nil {
		t.Fatal(err)
	}
	before := pgtestChecksum(t, db)

	var out bytes.Buffer
	getenv := envMap(map[string]string{"DATABASE_URL": url, "LOG_LEVEL": "error"})
	if err := run(ctx, []string{"explain", "user_ann"}, getenv, &out, io.Discard); err != nil {
		t.Fatalf("explain: %v\n%s", err, out.String())
	}
	story := out.String()
	for _, want := range []string{
		"user_ann (users.id ", ": live, ", "email a***@example.com",
		"balance: 20 available, 0 used (entries: 20 credits, 0 debits)",
		"credit       20  signup_bonus     signup:user_ann (event msg_create)",
		"msg_create  user.created  processed, attempts 1",
		"msg_update  user.updated  failed, attempts 2\n      reason: connection reset by peer",
		"msg_bad  user.updated  rejected", "before the year 2000",
		"the next reconciler run would:\n  re-run failed event msg_update (attempt 3 of 10)",
	} {
		if !strings.Contains(story, want) {
			t.Errorf("story lacks %q:\n%s", want, story)
		}
	}
	if strings.Contains(story, "ann@example.com") {
		t.Errorf("story shows the email unmasked:\n%s", story)
	}

	out.Reset()
	if err := run(ctx, []string{"explain", "user_nobody"}, getenv, &out, io.Discard); err != nil ||
		!strings.Contains(out.String(), "user_nobody: not held by creditgate") || !strings.Contains(out.String(), "nothing: creditgate holds no such user") {
		t.Errorf("explain of an unknown user = %v:\n%s", err, out.String())
	}
	if err := run(ctx, []string{"explain"}, getenv, io.Discard, io.Discard); err == nil {
		t.Error("explain without an id succeeded")
	}
	if after := pgtestChecksum(t, db); after != before {
		t.Error("explain changed the database")
	}
}

// pgtestChecksum fingerprints the tables explain reads.
func pgtestChecksum(t *testing.T, db *bun.DB) string {
	t.Helper()
	var sum string
	if err := db.NewRaw(`SELECT md5(
		(SELECT coalesce(string_agg(u::text, '|' ORDER BY u.id), '') FROM users u) ||
		(SELECT coalesce(string_agg(c::text, '|' ORDER BY c.id), '') FROM credit_transactions c) ||
		(SELECT coalesce(string_agg(w::text, '|' ORDER BY w.svix_id), '') FROM webhook_events w) ||
		(SELECT coalesce(string_agg(o::text, '|' ORDER BY o.id), '') FROM clerk_metadata_outbox o))`).Scan(context.Background(), &sum); err != nil {
		t.Fatal(err)
	}
	return sum
}
