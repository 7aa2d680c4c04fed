// Command bench measures the credits API's debit path against pgbench running
// the same SQL on the same PostgreSQL, in the same run, and prints the tables
// docs/benchmarks.md shows. It builds the service, starts PostgreSQL (fsync
// on) through pglocal, seeds users through the store, captures the SQL of one
// debit from the Go code that sends it (bun's query hook) and turns it into a
// pgbench script, drives the real binary over HTTP, and reads CPU and memory
// from /proc. It stops everything it started.
//
//	go run ./hack/bench            # or: make bench-api
//
// Settings are flags, or BENCH_* variables (see -h).
package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/uptrace/bun"

	"github.com/creditgate/creditgate/pkg/creditsapi"
	"github.com/creditgate/creditgate/pkg/ledger"
	"github.com/creditgate/creditgate/pkg/pglocal"
	"github.com/creditgate/creditgate/pkg/pgtest"
	"github.com/creditgate/creditgate/pkg/postgres"
)

type config struct {
	Clients, Users, Requests, Seconds, Drain int
	Senders                                  []int
	OutDir, WebhookEnv, Client, Scenario     string
	WebhookBin                               string
	MaxBusy                                  float64
	LoadWait                                 time.Duration
	Simple, Profile, Minimal, Hold           bool
}

func main() {
	var c config
	flag.StringVar(&c.Scenario, "scenario", envString("BENCH_SCENARIO", "debits"), "what to measure: debits (the credits API) or signups (the webhook's new users) (BENCH_SCENARIO)")
	senders := flag.String("senders", envString("BENCH_SENDERS", "16,64"), "signups: concurrent senders, one run each (BENCH_SENDERS)")
	flag.IntVar(&c.Clients, "clients", envInt("BENCH_CLIENTS", 16), "concurrent API clients, and pgbench clients (BENCH_CLIENTS)")
	flag.IntVar(&c.Users, "users", envInt("BENCH_USERS", 1000), "users the spread run debits (BENCH_USERS)")
	flag.IntVar(&c.Requests, "requests", envInt("BENCH_REQUESTS", 20000), "debits per service run (BENCH_REQUESTS)")
	flag.IntVar(&c.Seconds, "pgbench-seconds", envInt("BENCH_PGBENCH_SECONDS", 20), "length of each pgbench run (BENCH_PGBENCH_SECONDS)")
	flag.IntVar(&c.Drain, "drain", envInt("BENCH_DRAIN", 1000), "credits of the user the overdraw check drains with 1.5× as many debits (BENCH_DRAIN)")
	flag.StringVar(&c.WebhookBin, "webhook-bin", os.Getenv("BENCH_WEBHOOK_BIN"), "measure this webhook binary (e.g. one built from another commit on the same schema) instead of building ./cmd/webhook (BENCH_WEBHOOK_BIN)")
	flag.StringVar(&c.OutDir, "out", os.Getenv("BENCH_OUT_DIR"), "keep the report, logs and pgbench scripts here (BENCH_OUT_DIR)")
	flag.StringVar(&c.WebhookEnv, "webhook-env", os.Getenv("BENCH_WEBHOOK_ENV"), "more NAME=value settings for the service, space separated (BENCH_WEBHOOK_ENV)")
	flag.Float64Var(&c.MaxBusy, "max-busy", envFloat("BENCH_MAX_BUSY", 0.3), "before each run, wait while other processes keep more cores than this busy (BENCH_MAX_BUSY)")
	flag.DurationVar(&c.LoadWait, "load-wait", envDuration("BENCH_LOAD_WAIT", 15*time.Minute), "longest wait for a quiet machine; then it measures anyway and says so (BENCH_LOAD_WAIT)")
	flag.BoolVar(&c.Simple, "simple", envInt("BENCH_SIMPLE", 1) == 1, "also run pgbench -M simple (every statement parsed and planned each time, no pipelines), for reference (BENCH_SIMPLE=0 skips)")
	flag.BoolVar(&c.Profile, "profile", envInt("BENCH_PROFILE", 0) == 1, "build the service with pprof and profile its CPU during the spread run: cpu.pprof and profile.txt in -out (BENCH_PROFILE=1)")
	flag.StringVar(&c.Client, "client", envString("BENCH_CLIENT", "lean"), "the load generator's HTTP client: lean (a connection per client, one write per request) or net/http (BENCH_CLIENT)")
	flag.BoolVar(&c.Minimal, "minimal", envInt("BENCH_MINIMAL", 1) == 1, "also measure the floor: a minimal Go server (net/http, pgx, SELECT 1 per request) under the same load (BENCH_MINIMAL=0 skips)")
	flag.BoolVar(&c.Hold, "hold", envInt("BENCH_HOLD", 0) == 1, "seed, capture the scripts, then keep PostgreSQL running until interrupted instead of measuring, to investigate by hand (BENCH_HOLD=1)")
	serve := flag.Bool("serve-minimal", false, "run as that minimal server (DATABASE_URL, API_ADDR); the benchmark starts it")
	flag.Parse()
	for _, f := range strings.Split(*senders, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "bench: -senders %q: a comma-separated list of counts\n", *senders)
			os.Exit(2)
		}
		c.Senders = append(c.Senders, n)
	}
	if *serve {
		if err := serveMinimal(); err != nil {
			fmt.Fprintln(os.Stderr, "bench -serve-minimal:", err)
			os.Exit(1)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, c); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) { fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...) }

