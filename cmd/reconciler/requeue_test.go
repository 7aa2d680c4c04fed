package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/uptrace/bun"

	"github.com/creditgate/creditgate/pkg/pgtest"
	"github.com/creditgate/creditgate/pkg/reconcile"
)

func TestRequeueArguments(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		want string // in the error; "" for none
	}{
		{"nothing to requeue", nil, "give --svix-id or --since"},
		{"both selections", []string{"--svix-id", "msg_1", "--since", "2026-11-30T00:00:00Z"}, "not both"},
		{"since not RFC 3339", []string{"--since", "2026-11-30"}, "flag -since"},
		{"since twice", []string{"--since", "2026-11-30T00:00:00Z", "--since", "2026-12-01T00:00:00Z"}, "flag -since: given twice"},
		{"empty svix id", []string{"--svix-id", ""}, "flag -svix-id"},
		{"empty svix id in a list", []string{"--svix-id", "msg_1,,msg_2"}, "flag -svix-id"},
		{"positional argument", []string{"--svix-id", "msg_1", "msg_2"}, `unexpected arguments ["msg_2"]`},
		{"unknown flag", []string{"--svix", "msg_1"}, "flag provided but not defined: -svix"},
		// Valid arguments get as far as the configuration.
		{"valid ids, no database", []string{"--svix-id", "msg_1,msg_2", "--svix-id=msg_3", "--dry-run"}, "DATABASE_URL: required"},
		{"valid since, no database", []string{"--since=2026-11-30T00:00:00+01:00"}, "DATABASE_URL: required"},
		{"help", []string{"--help"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var out, errOut bytes.Buffer
			err := run(context.Background(), append([]string{"requeue"}, tt.args...), envMap(nil), &out, &errOut)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("error %v, want none", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("error %v, want one containing %q", err, tt.want)
			}
			if out.Len() != 0 {
				t.Errorf("printed %q on stdout, want nothing", out.String())
			}
			if tt.want == "" && !strings.Contains(errOut.String(), "Usage: reconciler requeue") {
				t.Errorf("help printed %q", errOut.String())
			}
		})
	}
}

// insertDeadEvent stores a user.created event as the reconciler leaves it
// when it gives up, received age ago.
func insertDeadEvent(t *testing.T, db *bun.DB, svixID, clerkID string, age time.Duration) {
	t.Helper()
	_, err := db.ExecContext(context.Background(), `
INSERT INTO webhook_events (svix_id, event_type, clerk_user_id, payload, status, attempts, last_error, received_at)
VALUES (?, 'user.created', ?, ?::jsonb, 'dead', 10, 'database unavailable', now() - ? * interval '1 second')`,
		svixID, clerkID, `{"type":"user.created","data":{"id":"`+clerkID+`","email_addresses":[]}}`, age.Seconds())
	if err != nil {
		t.Fatalf("insert dead event %s: %v", svixID, err)
	}
}

type eventState struct {
	Status    string
	Attempts  int
	LastError string
}

func eventStates(t *testing.T, db *bun.DB) map[string]eventState {
	t.Helper()
	var rows []struct {
		SvixID    string `bun:"svix_id"`
		Status    string `bun:"status"`
		Attempts  int    `bun:"attempts"`
		LastError string `bun:"last_error"`
	}
	if err := db.NewRaw("SELECT svix_id, status, attempts, COALESCE(last_error, '') AS last_error FROM webhook_events").
		Scan(context.Background(), &rows); err != nil {
		t.Fatal(err)
	}
	m := map[string]eventState{}
	for _, r := range rows {
		m[r.SvixID] = eventState{r.Status, r.Attempts, r.LastError}
	}
	return m
}

func credits(t *testing.T, db *bun.DB, clerkID string) (available int64, signupEntries int) {
	t.Helper()
	err := db.QueryRowContext(context.Background(), `
SELECT u.available_credits, (SELECT count(*) FROM credit_transactions t WHERE t.user_id = u.id AND t.reason = 'signup_bonus')
FROM users u WHERE u.clerk_id = ?`, clerkID).Scan(&available, &signupEntries)
	if err != nil {
		t.Fatalf("credits of %s: %v", clerkID, err)
	}
	return available, signupEntries
}

