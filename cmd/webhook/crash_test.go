package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/creditgate/creditgate/pkg/clerk"
	"github.com/creditgate/creditgate/pkg/clerk/clerkfake"
	"github.com/creditgate/creditgate/pkg/pgtest"
	"github.com/creditgate/creditgate/pkg/postgres"
	"github.com/creditgate/creditgate/pkg/reconcile"
)

// TestKilledBetweenCommitAndMetadataWrite kills the real webhook process
// (SIGKILL: no drain, no deferred code) after the grant committed and while
// its worker's metadata write is in flight. The outbox row, written in the
// grant's transaction, survives; the reconciler then writes the metadata
// exactly once.
func TestKilledBetweenCommitAndMetadataWrite(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the webhook binary")
	}
	t.Parallel()
	db, url := pgtest.New(t)
	ctx := context.Background()

	bin := filepath.Join(t.TempDir(), "webhook")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}

	fake := clerkfake.New()
	fake.SetSecretKey("sk_test_x")
	fake.AddUser(clerkfake.User{ID: "user_kill", CreatedAt: time.Now()})
	inFlight := make(chan struct{}, 1)
	release := make(chan struct{})
	var held atomic.Bool
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPatch && held.CompareAndSwap(false, true) {
			inFlight <- struct{}{}
			<-release // hold the first write until the process is dead
			return
		}
		fake.ServeHTTP(w, r)
	}))
	defer api.Close()
	defer close(release)

	httpAddr, metricsAddr := freeAddr(t), freeAddr(t)
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "DATABASE_URL="+url, "CLERK_WEBHOOK_SIGNING_SECRET="+testSecret,
		"CLERK_SECRET_KEY=sk_test_x", "CLERK_API_URL="+api.URL+"/v1", "HTTP_ADDR="+httpAddr, "METRICS_ADDR="+metricsAddr, "API_ADDR="+freeAddr(t),
		"LOG_LEVEL=warn")
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	waitReady(t, "http://"+httpAddr)

	status, b := postSigned(t, "http://"+httpAddr, "msg_kill", `{"type":"user.created","data":{"id":"user_kill","email_addresses":[]}}`)
	if status != http.StatusOK || !strings.Contains(b, `"credits_granted":20`) {
		t.Fatalf("POST = %d %s", status, b)
	}
	select {
	case <-inFlight:
	case <-time.After(10 * time.Second):
		t.Fatalf("the worker never tried to write the metadata\n%s", logs.String())
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if n := fake.MetadataWrites("user_kill"); n != 0 {
		t.Fatalf("metadata written %d times before the crash, want 0", n)
	}

	store := postgres.NewStore(db)
	rec := &reconcile.Reconciler{
		Store: store, Writer: clerk.NewAPI(clerk.APIConfig{SecretKey: "sk_test_x", URL: api.URL + "/v1"}),
		Metrics: reconcile.NewMetrics(prometheus.NewRegistry()), Log: discardLog(),
		Config: reconcile.Config{SignupCredits: 20, EventBatch: 10, UserBatch: 10, OutboxBatch: 10, OutboxMaxAttempts: 5, MaxEventAttempts: 5},
	}
	// The killed worker's claim holds the message until its lease runs out:
	// a reconcile run now leaves it alone (its call might still be running).
	var leased bool
	if err := db.NewRaw("SELECT status = 'pending' AND claim = 1 AND next_attempt_at > now() FROM clerk_metadata_outbox").Scan(ctx, &leased); err != nil || !leased {
		t.Fatalf("after the crash the message is not pending under the dead worker's lease (%v)", err)
	}
	if sum, err := rec.Run(ctx); err != nil || sum.Outbox.Found != 0 || fake.MetadataWrites("user_kill") != 0 {
		t.Fatalf("a run took a message under a live lease: %+v, %v", sum.Outbox, err)
	}
	// The lease runs out (moved to now rather than waited for).
	if _, err := db.ExecContext(ctx, "UPDATE clerk_metadata_outbox SET next_attempt_at = now()"); err != nil {
		t.Fatal(err)
	}
	if _, err := rec.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if n := fake.MetadataWrites("user_kill"); n != 1 {
		t.Fatalf("metadata written %d times, want exactly 1", n)
	}
	if _, err := rec.Run(ctx); err != nil || fake.MetadataWrites("user_kill") != 1 {
		t.Errorf("a further run wrote again (%v)", err)
	}
	u, _ := fake.User("user_kill")
	if cg, ok := u.PublicMetadata["creditgate"].(map[string]any); !ok || cg["signup_credits"] != float64(20) {
		t.Errorf("metadata = %v", u.PublicMetadata)
	}
	pgtest.CheckInvariants(t, db)
}

func waitReady(t *testing.T, base string) {
	t.Helper()
	waitStatus(t, base+"/readyz", http.StatusOK)
}

// waitStatus polls url until it answers with status, for up to 15s.
func waitStatus(t *testing.T, url string, status int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == status {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer %d within 15s: %v", url, status, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