func clerkID(n int) string { return "user_bench" + strconv.Itoa(n) }

// The capture's values that vary per debit; they become pgbench variables.
const (
	captureAmount = 987654
	captureKey    = "capturekey"
)

func run(ctx context.Context, c config) error {
	var load loader = leanLoad
	switch c.Client {
	case "lean":
	case "net/http":
		load = apiLoad
	default:
		return fmt.Errorf("-client %q: lean or net/http", c.Client)
	}
	if c.Scenario != "debits" && c.Scenario != "signups" {
		return fmt.Errorf("-scenario %q: debits or signups", c.Scenario)
	}
	if c.Users < 2 || c.Clients < 1 || c.Requests < 1 || c.Seconds < 1 {
		return errors.New("-users must be at least 2; -clients, -requests and -pgbench-seconds at least 1")
	}
	dir := c.OutDir
	if dir == "" {
		d, err := os.MkdirTemp("", "creditgate-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dir = d
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	// pglocal runs the server as postgres when root: it must write there.
	if err := os.Chmod(dir, 0o777); err != nil {
		return err
	}
	pgBin, err := pglocal.FindBin()
	if err != nil {
		return err
	}
	pgbenchBin := filepath.Join(pgBin, "pgbench")
	if _, err := os.Stat(pgbenchBin); err != nil {
		return fmt.Errorf("pgbench is not in %s (Debian: apt-get install postgresql-contrib or postgresql): %w", pgBin, err)
	}

	service := c.WebhookBin
	if service == "" {
		logf("building the service")
		service = filepath.Join(dir, "webhook")
		args := []string{"build", "-o", service}
		if c.Profile {
			args = append(args, "-tags", "benchpprof")
		}
		build := exec.CommandContext(ctx, "go", append(args, "./cmd/webhook")...)
		build.Dir, build.Stdout, build.Stderr = moduleRoot(), os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("go build ./cmd/webhook: %w", err)
		}
	} else if c.Profile {
		return errors.New("-profile builds the service itself: not with -webhook-bin")
	}

	logf("starting PostgreSQL (fsync on)")
	srv, err := pglocal.Start(ctx, pglocal.Options{Fsync: true, StopWithParent: true, LogFile: filepath.Join(dir, "postgresql.log"),
		Settings: map[string]string{"shared_preload_libraries": "pg_stat_statements", "max_connections": "100",
			"pg_stat_statements.track_planning": "on"}})
	if err != nil {
		return err
	}
	defer srv.Close()
	if err := srv.CreateDatabase(ctx, "bench", ""); err != nil {
		return err
	}
	url := srv.URL("bench")
	hook := &capture{}
	db, err := postgres.Open(url, postgres.Options{MaxConns: 8, Tracer: hook})
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := postgres.Migrate(ctx, db, slog.New(slog.DiscardHandler)); err != nil {
		return err
	}
	if _, err := db.ExecContext(ctx, "CREATE EXTENSION pg_stat_statements"); err != nil {
		return err
	}
	store := postgres.NewStore(db)
	if c.Scenario == "signups" {
		pgRoot, err := postmaster(filepath.Join(srv.Dir, "data"))
		if err != nil {
			return err
		}
		return runSignups(ctx, c, setup{dir: dir, serviceBin: service, url: url, pgbenchBin: pgbenchBin,
			port: srv.Port, pgRoot: pgRoot, db: db, store: store, hook: hook})
	}

	logf("seeding %d users with 1,000,020 credits each", c.Users)
	if err := seed(ctx, store, db, c.Users); err != nil {
		return err
	}

	// The SQL of one debit, as the service sends it: the store's own code
	// run once with the capture on, on the last user, with marker values.
	fp := sha256.Sum256([]byte("POST /v1/users/x/debits"))
	stmts, err := hook.record(func() error {
		ans, err := store.Debit(ctx, ledger.Request{ClerkID: clerkID(c.Users), Actor: "bench", Key: captureKey, Fingerprint: fp[:]},
			ledger.Spend{Amount: captureAmount, Reason: "bench"}, creditsapi.Renderer(http.StatusCreated))
		if err == nil && ans.Status != http.StatusCreated {
			err = fmt.Errorf("the captured debit answered %d: %s", ans.Status, ans.Body)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("capture a debit: %w", err)
	}
	scripts := map[string]string{}
	for name, user := range map[string]string{"spread": fmt.Sprintf("random(1, %d)", c.Users), "one": "1"} {
		for _, mode := range []string{"simple", "prepared"} {
			markers := []*marker{
				{value: strconv.Itoa(captureAmount), expr: ":cg_amount"},
				{value: clerkID(c.Users), expr: "'user_bench' || :cg_user::text", text: true},
				{value: captureKey, expr: "'bench-' || :cg_key::text", text: true},
			}
			header := fmt.Sprintf("\\set cg_user %s\n\\set cg_amount 1\n\\set cg_key random(1, 9000000000000000000)\n", user)
			s, err := pgbenchScript(stmts, header, markers, mode == "prepared")
			if err != nil {
				return err
			}
			key := name + "-" + mode
			scripts[key] = filepath.Join(dir, "debit-"+key+".sql")
			if err := os.WriteFile(scripts[key], []byte(s), 0o644); err != nil {
				return err
			}
		}
	}
	trips := 0
	if len(stmts) > 0 {
		trips = stmts[len(stmts)-1].trip - stmts[0].trip + 1
	}
	logf("a debit is %d statements (BEGIN and COMMIT included) in %d round trip(s); pgbench runs them as %s", len(stmts), trips, scripts["spread-prepared"])

	if c.Hold {
		logf("holding the seeded database until interrupted: psql %s", url)
		<-ctx.Done()
		return nil
	}
	svc, err := startService(ctx, service, dir, url, c.WebhookEnv, c.Profile)
	if err != nil {
		return err
	}
	if err := svc.start(ctx); err != nil {
		return err
	}
	defer svc.stop()

	var results []result
	scenarios := []struct {
		name   string
		script string
		user   func(i int) string
	}{
		{fmt.Sprintf("%d users", c.Users), "spread", func(i int) string {
			return clerkID(1 + int(uint64(i)*2654435761%uint64(c.Users)))
		}},
		{"one user", "one", func(int) string { return clerkID(1) }},
	}
	pgArgs := []string{"-n", "-h", "127.0.0.1", "-p", strconv.Itoa(srv.Port), "-U", "postgres",
		"-c", strconv.Itoa(c.Clients), "-j", strconv.Itoa(min(c.Clients, runtime.NumCPU())), "-T", strconv.Itoa(c.Seconds)}
	pgRoot, err := postmaster(filepath.Join(srv.Dir, "data"))
	if err != nil {
		return err
	}
	for si, sc := range scenarios {
		// Warm the connections and the service's pool, unmeasured.
		if _, _, _, err := load(ctx, svc.api, svc.key, fmt.Sprintf("warm%d", si), c.Clients, 20*c.Clients, sc.user); err != nil {
			return err
		}
		r, err := measure(ctx, c, db, pgRoot, svc.pid, "service", func() (result, error) {
			var prof sync.WaitGroup
			if svc.pprof != "" && si == 0 {
				prof.Go(func() { profileService(ctx, svc, dir) })
			}
			lat, st, el, err := load(ctx, svc.api, svc.key, fmt.Sprintf("run%d", si), c.Clients, c.Requests, sc.user)
			prof.Wait()
			return result{Ops: c.Requests, Latencies: lat, Statuses: st, Elapsed: el}, err
		})
		if err != nil {
			return err
		}
		if err := topStatements(ctx, db, filepath.Join(dir, fmt.Sprintf("statements-%d-service.txt", si))); err != nil {
			return err
		}
		if r.Statuses[http.StatusCreated] != c.Requests {
			return fmt.Errorf("%s: answers by status %v, want %d × 201", sc.name, r.Statuses, c.Requests)
		}
		r.Name = sc.name
		results = append(results, r)
		modes := []string{"prepared"}
		if c.Simple {
			modes = append(modes, "simple")
		}
		for _, mode := range modes {
			var cpu time.Duration
			r, err := measure(ctx, c, db, pgRoot, 0, "pgbench -M "+mode, func() (result, error) {
				ops, lat, pcpu, el, err := pgbench(ctx, pgbenchBin, append(pgArgs, "-M", mode, "-f", scripts[sc.script+"-"+mode], "bench"), dir, fmt.Sprintf("%d-%s", si, mode))
				cpu = pcpu
				return result{Ops: ops, Latencies: lat, Elapsed: el}, err
			})
			if err != nil {
				return err
			}
			r.ClientCPU = cpu
			r.Name, r.mode = sc.name, mode
			results = append(results, r)
		}
		if err := checkInvariants(ctx, db); err != nil {
			return err
		}
	}

	if c.Minimal {
		r, err := measureMinimal(ctx, c, db, pgRoot, url, load, "")
		if err != nil {
			return err
		}
		results = append(results, r)
		if c.Client == "lean" {
			// The same, held to the service's rate in the spread run: CPU
			// per request falls as the rate rises (more work per wake-up),
			// so this is the floor to compare the service with.
			rate := results[0].rate()
			r, err := measureMinimal(ctx, c, db, pgRoot, url, pacedLoad(rate), fmt.Sprintf(", held to %.0f/s", rate))
			if err != nil {
				return err
			}
			results = append(results, r)
		}
	}

	drain, err := drainCheck(ctx, c, store, db, svc)
	if err != nil {
		return err
	}
	report := renderReport(c, results, drain)
	fmt.Print(report)
	if c.OutDir != "" {
		return os.WriteFile(filepath.Join(dir, "report-debits.md"), []byte(report), 0o644)
	}
	return nil
}

// seed creates users 1…n one after another (so user k has id k, which the
// pgbench scripts rely on) with their signup credits, then grants each
// 1,000,000 credits through the store.
func seed(ctx context.Context, store *postgres.Store, db *bun.DB, n int) error {
	now := time.Now()
	for i := 1; i <= n; i++ {
		if _, err := store.EnsureUser(ctx, ledger.ClerkUser{ID: clerkID(i), CreatedAt: now, UpdatedAt: now}, 20, false); err != nil {
			return fmt.Errorf("create %s: %w", clerkID(i), err)
		}
	}
	var wrong int
	if err := db.QueryRowContext(ctx, "SELECT count(*) FROM users WHERE clerk_id <> 'user_bench' || id").Scan(&wrong); err != nil {
		return err
	}
	if wrong > 0 {
		return fmt.Errorf("%d seeded users do not have id k for user_bench<k>", wrong)
	}
	work := make(chan int)
	errs := make(chan error, 8)
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				fp := sha256.Sum256([]byte("fund"))
				ans, err := store.Grant(ctx, ledger.Request{ClerkID: clerkID(i), Actor: "bench", Key: "fund", Fingerprint: fp[:]},
					ledger.Grant{Amount: 1_000_000, Reason: "bench"}, creditsapi.Renderer(http.StatusCreated))
				if err == nil && ans.Status != http.StatusCreated {
					err = fmt.Errorf("grant answered %d: %s", ans.Status, ans.Body)
				}
				if err != nil {
					errs <- fmt.Errorf("fund %s: %w", clerkID(i), err)
					return
				}
			}
		}()
	}
	var err error
feed:
	for i := 1; i <= n; i++ {
		select {
		case work <- i:
		case err = <-errs:
			break feed
		}
	}
	close(work)
	wg.Wait()
	if err == nil && len(errs) > 0 {
		err = <-errs
	}
	return err
}