// requeueCmd runs `reconciler requeue args…` and decodes its summary.
func requeueCmd(t *testing.T, getenv func(string) string, args ...string) requeueSummary {
	t.Helper()
	var out bytes.Buffer
	if err := run(context.Background(), append([]string{"requeue"}, args...), getenv, &out, &bytes.Buffer{}); err != nil {
		t.Fatalf("requeue %q: %v", args, err)
	}
	if strings.Count(out.String(), "\n") != 1 {
		t.Errorf("requeue %q printed %q, want one JSON line", args, out.String())
	}
	var s requeueSummary
	if err := json.Unmarshal(out.Bytes(), &s); err != nil {
		t.Fatalf("requeue summary %q: %v", out.String(), err)
	}
	return s
}

// reconcileCmd runs one regular reconciler pass and decodes its summary.
func reconcileCmd(t *testing.T, getenv func(string) string) reconcile.Summary {
	t.Helper()
	var out bytes.Buffer
	if err := run(context.Background(), nil, getenv, &out, &bytes.Buffer{}); err != nil {
		t.Fatalf("reconcile: %v", err)
	}
	var s reconcile.Summary
	if err := json.Unmarshal(out.Bytes(), &s); err != nil {
		t.Fatalf("reconcile summary %q: %v", out.String(), err)
	}
	return s
}

