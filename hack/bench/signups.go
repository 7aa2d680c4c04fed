package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/uptrace/bun"

	"github.com/creditgate/creditgate/pkg/clerk"
	"github.com/creditgate/creditgate/pkg/clerk/clerkevent"
	"github.com/creditgate/creditgate/pkg/ledger"
	"github.com/creditgate/creditgate/pkg/postgres"
	"github.com/creditgate/creditgate/pkg/webhook/svixsender"
)

// setup is what both scenarios start from: the built service, a migrated
// database on a local PostgreSQL with pg_stat_statements, and the capture.
type setup struct {
	dir, serviceBin, url, pgbenchBin string
	port, pgRoot                     int
	db                               *bun.DB
	store                            *postgres.Store
	hook                             *capture
}

// The capture's token that varies per new user (svix id, user id, email,
// signup key, inside the body too): it becomes a pgbench variable.
const captureToken = "capturebench"

// runSignups measures the webhook's hot path — a signed user.created for a
// new user, answered once its signup credits are committed — against
// pgbench running the statement the service sends, at each number of
// concurrent senders.
func runSignups(ctx context.Context, c config, s setup) error {
	// The SQL of one new user, as the service sends it: the store's own
	// code run once with the capture on.
	svc := &ledger.Service{Store: s.store, Decode: clerk.Decode, SignupCredits: ledger.DefaultSignupCredits}
	user := "user_" + captureToken
	body := clerkevent.Event{Type: clerkevent.UserCreated, UserID: user, Email: clerkevent.EmailFor(user)}.MustBody()
	stmts, err := s.hook.record(func() error {
		res, err := svc.Process(ctx, ledger.Delivery{SvixID: "msg_" + captureToken, Body: body, ReceivedAt: time.Now()})
		if err == nil && res.CreditsGranted != ledger.DefaultSignupCredits {
			err = fmt.Errorf("the captured delivery granted %d credits: %+v", res.CreditsGranted, res)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("capture a new user: %w", err)
	}
	logf("a new user is %d statement(s) in %d round trip(s)", len(stmts), trips(stmts))
	scripts := map[string]string{}
	for _, mode := range []string{"simple", "prepared"} {
		markers := []*marker{{value: captureToken, expr: ":cg_n::text", text: true}}
		sc, err := pgbenchScript(stmts, "\\set cg_n random(1, 9000000000000000000)\n", markers, mode == "prepared")
		if err != nil {
			return err
		}
		scripts[mode] = filepath.Join(s.dir, "signup-"+mode+".sql")
		if err := os.WriteFile(scripts[mode], []byte(sc), 0o644); err != nil {
			return err
		}
	}
	if c.Hold {
		logf("holding the database until interrupted: psql %s; pgbench script %s", s.url, scripts["prepared"])
		<-ctx.Done()
		return nil
	}
	service, err := startService(ctx, s.serviceBin, s.dir, s.url, c.WebhookEnv, c.Profile)
	if err != nil {
		return err
	}
	if err := service.start(ctx); err != nil {
		return err
	}
	defer service.stop()

	var results []result
	for i, n := range c.Senders {
		cc := c
		cc.Clients = n
		sender, err := svixsender.New(service.hook, service.secret, svixsender.Options{Conns: n, Lean: c.Client == "lean", Timeout: 30 * time.Second})
		if err != nil {
			return err
		}
		gen := &svixsender.Generator{EventType: clerkevent.UserCreated, InstanceID: clerkevent.NewID("ins"), Unique: true}
		// Warm the connections and the service's pool, unmeasured.
		if _, err := svixsender.Load(ctx, sender, gen, 20*n, n, false); err != nil {
			return err
		}
		r, err := measure(ctx, cc, s.db, s.pgRoot, service.pid, "service", func() (result, error) {
			if service.pprof != "" && i == 0 {
				go profileService(ctx, service, s.dir)
			}
			lr, err := svixsender.Load(ctx, sender, gen, c.Requests, n, true)
			return result{Ops: lr.Sent(), Latencies: lr.Latencies(), Statuses: lr.Statuses(), Elapsed: lr.Elapsed()}, err
		})
		if err != nil {
			return err
		}
		if r.Statuses[http.StatusOK] != c.Requests {
			return fmt.Errorf("%d senders: answers by status %v, want %d × 200", n, r.Statuses, c.Requests)
		}
		r.Name = fmt.Sprintf("%d senders", n)
		results = append(results, r)
		modes := []string{"prepared"}
		if c.Simple {
			modes = append(modes, "simple")
		}
		for _, mode := range modes {
			args := []string{"-n", "-h", "127.0.0.1", "-p", strconv.Itoa(s.port), "-U", "postgres", "-c", strconv.Itoa(n),
				"-j", strconv.Itoa(min(n, runtime.NumCPU())), "-T", strconv.Itoa(c.Seconds), "-M", mode, "-f", scripts[mode], "bench"}
			var cpu time.Duration
			r, err := measure(ctx, cc, s.db, s.pgRoot, 0, "pgbench -M "+mode, func() (result, error) {
				ops, lat, pcpu, el, err := pgbench(ctx, s.pgbenchBin, args, s.dir, fmt.Sprintf("signup-%d-%s", n, mode))
				cpu = pcpu
				return result{Ops: ops, Latencies: lat, Elapsed: el}, err
			})
			if err != nil {
				return err
			}
			r.ClientCPU = cpu
			r.Name, r.mode = fmt.Sprintf("%d senders", n), mode
			results = append(results, r)
		}
	}
	// Every delivery made one user with its signup credits, once. (Not
	// pgtest's full invariant check: over the ~150,000 users of a run it
	// takes PostgreSQL many minutes.)
	var users, credited, other int
	if err := s.db.QueryRowContext(ctx, `SELECT (SELECT count(*) FROM users),
		(SELECT count(DISTINCT user_id) FROM credit_transactions WHERE reason = 'signup_bonus' AND amount = ?),
		(SELECT count(*) FROM users WHERE available_credits <> ? OR used_credits <> 0)`,
		ledger.DefaultSignupCredits, ledger.DefaultSignupCredits).Scan(&users, &credited, &other); err != nil {
		return err
	}
	var entries int
	if err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM credit_transactions`).Scan(&entries); err != nil {
		return err
	}
	if users != credited || entries != users || other != 0 {
		return fmt.Errorf("%d users, %d with a signup credit, %d ledger entries, %d with a balance other than %d",
			users, credited, entries, other, ledger.DefaultSignupCredits)
	}
	report := renderSignupReport(c, results, users)
	fmt.Print(report)
	if c.OutDir != "" {
		return os.WriteFile(filepath.Join(s.dir, "report-signups.md"), []byte(report), 0o644)
	}
	return nil
}

func trips(stmts []captured) int {
	if len(stmts) == 0 {
		return 0
	}
	return stmts[len(stmts)-1].trip - stmts[0].trip + 1
}

// renderSignupReport is the Markdown docs/benchmarks.md shows for the
// webhook: the runs, then issue 12's targets checked against them.
func renderSignupReport(c config, rs []result, users int) string {
	var b strings.Builder
	writeRuns(&b, c, fmt.Sprintf("senders %v (%s), %d signed user.created per service run", c.Senders, c.Client, c.Requests),
		"senders", "events or tx", "event", "**service** (signed webhook)", rs)
	b.WriteString("\n| target (issue 12) | measured | |\n|---|---|---|\n")
	var peak int64
	for i, s := range rs {
		if s.PeakRSS == 0 {
			continue
		}
		peak = max(peak, s.PeakRSS)
		cpu := float64(s.ServiceCPU) / float64(time.Microsecond) / float64(s.Ops)
		fmt.Fprintf(&b, "| %s: service CPU < 150 µs per new event | **%.0f µs** | %s |\n", s.Name, cpu, verdict(cpu < 150))
		if i+1 < len(rs) && rs[i+1].PeakRSS == 0 && s.Clients == 16 {
			p := rs[i+1]
			ratio := s.rate() / p.rate()
			fmt.Fprintf(&b, "| %s: ≥ 0.7 × pgbench `-M prepared` running the same statement | %.0f / %.0f = **%.2f** | %s |\n",
				s.Name, s.rate(), p.rate(), ratio, verdict(ratio >= 0.7))
		}
		if s.Clients == 64 {
			p99 := s.pct(0.99)
			fmt.Fprintf(&b, "| %s: p99 < 50 ms | **%s ms** | %s |\n", s.Name, ms(p99), verdict(p99 < 50*time.Millisecond))
		}
	}
	fmt.Fprintf(&b, "| peak RSS < 64 MB | **%.1f MB** | %s |\n", float64(peak)/1e6, verdict(peak < 64e6))
	fmt.Fprintf(&b, "| every event one user with its signup credits, once | %d users, %d signup credits; invariants hold | met |\n", users, users)
	return b.String()
}