// measure runs op on a quiet machine with pg_stat_statements reset, and
// fills in the CPU of the service (pid, if not 0), of PostgreSQL and of the
// other processes, the statements PostgreSQL ran and the service's peak RSS.
func measure(ctx context.Context, c config, db *bun.DB, pgRoot, pid int, what string, op func() (result, error)) (result, error) {
	busy := waitQuiet(c.MaxBusy, c.LoadWait, logf)
	logf("%s (other processes at %.2f cores)", what, busy)
	if _, err := db.ExecContext(ctx, "SELECT pg_stat_statements_reset()"); err != nil {
		return result{}, err
	}
	cpu := func() (svc, pg, self, all time.Duration) {
		if pid != 0 {
			svc, _ = procCPU(pid, false)
		}
		pg, _ = treeCPU(pgRoot)
		all, _ = busyCPU()
		return svc, pg, selfCPU(), all
	}
	backends := len(children(pgRoot))
	svc0, pg0, self0, all0 := cpu()
	t0 := time.Now()
	r, err := op()
	// A closed connection's backend is counted in the postmaster's CPU
	// only once it has exited and been reaped: wait for pgbench's to go.
	for deadline := time.Now().Add(10 * time.Second); len(children(pgRoot)) > backends && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	wall := time.Since(t0)
	svc1, pg1, self1, all1 := cpu()
	if err != nil {
		return r, err
	}
	r.Clients = c.Clients
	r.ServiceCPU, r.PostgresCPU, r.ClientCPU = svc1-svc0, pg1-pg0, self1-self0
	if err := db.QueryRowContext(ctx, `SELECT COALESCE(sum(calls), 0) FROM pg_stat_statements
		WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND query NOT LIKE '%pg_stat_statements%'`).
		Scan(&r.Statements); err != nil {
		return r, err
	}
	// The client's CPU is the caller's business for pgbench (its own
	// process); here it is this process, which drives the service's load.
	r.OtherCores = (all1 - all0 - (svc1 - svc0) - (pg1 - pg0) - (self1 - self0)).Seconds() / wall.Seconds()
	if pid != 0 {
		r.PeakRSS, _ = peakRSS(pid)
	}
	return r, nil
}

