package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/creditgate/creditgate/pkg/pgtest"
	"github.com/creditgate/creditgate/pkg/postgres"
	"github.com/creditgate/creditgate/pkg/reconcile"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func envMap(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestConfigErrorsNameTheVariable(t *testing.T) {
	t.Parallel()
	var out, errOut bytes.Buffer
	err := run(context.Background(), nil, envMap(map[string]string{
		"RECONCILE_GRACE": "soon", "BACKFILL_PAGE_SIZE": "501", "CLERK_API_URL": "ftp://x", "CLERK_SECRET_KEY": "sk_live_topsecret",
	}), &out, &errOut)
	if err == nil {
		t.Fatal("run with bad configuration succeeded")
	}
	for _, want := range []string{"DATABASE_URL: required", "RECONCILE_GRACE:", "BACKFILL_PAGE_SIZE:", "CLERK_API_URL:"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "topsecret") {
		t.Error("error leaks the secret key")
	}
}

func TestRunRecordsAndSummarises(t *testing.T) {
	t.Parallel()
	db, url := pgtest.New(t)
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, "INSERT INTO users (clerk_id) VALUES ('user_nocredit')"); err != nil {
		t.Fatal(err)
	}
	getenv := envMap(map[string]string{"DATABASE_URL": url, "LOG_LEVEL": "error"})

	var dry bytes.Buffer
	if err := run(ctx, []string{"--dry-run"}, getenv, &dry, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	var drySum reconcile.Summary
	if err := json.Unmarshal(dry.Bytes(), &drySum); err != nil || !drySum.DryRun || drySum.Signup.Found != 1 || drySum.Signup.Done != 0 {
		t.Errorf("dry run printed %q (%v)", dry.String(), err)
	}

	// Two reconcilers at the same moment: one runs, the other finds the lock
	// held and exits cleanly; nothing is granted twice.
	outs := make([]bytes.Buffer, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = run(ctx, nil, getenv, &outs[i], &bytes.Buffer{}) }()
	}
	wg.Wait()
	var granted int
	for i := range 2 {
		if errs[i] != nil {
			t.Fatalf("reconciler %d: %v", i, errs[i])
		}
		if strings.Count(outs[i].String(), "\n") != 1 {
			t.Errorf("reconciler %d printed %q, want one JSON line", i, outs[i].String())
		}
		var s reconcile.Summary
		if err := json.Unmarshal(outs[i].Bytes(), &s); err != nil {
			t.Fatalf("summary %q: %v", outs[i].String(), err)
		}
		if s.Outcome != "success" && s.Outcome != "skipped" {
			t.Errorf("reconciler %d outcome %q", i, s.Outcome)
		}
		granted += s.Signup.Done
	}
	if granted != 1 {
		t.Errorf("granted %d signup credits in all, want 1", granted)
	}
	var runs []string
	if err := db.NewRaw("SELECT outcome FROM reconcile_runs WHERE finished_at IS NOT NULL").Scan(ctx, &runs); err != nil {
		t.Fatal(err)
	}
	if len(runs) < 1 || runs[0] != "success" {
		t.Errorf("recorded runs = %v, want a success", runs)
	}
	pgtest.CheckInvariants(t, db)
}

func TestPushgateway(t *testing.T) {
	t.Parallel()
	_, url := pgtest.New(t)
	pushed := make(chan string, 4)
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		pushed <- r.Method + " " + r.URL.Path + " " + string(b)
		w.WriteHeader(http.StatusOK)
	}))
	defer gw.Close()
	var out bytes.Buffer
	err := run(context.Background(), nil, envMap(map[string]string{"DATABASE_URL": url, "LOG_LEVEL": "error", "PUSHGATEWAY_URL": gw.URL, "POD_NAMESPACE": "payments"}), &out, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-pushed:
		if !strings.HasPrefix(p, "PUT /metrics/job/creditgate_reconciler/namespace/payments") || !strings.Contains(p, "creditgate_reconcile_runs_total") {
			t.Errorf("pushed %.200q", p)
		}
	default:
		t.Error("nothing pushed to the Pushgateway")
	}
}

// TestKilledRunMarkedAbandoned: a run killed before it recorded its end (as
// SIGKILL leaves it) stays running only until the next real run holds the
// lock; a dry run and a run that finds the lock held leave it alone, since the
// run may still be live.
func TestKilledRunMarkedAbandoned(t *testing.T) {
	t.Parallel()
	db, url := pgtest.New(t)
	ctx := context.Background()
	var killed int64
	if err := db.QueryRowContext(ctx, "INSERT INTO reconcile_runs DEFAULT VALUES RETURNING id").Scan(&killed); err != nil {
		t.Fatal(err)
	}
	getenv := envMap(map[string]string{"DATABASE_URL": url, "LOG_LEVEL": "error"})
	outcome := func() (outcome string, finished bool, errText string) {
		t.Helper()
		err := db.QueryRowContext(ctx, "SELECT outcome, finished_at IS NOT NULL, COALESCE(error, '') FROM reconcile_runs WHERE id = ?", killed).
			Scan(&outcome, &finished, &errText)
		if err != nil {
			t.Fatal(err)
		}
		return outcome, finished, errText
	}
	summary := func(args []string) reconcile.Summary {
		t.Helper()
		var out bytes.Buffer
		if err := run(ctx, args, getenv, &out, &bytes.Buffer{}); err != nil {
			t.Fatal(err)
		}
		var s reconcile.Summary
		if err := json.Unmarshal(out.Bytes(), &s); err != nil {
			t.Fatalf("summary %q: %v", out.String(), err)
		}
		return s
	}

	if s := summary([]string{"--dry-run"}); s.AbandonedRuns != 0 {
		t.Errorf("dry run abandoned %d runs", s.AbandonedRuns)
	}
	// Another reconciler holds the lock: the running row may be its own.
	release, ok, err := postgres.NewStore(db).TryReconcileLock(ctx)
	if err != nil || !ok {
		t.Fatalf("take the lock: %v, %v", ok, err)
	}
	if s := summary(nil); s.Outcome != postgres.RunSkipped || s.AbandonedRuns != 0 {
		t.Errorf("run beside a live one = %+v, want skipped, nothing abandoned", s)
	}
	release()
	if o, _, _ := outcome(); o != postgres.RunRunning {
		t.Fatalf("before a real run: outcome %q, want running", o)
	}

	if s := summary(nil); s.Outcome != postgres.RunSuccess || s.AbandonedRuns != 1 {
		t.Errorf("run = %+v, want success with 1 run abandoned", s)
	}
	if o, finished, e := outcome(); o != postgres.RunAbandoned || !finished || !strings.Contains(e, "killed") {
		t.Errorf("killed run: outcome %q, finished %v, error %q; want abandoned, finished, saying why", o, finished, e)
	}
	var outcomes []string
	if err := db.NewRaw("SELECT outcome FROM reconcile_runs ORDER BY id").Scan(ctx, &outcomes); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"abandoned", "success"}, outcomes); diff != "" {
		t.Errorf("runs (-want +got):\n%s", diff)
	}
	if s := summary(nil); s.AbandonedRuns != 0 {
		t.Errorf("next run abandoned %d runs, want 0", s.AbandonedRuns)
	}
}