// TestRequeueBySvixID: a dead user.created event, requeued by its id, is re-run
// by the next regular pass and credits its user exactly once; requeueing again
// changes nothing and says why.
func TestRequeueBySvixID(t *testing.T) {
	t.Parallel()
	db, url := pgtest.New(t)
	ctx := context.Background()
	getenv := envMap(map[string]string{"DATABASE_URL": url, "LOG_LEVEL": "error"})
	// Dead events are older than RECONCILE_GRACE: the reconciler only parks
	// events it re-ran, and it re-runs only those older than the grace.
	insertDeadEvent(t, db, "msg_dead", "user_x", time.Hour)
	if _, err := db.ExecContext(ctx, `INSERT INTO webhook_events (svix_id, event_type, payload, status) VALUES ('msg_done', 'session.created', '{}', 'ignored')`); err != nil {
		t.Fatal(err)
	}
	before := eventStates(t, db)

	dry := requeueCmd(t, getenv, "--dry-run", "--svix-id", "msg_dead,msg_done", "--svix-id", "msg_nope")
	want := requeueSummary{
		DryRun: true, Requeued: 1, RequeuedIDs: []string{"msg_dead"},
		NotDead: map[string]string{"msg_done": "ignored"}, NotFound: []string{"msg_nope"},
	}
	if diff := cmp.Diff(want, dry); diff != "" {
		t.Errorf("dry run (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(before, eventStates(t, db)); diff != "" {
		t.Errorf("dry run changed events (-before +after):\n%s", diff)
	}

	got := requeueCmd(t, getenv, "--svix-id", "msg_dead", "--svix-id", "msg_done", "--svix-id", "msg_nope")
	want.DryRun = false
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("requeue (-want +got):\n%s", diff)
	}
	requeued := eventStates(t, db)
	if want := (eventState{"failed", 0, "database unavailable"}); requeued["msg_dead"] != want {
		t.Errorf("requeued event = %+v, want %+v", requeued["msg_dead"], want)
	}

	again := requeueCmd(t, getenv, "--svix-id", "msg_dead", "--svix-id", "msg_done", "--svix-id", "msg_nope")
	wantAgain := requeueSummary{
		Requeued: 0, RequeuedIDs: []string{},
		NotDead: map[string]string{"msg_dead": "failed", "msg_done": "ignored"}, NotFound: []string{"msg_nope"},
	}
	if diff := cmp.Diff(wantAgain, again); diff != "" {
		t.Errorf("second requeue (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(requeued, eventStates(t, db)); diff != "" {
		t.Errorf("second requeue changed events (-before +after):\n%s", diff)
	}

	// The next regular pass re-runs it through the webhook's code path.
	s := reconcileCmd(t, getenv)
	if s.Outcome != "success" || s.Events.Found != 1 || s.Events.Done != 1 {
		t.Errorf("pass after the requeue: outcome %q, events %+v; want success, 1 found and done", s.Outcome, s.Events)
	}
	if got := eventStates(t, db)["msg_dead"]; got.Status != "processed" || got.Attempts != 1 {
		t.Errorf("re-run event = %+v, want processed after 1 attempt", got)
	}
	if avail, n := credits(t, db, "user_x"); avail != 20 || n != 1 {
		t.Errorf("user_x holds %d credits from %d signup entries, want 20 from 1", avail, n)
	}
	if s := reconcileCmd(t, getenv); s.Events.Found != 0 || s.Signup.Found != 0 {
		t.Errorf("pass after that: %+v, want nothing to do", s)
	}
	if avail, n := credits(t, db, "user_x"); avail != 20 || n != 1 {
		t.Errorf("user_x holds %d credits from %d signup entries, want 20 from 1", avail, n)
	}
	pgtest.CheckInvariants(t, db)
}

// TestRequeueSince requeues every dead event received since a time, and says
// which requeued events RECONCILE_GRACE still holds back (possible only for
// events parked by hand or after the grace was raised).
func TestRequeueSince(t *testing.T) {
	t.Parallel()
	db, url := pgtest.New(t)
	env := map[string]string{"DATABASE_URL": url, "LOG_LEVEL": "error"}
	insertDeadEvent(t, db, "msg_3d", "user_3d", 72*time.Hour)
	insertDeadEvent(t, db, "msg_2h", "user_2h", 2*time.Hour)
	insertDeadEvent(t, db, "msg_new", "user_new", 0)
	since := time.Now().Add(-24 * time.Hour).UTC().Truncate(time.Second)
	arg := since.Format(time.RFC3339)

	got := requeueCmd(t, envMap(env), "--since", arg)
	if diff := cmp.Diff([]string{"msg_2h", "msg_new"}, got.RequeuedIDs); diff != "" || got.Requeued != 2 {
		t.Errorf("requeued %d: %v (-want +got):\n%s", got.Requeued, got.RequeuedIDs, diff)
	}
	if got.Since == nil || !got.Since.Equal(since) || got.NotDead != nil || got.NotFound != nil {
		t.Errorf("summary %+v, want since %s and no per-id report", got, since)
	}
	if held, ok := got.HeldByGrace["msg_new"]; len(got.HeldByGrace) != 1 || !ok || time.Until(held) < 4*time.Minute {
		t.Errorf("held_by_grace = %v, want msg_new until about 5 minutes from now", got.HeldByGrace)
	}
	after := eventStates(t, db)
	if after["msg_3d"].Status != "dead" || after["msg_2h"].Status != "failed" || after["msg_new"].Status != "failed" {
		t.Errorf("events after requeue: %+v", after)
	}
	if again := requeueCmd(t, envMap(env), "--since", arg); again.Requeued != 0 || len(again.RequeuedIDs) != 0 {
		t.Errorf("second requeue: %+v, want nothing requeued", again)
	}
	if diff := cmp.Diff(after, eventStates(t, db)); diff != "" {
		t.Errorf("second requeue changed events (-before +after):\n%s", diff)
	}

	// As reported: the next pass takes msg_2h and leaves msg_new to the grace…
	if s := reconcileCmd(t, envMap(env)); s.Events.Found != 1 || s.Events.Done != 1 {
		t.Errorf("pass with the default grace: events %+v, want 1 found and done", s.Events)
	}
	// …which a one-off pass with RECONCILE_GRACE=0s overrides.
	env["RECONCILE_GRACE"] = "0s"
	if s := reconcileCmd(t, envMap(env)); s.Events.Found != 1 || s.Events.Done != 1 {
		t.Errorf("pass with no grace: events %+v, want 1 found and done", s.Events)
	}
	for _, u := range []string{"user_2h", "user_new"} {
		if avail, n := credits(t, db, u); avail != 20 || n != 1 {
			t.Errorf("%s holds %d credits from %d signup entries, want 20 from 1", u, avail, n)
		}
	}
	pgtest.CheckInvariants(t, db)
}