func checkInvariants(ctx context.Context, db *bun.DB) error {
	vs, err := pgtest.Invariants(ctx, db)
	if err != nil {
		return err
	}
	if len(vs) > 0 {
		return fmt.Errorf("ledger invariants broken: %+v", vs)
	}
	return nil
}

// drainResult is the overdraw check: a user holding Drain credits receives
// 1.5× as many concurrent debits of 1.
type drainResult struct {
	Credits, Requests, Created, Refused, Other int
	Balance                                    int64
}

func drainCheck(ctx context.Context, c config, store *postgres.Store, db *bun.DB, svc *service) (drainResult, error) {
	const user = "user_benchdrain"
	now := time.Now()
	if _, err := store.EnsureUser(ctx, ledger.ClerkUser{ID: user, CreatedAt: now, UpdatedAt: now}, 20, false); err != nil {
		return drainResult{}, err
	}
	if c.Drain > 20 {
		fp := sha256.Sum256([]byte("drain"))
		if _, err := store.Grant(ctx, ledger.Request{ClerkID: user, Actor: "bench", Key: "drain", Fingerprint: fp[:]},
			ledger.Grant{Amount: int64(c.Drain - 20), Reason: "bench"}, creditsapi.Renderer(http.StatusCreated)); err != nil {
			return drainResult{}, err
		}
	}
	d := drainResult{Credits: max(c.Drain, 20), Requests: max(c.Drain, 20) * 3 / 2}
	logf("overdraw check: %d concurrent debits of 1 against %d credits", d.Requests, d.Credits)
	_, st, _, err := apiLoad(ctx, svc.api, svc.key, "drain", c.Clients, d.Requests, func(int) string { return user })
	if err != nil {
		return d, err
	}
	d.Created, d.Refused = st[http.StatusCreated], st[http.StatusConflict]
	d.Other = d.Requests - d.Created - d.Refused
	if err := db.QueryRowContext(ctx, "SELECT available_credits FROM users WHERE clerk_id = ?", user).Scan(&d.Balance); err != nil {
		return d, err
	}
	if d.Created != d.Credits || d.Refused != d.Requests-d.Credits || d.Balance != 0 {
		return d, fmt.Errorf("overdraw check: %d debits succeeded, %d refused, %d otherwise, balance %d; want %d, %d, 0, 0",
			d.Created, d.Refused, d.Other, d.Balance, d.Credits, d.Requests-d.Credits)
	}
	return d, checkInvariants(ctx, db)
}

