package main

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/creditgate/creditgate/pkg/clerk/clerkevent"
	"github.com/creditgate/creditgate/pkg/pgtest"
)

// TestLockedUserDoesNotStarveOthers: one user's row held by another
// transaction (an operator's session, a long report) and a dozen deliveries
// for that user used to hold every pool connection: every other user got 503
// and /readyz went 503, so Kubernetes would have pulled healthy pods. Now a
// user's deliveries take turns before they reach the pool, a lock wait ends
// at DB_LOCK_TIMEOUT, and readiness asks on a connection of its own.
func TestLockedUserDoesNotStarveOthers(t *testing.T) {
	t.Parallel()
	db, url := pgtest.New(t)
	ctx := context.Background()
	httpAddr, metricsAddr := freeAddr(t), freeAddr(t)
	sctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- run(sctx, nil, envMap(map[string]string{
			"DATABASE_URL": url, "CLERK_WEBHOOK_SIGNING_SECRET": testSecret, "DB_MAX_CONNS": "3",
			"DB_LOCK_TIMEOUT": "2s", "HTTP_ADDR": httpAddr, "METRICS_ADDR": metricsAddr, "API_ADDR": freeAddr(t), "LOG_LEVEL": "error",
		}), io.Discard, io.Discard)
	}()
	defer func() { stop(); waitExit(t, done) }()
	base := "http://" + httpAddr
	waitReady(t, base)

	if status, b := postSigned(t, base, "msg_locked_0", userEvent("user.created", "user_locked")); status != http.StatusOK {
		t.Fatalf("create the user: %d %s", status, b)
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, "SELECT 1 FROM users WHERE clerk_id = 'user_locked' FOR UPDATE"); err != nil {
		t.Fatal(err)
	}

	const locked = 12
	lockedStatus := make([]int, locked)
	var wg sync.WaitGroup
	for i := range locked {
		wg.Go(func() {
			lockedStatus[i], _ = postSigned(t, base, fmt.Sprintf("msg_locked_%d", i+1), userEvent("user.updated", "user_locked"))
		})
	}
	// Wait until the locked user's deliveries are all in, one of them
	// waiting on the row lock in PostgreSQL.
	waitFor(t, "12 deliveries in flight, one waiting on the row lock", func() bool {
		return metricValue(t, metricsAddr, "creditgate_http_requests_in_flight") >= locked && lockWaiters(t, db) >= 1
	})

	// Meanwhile every other user is served, and the pod stays ready.
	maxWaiters := 0
	for i := range 20 {
		id := fmt.Sprintf("user_other_%d", i)
		if status, b := postSigned(t, base, "msg_"+id, userEvent("user.created", id)); status != http.StatusOK {
			t.Errorf("%s while user_locked is locked: %d %s", id, status, b)
		}
		if resp, err := http.Get(base + "/readyz"); err != nil || resp.StatusCode != http.StatusOK {
			t.Errorf("/readyz while user_locked is locked: %v %v", resp, err)
		} else {
			resp.Body.Close()
		}
		maxWaiters = max(maxWaiters, lockWaiters(t, db))
	}
	if maxWaiters > 1 {
		t.Errorf("%d connections waited on the locked row at once, want at most 1 (one delivery per user at a time)", maxWaiters)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()

	// The locked user's deliveries were answered 200 or 503; Svix retries
	// the 503s, which are kept as failed meanwhile.
	for i, status := range lockedStatus {
		switch status {
		case http.StatusOK:
		case http.StatusServiceUnavailable:
			var st string
			if err := db.NewRaw("SELECT status FROM webhook_events WHERE svix_id = ?", fmt.Sprintf("msg_locked_%d", i+1)).Scan(ctx, &st); err != nil || st != "failed" {
				t.Errorf("msg_locked_%d answered 503 but stored %q (%v), want failed", i+1, st, err)
			}
			if s, b := postSigned(t, base, fmt.Sprintf("msg_locked_%d", i+1), userEvent("user.updated", "user_locked")); s != http.StatusOK {
				t.Errorf("retry of msg_locked_%d: %d %s", i+1, s, b)
			}
		default:
			t.Errorf("msg_locked_%d: status %d, want 200 or 503", i+1, status)
		}
	}
	var credits, users int
	if err := db.NewRaw("SELECT count(*) FROM credit_transactions WHERE reason = 'signup_bonus'").Scan(ctx, &credits); err != nil {
		t.Fatal(err)
	}
	if err := db.NewRaw("SELECT count(*) FROM users").Scan(ctx, &users); err != nil {
		t.Fatal(err)
	}
	if credits != 21 || users != 21 {
		t.Errorf("%d users with %d signup credits, want 21 and 21", users, credits)
	}
	pgtest.CheckInvariants(t, db)
}

// userEvent is a Clerk user event for id (without email), versioned now.
func userEvent(typ, id string) string {
	return string(clerkevent.Event{Type: typ, UserID: id}.MustBody())
}