// service is the webhook binary, serving the credits API.
type service struct {
	cmd *exec.Cmd
	pid int
	api string
	// hook is the webhook's URL, secret its signing secret.
	hook, secret string
	ready        string
	pprof        string
	key          string
	done         chan struct{}
}

func startService(ctx context.Context, bin, dir, url, extra string, profile bool) (*service, error) {
	ports := make([]int, 4)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ports[i] = l.Addr().(*net.TCPAddr).Port
		// Held until all three are picked, so they differ.
		defer l.Close()
	}
	secret, key := make([]byte, 24), make([]byte, 32)
	_, _ = rand.Read(secret)
	_, _ = rand.Read(key)
	s := &service{key: base64.RawURLEncoding.EncodeToString(key), api: fmt.Sprintf("http://127.0.0.1:%d", ports[2]),
		hook:   fmt.Sprintf("http://127.0.0.1:%d/api/webhooks/clerk", ports[0]),
		secret: "whsec_" + base64.StdEncoding.EncodeToString(secret),
		ready:  fmt.Sprintf("http://127.0.0.1:%d/readyz", ports[0]), done: make(chan struct{})}
	env := append(os.Environ(),
		"DATABASE_URL="+url,
		"CLERK_WEBHOOK_SIGNING_SECRET="+s.secret,
		"CREDITS_API_KEYS=bench:admin:"+s.key,
		fmt.Sprintf("HTTP_ADDR=127.0.0.1:%d", ports[0]),
		fmt.Sprintf("METRICS_ADDR=127.0.0.1:%d", ports[1]),
		fmt.Sprintf("API_ADDR=127.0.0.1:%d", ports[2]),
		"LOG_LEVEL=warn")
	if profile {
		s.pprof = fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile", ports[3])
		env = append(env, fmt.Sprintf("PPROF_ADDR=127.0.0.1:%d", ports[3]))
	}
	env = append(env, strings.Fields(extra)...)
	logFile, err := os.Create(filepath.Join(dir, "webhook.log"))
	if err != nil {
		return nil, err
	}
	s.cmd = exec.Command(bin)
	s.cmd.Env, s.cmd.Stdout, s.cmd.Stderr = env, logFile, logFile
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	return s, nil
}

func (s *service) start(ctx context.Context) error {
	logFile := s.cmd.Stdout.(*os.File)
	if err := s.cmd.Start(); err != nil {
		return err
	}
	s.pid = s.cmd.Process.Pid
	go func() { _ = s.cmd.Wait(); logFile.Close(); close(s.done) }()
	ready := s.ready
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(ready)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-s.done:
			return fmt.Errorf("the service exited before it was ready; see %s", logFile.Name())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the service was not ready within 30 s; see %s", logFile.Name())
		}
	}
}

func (s *service) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(20 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

// postmaster is the PID of the server running in data directory dir.
func postmaster(dir string) (int, error) {
	b, err := os.ReadFile(filepath.Join(dir, "postmaster.pid"))
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return strconv.Atoi(strings.TrimSpace(line))
}

func moduleRoot() string {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "."
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return v
	}
	return def
}

func envString(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func envFloat(name string, def float64) float64 {
	if v, err := strconv.ParseFloat(os.Getenv(name), 64); err == nil {
		return v
	}
	return def
}

func envDuration(name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if d, err := time.ParseDuration(v); err == nil {
		return d
	}
	if s, err := strconv.Atoi(v); err == nil {
		return time.Duration(s) * time.Second
	}
	return def
}

// topStatements writes what PostgreSQL spent its time on in the last run,
// by statement: calls, planning and execution time.
func topStatements(ctx context.Context, db *bun.DB, file string) error {
	rows, err := db.QueryContext(ctx, `SELECT calls, plans, round(total_plan_time::numeric, 1), round(total_exec_time::numeric, 1),
		left(regexp_replace(query, '\s+', ' ', 'g'), 100)
		FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
		ORDER BY total_plan_time + total_exec_time DESC LIMIT 15`)
	if err != nil {
		return err
	}
	defer rows.Close()
	var b strings.Builder
	b.WriteString("calls\tplans\tplan ms\texec ms\tstatement\n")
	for rows.Next() {
		var calls, plans int64
		var plan, exec float64
		var q string
		if err := rows.Scan(&calls, &plans, &plan, &exec, &q); err != nil {
			return err
		}
		fmt.Fprintf(&b, "%d\t%d\t%.1f\t%.1f\t%s\n", calls, plans, plan, exec, q)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	return os.WriteFile(file, []byte(b.String()), 0o644)
}

// profileService takes a 5-second CPU profile of the service under load
// and writes it, and its top entries, to dir.
func profileService(ctx context.Context, svc *service, dir string) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, svc.pprof+"?seconds=5", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		logf("profile: %v", err)
		return
	}
	defer resp.Body.Close()
	file := filepath.Join(dir, "cpu.pprof")
	f, err := os.Create(file)
	if err != nil {
		logf("profile: %v", err)
		return
	}
	_, err = io.Copy(f, resp.Body)
	f.Close()
	if err != nil {
		logf("profile: %v", err)
		return
	}
	out, err := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-nodecount=40", svc.cmd.Path, file).CombinedOutput()
	if err != nil {
		logf("go tool pprof: %v: %s", err, out)
		return
	}
	_ = os.WriteFile(filepath.Join(dir, "profile.txt"), out, 0o644)
}