// lockWaiters counts backends of this test's database waiting for a lock.
func lockWaiters(t *testing.T, db interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}) int {
	t.Helper()
	var n int
	if err := db.QueryRowContext(context.Background(),
		"SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// metricValue reads an unlabelled sample from /metrics.
func metricValue(t *testing.T, metricsAddr, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

// waitFor polls cond until it holds, for up to 30s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 30s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestFloodStaysWithinMemory runs the real binary and floods it with 400
// connections at once, each pushing a 1 MiB body: first without Svix headers
// (they used to be read whole before the headers were looked at: 757 MiB,
// three times the chart's memory limit), then with plausible headers and a
// forged signature (those bodies are read, within BODY_MEMORY_LIMIT). Peak
// RSS stays under 100 MiB, /healthz answers and signed deliveries are served
// throughout.
func TestFloodStaysWithinMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the webhook binary and pushes 800 MiB through loopback")
	}
	t.Parallel()
	db, url := pgtest.New(t)
	bin := filepath.Join(t.TempDir(), "webhook")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	httpAddr, metricsAddr := freeAddr(t), freeAddr(t)
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "DATABASE_URL="+url, "CLERK_WEBHOOK_SIGNING_SECRET="+testSecret,
		"HTTP_ADDR="+httpAddr, "METRICS_ADDR="+metricsAddr, "API_ADDR="+freeAddr(t), "LOG_LEVEL=error")
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	base := "http://" + httpAddr
	waitReady(t, base)
	t.Logf("RSS after start: %d MiB", procStatusKiB(t, cmd.Process.Pid, "VmRSS")>>10)

	forged := func() string {
		return fmt.Sprintf("svix-id: msg_forged\r\nsvix-timestamp: %d\r\nsvix-signature: v1,%s\r\n",
			time.Now().Unix(), strings.Repeat("A", 43)+"=")
	}
	for _, phase := range []struct {
		name    string
		headers func() string
		want    map[int]bool
	}{
		{"no svix headers", func() string { return "" }, map[int]bool{400: true}},
		{"forged signature", forged, map[int]bool{401: true, 503: true}},
	} {
		t.Run(phase.name, func(t *testing.T) {
			var answered, refused atomic.Int64
			var wrong sync.Map
			var wg sync.WaitGroup
			start := make(chan struct{})
			for range 400 {
				wg.Go(func() {
					<-start
					status, err := pushBody(httpAddr, phase.headers(), 1<<20)
					switch {
					case err != nil:
						refused.Add(1) // the server closed a connection it would not read
					case phase.want[status]:
						answered.Add(1)
					default:
						wrong.Store(status, true)
					}
				})
			}
			close(start)
			// While the flood runs: liveness and real deliveries.
			served := 0
			for i := range 10 {
				if resp, err := http.Get(base + "/healthz"); err != nil || resp.StatusCode != http.StatusOK {
					t.Errorf("/healthz during the flood: %v %v", resp, err)
				} else {
					resp.Body.Close()
				}
				id := fmt.Sprintf("user_flood_%s_%d", strings.ReplaceAll(phase.name, " ", "_"), i)
				status, b := postSigned(t, base, "msg_"+id, userEvent("user.created", id))
				switch status {
				case http.StatusOK:
					served++
				case http.StatusServiceUnavailable: // the budget was full: Svix retries
				default:
					t.Errorf("signed delivery during the flood: %d %s", status, b)
				}
			}
			wg.Wait()
			wrong.Range(func(k, _ any) bool { t.Errorf("a flood request was answered %v", k); return true })
			t.Logf("%s: %d answered, %d connections closed unread, %d of 10 signed deliveries served; peak RSS %d MiB",
				phase.name, answered.Load(), refused.Load(), served, procStatusKiB(t, cmd.Process.Pid, "VmHWM")>>10)
			if phase.name == "no svix headers" && served != 10 {
				t.Errorf("%d of 10 signed deliveries served during a flood without headers, want all", served)
			}
		})
	}
	if peak := procStatusKiB(t, cmd.Process.Pid, "VmHWM"); peak > 100<<10 {
		t.Errorf("peak RSS %d MiB, want under 100 MiB\n%s", peak>>10, logs.String())
	}
	var n int
	if err := db.NewRaw("SELECT count(*) FROM webhook_events WHERE svix_id = 'msg_forged'").Scan(context.Background(), &n); err != nil || n != 0 {
		t.Errorf("forged deliveries stored %d events (%v)", n, err)
	}
	pgtest.CheckInvariants(t, db)
}

// pushBody sends a POST declaring a body of size bytes with extra headers
// (CRLF-terminated lines) and writes the body, ignoring write errors (the
// server may answer and close early), then reads the status.
func pushBody(addr, headers string, size int) (int, error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(60 * time.Second))
	fmt.Fprintf(c, "POST /api/webhooks/clerk HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n", size, headers)
	chunk := bytes.Repeat([]byte("x"), 64<<10)
	go func() {
		for sent := 0; sent < size; sent += len(chunk) {
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
	}()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// procStatusKiB reads a kB field (VmRSS, VmHWM) of /proc/PID/status.
func procStatusKiB(t *testing.T, pid int, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}