// measureMinimal runs the same load against the minimal server (see
// serveMinimal), started from this very binary.
func measureMinimal(ctx context.Context, c config, db *bun.DB, pgRoot int, url string, load loader, note string) (result, error) {
	self, err := os.Executable()
	if err != nil {
		return result{}, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return result{}, err
	}
	addr := l.Addr().String()
	l.Close()
	cmd := exec.CommandContext(ctx, self, "-serve-minimal")
	cmd.Env = append(append(os.Environ(), "DATABASE_URL="+url, "API_ADDR="+addr), strings.Fields(c.WebhookEnv)...)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return result{}, err
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}()
	base := "http://" + addr
	user := func(int) string { return "x" }
	for deadline := time.Now().Add(15 * time.Second); ; {
		_, st, _, err := load(ctx, base, "-", "ready", 1, 1, user)
		if err == nil && st[http.StatusCreated] == 1 {
			break
		}
		if time.Now().After(deadline) {
			return result{}, fmt.Errorf("the minimal server did not answer: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, _, _, err := load(ctx, base, "-", "warm", c.Clients, 20*c.Clients, user); err != nil {
		return result{}, err
	}
	r, err := measure(ctx, c, db, pgRoot, cmd.Process.Pid, "minimal server", func() (result, error) {
		lat, st, el, err := load(ctx, base, "-", "run", c.Clients, c.Requests, user)
		return result{Ops: c.Requests, Latencies: lat, Statuses: st, Elapsed: el}, err
	})
	r.Name, r.What = "floor", "minimal Go server: net/http, pgx, `SELECT 1` prepared"+note
	return r, err
}
