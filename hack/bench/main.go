// Command bench measures the credits API's debits or the webhook's new users
// against pgbench running the same SQL on the same PostgreSQL, in the same
// run, and prints the tables docs/benchmarks.md shows. It builds the service,
// starts PostgreSQL (fsync on) through pglocal, turns the SQL the store sends
// (seen by a pgx tracer) into pgbench scripts, drives the real binary over
// HTTP, and reads CPU and memory from /proc. It stops everything it started.
//
//	go run ./hack/bench            # or: make bench-api, make bench-signups
//
// Settings are flags, or BENCH_* variables (see -h).
package main

import (
	"cmp"
	"context"
	"crypto/rand"
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
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/uptrace/bun"

	"github.com/creditgate/creditgate/pkg/pglocal"
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
	flag.StringVar(&c.Scenario, "scenario", "debits", "what to measure: debits (the credits API) or signups (the webhook's new users) (BENCH_SCENARIO)")
	senders := flag.String("senders", "16,64", "signups: concurrent senders, one run each (BENCH_SENDERS)")
	flag.IntVar(&c.Clients, "clients", 16, "concurrent API clients, and pgbench clients (BENCH_CLIENTS)")
	flag.IntVar(&c.Users, "users", 1000, "users the spread run debits (BENCH_USERS)")
	flag.IntVar(&c.Requests, "requests", 20000, "debits per service run (BENCH_REQUESTS)")
	flag.IntVar(&c.Seconds, "pgbench-seconds", 20, "length of each pgbench run (BENCH_PGBENCH_SECONDS)")
	flag.IntVar(&c.Drain, "drain", 1000, "credits of the user the overdraw check drains with 1.5× as many debits (BENCH_DRAIN)")
	flag.StringVar(&c.WebhookBin, "webhook-bin", "", "measure this webhook binary (e.g. one built from another commit on the same schema) instead of building ./cmd/webhook (BENCH_WEBHOOK_BIN)")
	flag.StringVar(&c.OutDir, "out", "", "keep the report, logs and pgbench scripts here (BENCH_OUT_DIR)")
	flag.StringVar(&c.WebhookEnv, "webhook-env", "", "more NAME=value settings for the service, space separated (BENCH_WEBHOOK_ENV)")
	flag.Float64Var(&c.MaxBusy, "max-busy", 0.3, "before each run, wait while other processes keep more cores than this busy (BENCH_MAX_BUSY)")
	flag.DurationVar(&c.LoadWait, "load-wait", 15*time.Minute, "longest wait for a quiet machine; then it measures anyway and says so (BENCH_LOAD_WAIT)")
	flag.BoolVar(&c.Simple, "simple", true, "also run pgbench -M simple (every statement parsed and planned each time, no pipelines), for reference (BENCH_SIMPLE=0 skips)")
	flag.BoolVar(&c.Profile, "profile", false, "build the service with pprof and profile its CPU during the spread run: cpu.pprof and profile.txt in -out (BENCH_PROFILE=1)")
	flag.StringVar(&c.Client, "client", "lean", "the load generator's HTTP client: lean (a connection per client, one write per request) or net/http (BENCH_CLIENT)")
	flag.BoolVar(&c.Minimal, "minimal", true, "also measure the floor: a minimal Go server (net/http, pgx, SELECT 1 per request) under the same load (BENCH_MINIMAL=0 skips)")
	flag.BoolVar(&c.Hold, "hold", false, "seed, capture the scripts, then keep PostgreSQL running until interrupted instead of measuring, to investigate by hand (BENCH_HOLD=1)")
	serve := flag.Bool("serve-minimal", false, "run as that minimal server (DATABASE_URL, API_ADDR); the benchmark starts it")
	// Every setting but -serve-minimal can come from its BENCH_ variable
	// (-max-busy from BENCH_MAX_BUSY, -out from BENCH_OUT_DIR); flags win.
	flag.VisitAll(func(f *flag.Flag) {
		name := "BENCH_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if f.Name == "out" {
			name = "BENCH_OUT_DIR"
		}
		if v := os.Getenv(name); v != "" && f.Name != "serve-minimal" {
			if err := f.Value.Set(v); err != nil {
				fmt.Fprintf(os.Stderr, "bench: %s=%q: %v\n", name, v, err)
				os.Exit(2)
			}
			f.DefValue = f.Value.String()
		}
	})
	flag.Parse()
	for _, f := range strings.Split(*senders, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "bench: -senders %q: a comma-separated list of counts\n", *senders)
			os.Exit(2)
		}
		c.Senders = append(c.Senders, n)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	run := run
	if *serve {
		run = serveMinimal
	}
	if err := run(ctx, c); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) { fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...) }

// bench is what both scenarios run with: the settings, the service's binary,
// a migrated database with pg_stat_statements, the capture on its connections.
type bench struct {
	config
	dir, serviceBin, url, pgbenchBin string
	port, pgRoot                     int // PostgreSQL's port and postmaster
	db                               *bun.DB
	store                            *postgres.Store
	hook                             *capture
}

func run(ctx context.Context, c config) error {
	switch {
	case c.Client != "lean" && c.Client != "net/http":
		return fmt.Errorf("-client %q: lean or net/http", c.Client)
	case c.Scenario != "debits" && c.Scenario != "signups":
		return fmt.Errorf("-scenario %q: debits or signups", c.Scenario)
	case c.Users < 2 || c.Clients < 1 || c.Requests < 1 || c.Seconds < 1:
		return errors.New("-users must be at least 2; -clients, -requests and -pgbench-seconds at least 1")
	case c.Profile && c.WebhookBin != "":
		return errors.New("-profile builds the service itself: not with -webhook-bin")
	}
	b := &bench{config: c, dir: c.OutDir, serviceBin: c.WebhookBin, hook: &capture{}}
	var err error
	if b.dir == "" {
		if b.dir, err = os.MkdirTemp("", "creditgate-bench-"); err != nil {
			return err
		}
		defer os.RemoveAll(b.dir)
	}
	// pglocal runs the server as postgres when root: it must write there.
	if err := os.MkdirAll(b.dir, 0o755); err != nil {
		return err
	}
	if err := os.Chmod(b.dir, 0o777); err != nil {
		return err
	}
	pgBin, err := pglocal.FindBin()
	if err != nil {
		return err
	}
	b.pgbenchBin = filepath.Join(pgBin, "pgbench")
	if _, err := os.Stat(b.pgbenchBin); err != nil {
		return fmt.Errorf("pgbench is not in %s (Debian: apt-get install postgresql-contrib or postgresql): %w", pgBin, err)
	}

	if b.serviceBin == "" {
		logf("building the service")
		b.serviceBin = filepath.Join(b.dir, "webhook")
		args := []string{"build", "-o", b.serviceBin}
		if c.Profile {
			args = append(args, "-tags", "benchpprof")
		}
		out, err := exec.CommandContext(ctx, "go", append(args, "github.com/creditgate/creditgate/cmd/webhook")...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("go build ./cmd/webhook: %w\n%s", err, out)
		}
	}

	logf("starting PostgreSQL (fsync on)")
	srv, err := pglocal.Start(ctx, pglocal.Options{Fsync: true, StopWithParent: true, LogFile: filepath.Join(b.dir, "postgresql.log"),
		Settings: map[string]string{"shared_preload_libraries": "pg_stat_statements", "max_connections": "100",
			"pg_stat_statements.track_planning": "on"}})
	if err != nil {
		return err
	}
	defer srv.Close()
	if err := srv.CreateDatabase(ctx, "bench", ""); err != nil {
		return err
	}
	b.url, b.port = srv.URL("bench"), srv.Port
	pidFile, err := os.ReadFile(filepath.Join(srv.Dir, "data", "postmaster.pid"))
	if err == nil {
		_, err = fmt.Sscan(string(pidFile), &b.pgRoot) // its first line
	}
	if err != nil {
		return fmt.Errorf("postmaster.pid: %w", err)
	}
	if b.db, err = postgres.Open(b.url, postgres.Options{MaxConns: 8, Tracer: b.hook}); err != nil {
		return err
	}
	defer b.db.Close()
	if _, err := postgres.Migrate(ctx, b.db, slog.New(slog.DiscardHandler)); err != nil {
		return err
	}
	if _, err := b.db.ExecContext(ctx, "CREATE EXTENSION pg_stat_statements"); err != nil {
		return err
	}
	b.store = postgres.NewStore(b.db)
	if c.Scenario == "signups" {
		return b.runSignups(ctx)
	}
	return b.runDebits(ctx)
}

// writeScripts writes the pgbench scripts of the captured statements (see
// pgbenchScript), <name>-simple.sql and <name>-prepared.sql.
func (b *bench) writeScripts(stmts []captured, name, header string, markers []*marker) error {
	for _, mode := range []string{"simple", "prepared"} {
		s, err := pgbenchScript(stmts, header, markers, mode == "prepared")
		if err == nil {
			err = os.WriteFile(b.script(name, mode), []byte(s), 0o644)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (b *bench) script(name, mode string) string { return filepath.Join(b.dir, name+"-"+mode+".sql") }

// measure runs op on a quiet machine with pg_stat_statements reset, and fills
// in the CPU of the service (pid; none for 0: /proc/0 does not exist), of
// PostgreSQL, of the client (this process, unless op measured its own:
// pgbench's) and of the others, the statements PostgreSQL ran and the peak RSS.
func (b *bench) measure(ctx context.Context, pid int, what string, op func() (result, error)) (result, error) {
	busy := waitQuiet(b.MaxBusy, b.LoadWait)
	logf("%s (other processes at %.2f cores)", what, busy)
	if _, err := b.db.ExecContext(ctx, "SELECT pg_stat_statements_reset()"); err != nil {
		return result{}, err
	}
	cpu := func() (svc, pg, self, all time.Duration) {
		return procCPU(pid, false), treeCPU(b.pgRoot), selfCPU(), busyCPU()
	}
	backends := len(children(b.pgRoot))
	svc0, pg0, self0, all0 := cpu()
	t0 := time.Now()
	r, err := op()
	// A closed connection's backend is counted in the postmaster's CPU
	// only once it has exited and been reaped: wait for pgbench's to go.
	for deadline := time.Now().Add(10 * time.Second); len(children(b.pgRoot)) > backends && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	wall := time.Since(t0)
	svc1, pg1, self1, all1 := cpu()
	if err != nil {
		return r, err
	}
	r.ServiceCPU, r.PostgresCPU, r.PeakRSS = svc1-svc0, pg1-pg0, peakRSS(pid)
	r.ClientCPU = cmp.Or(r.ClientCPU, self1-self0)
	r.OtherCores = (all1 - all0 - (svc1 - svc0) - (pg1 - pg0) - (self1 - self0)).Seconds() / wall.Seconds()
	err = b.db.QueryRowContext(ctx, `SELECT COALESCE(sum(calls), 0) FROM pg_stat_statements
		WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND query NOT LIKE '%pg_stat_statements%'`).
		Scan(&r.Statements)
	return r, err
}

// rows measures the service under load(n, run "warm" or "run"), warmed up
// first (20 requests per client; the first run profiled, with -profile;
// every answer must be want), then pgbench running script from as many
// clients, -M prepared and, with -simple, -M simple. tag names their files.
func (b *bench) rows(ctx context.Context, svc *service, name string, clients, want int, script, tag string,
	load func(n int, run string) (result, error)) ([]result, error) {
	if _, err := load(20*clients, "warm"); err != nil {
		return nil, err
	}
	modes := []string{"", "prepared", "simple"}
	if !b.Simple {
		modes = modes[:2]
	}
	var rs []result
	for _, mode := range modes {
		pid, what, op := 0, "pgbench -M "+mode, func() (result, error) {
			return b.pgbench(ctx, clients, mode, b.script(script, mode), tag+"-"+mode)
		}
		if mode == "" {
			pid, what, op = svc.pid, "service", func() (result, error) {
				var prof sync.WaitGroup
				defer prof.Wait()
				if url := svc.pprof; url != "" {
					svc.pprof = "" // the first run only
					prof.Go(func() {
						if err := b.profile(ctx, url); err != nil {
							logf("profile: %v", err)
						}
					})
				}
				return load(b.Requests, "run")
			}
		}
		r, err := b.measure(ctx, pid, what, op)
		if err != nil {
			return nil, err
		}
		if err := topStatements(ctx, b.db, filepath.Join(b.dir, "statements-"+tag+"-"+cmp.Or(mode, "service")+".txt")); err != nil {
			return nil, err
		}
		if mode == "" && r.Statuses[want] != b.Requests {
			return nil, fmt.Errorf("%s: answers by status %v, want %d × %d", name, r.Statuses, b.Requests, want)
		}
		r.Name, r.Clients, r.mode, r.What = name, clients, mode, pgbenchRun[mode]
		rs = append(rs, r)
	}
	return rs, nil
}

// report prints the report and keeps it as report-<scenario>.md.
func (b *bench) report(scenario, text string) error {
	fmt.Print(text)
	return os.WriteFile(filepath.Join(b.dir, "report-"+scenario+".md"), []byte(text), 0o644)
}

// process is the webhook binary or the minimal server.
type process struct {
	pid  int
	stop func() // SIGTERM, SIGKILL 20 s later; it waits until the process is gone
}

// startProcess starts name through pglocal.StartProcess (stopped by the
// kernel if the benchmark dies) and waits up to 30 s until GET ready answers 2xx.
func startProcess(ctx context.Context, ready string, env []string, out io.Writer, name string, args ...string) (process, error) {
	cmd := exec.Command(name, args...)
	cmd.Env, cmd.Stdout, cmd.Stderr = append(os.Environ(), env...), out, out
	proc, err := pglocal.StartProcess(cmd, syscall.SIGTERM)
	if err != nil {
		return process{}, err
	}
	p := process{pid: cmd.Process.Pid, stop: func() { _ = proc.Stop(syscall.SIGTERM, 20*time.Second) }}
	for deadline := time.Now().Add(30 * time.Second); ; {
		if resp, err := http.Get(ready); err == nil {
			resp.Body.Close()
			if resp.StatusCode/100 == 2 {
				return p, nil
			}
		}
		select {
		case <-proc.Exited():
			return p, errors.New("it exited before it was ready")
		case <-time.After(100 * time.Millisecond):
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			p.stop()
			return p, cmp.Or(ctx.Err(), errors.New("it was not ready within 30 s"))
		}
	}
}

// freeAddrs picks n free loopback addresses, all different.
func freeAddrs(n int) ([]string, error) {
	addrs := make([]string, n)
	for i := range addrs {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close() // held until all are picked, so they differ
		addrs[i] = l.Addr().String()
	}
	return addrs, nil
}

// service is the webhook binary, serving the webhook and the credits API.
type service struct {
	process
	api, key     string // the credits API's URL and an admin key for it
	hook, secret string // the webhook's URL and its signing secret
	pprof        string // the CPU profile's URL, with -profile, until taken
}

// startService starts the service; with -hold it returns nil once
// interrupted instead, PostgreSQL kept for investigation by hand meanwhile.
func (b *bench) startService(ctx context.Context, script string) (*service, error) {
	if b.Hold {
		logf("holding the database until interrupted: psql %s; pgbench script %s", b.url, script)
		<-ctx.Done()
		return nil, nil
	}
	addr, err := freeAddrs(4) // webhook, metrics, API, pprof
	if err != nil {
		return nil, err
	}
	s := &service{api: "http://" + addr[2], key: rand.Text() + rand.Text(), // keys have 32 characters or more
		hook: "http://" + addr[0] + "/api/webhooks/clerk", secret: "whsec_" + base64.StdEncoding.EncodeToString([]byte(rand.Text()))}
	env := []string{"DATABASE_URL=" + b.url, "CLERK_WEBHOOK_SIGNING_SECRET=" + s.secret, "CREDITS_API_KEYS=bench:admin:" + s.key,
		"HTTP_ADDR=" + addr[0], "METRICS_ADDR=" + addr[1], "API_ADDR=" + addr[2], "LOG_LEVEL=warn"}
	if b.Profile {
		s.pprof = "http://" + addr[3] + "/debug/pprof/profile?seconds=5"
		env = append(env, "PPROF_ADDR="+addr[3])
	}
	logFile, err := os.Create(filepath.Join(b.dir, "webhook.log"))
	if err != nil {
		return nil, err
	}
	defer logFile.Close() // the service writes through its own descriptor
	env = append(env, strings.Fields(b.WebhookEnv)...)
	if s.process, err = startProcess(ctx, "http://"+addr[0]+"/readyz", env, logFile, b.serviceBin); err != nil {
		return nil, fmt.Errorf("the service: %w; see %s", err, logFile.Name())
	}
	return s, nil
}

// topStatements writes what PostgreSQL spent its time on in the last run.
func topStatements(ctx context.Context, db *bun.DB, file string) error {
	var text string
	if err := db.QueryRowContext(ctx, `SELECT E'calls\tplans\tplan ms\texec ms\tstatement\n' || COALESCE(string_agg(
		format(E'%s\t%s\t%s\t%s\t%s\n', calls, plans, round(total_plan_time::numeric, 1), round(total_exec_time::numeric, 1),
			left(regexp_replace(query, '\s+', ' ', 'g'), 100)), '' ORDER BY total_plan_time + total_exec_time DESC), '')
		FROM (SELECT * FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
			ORDER BY total_plan_time + total_exec_time DESC LIMIT 15) s`).Scan(&text); err != nil {
		return err
	}
	return os.WriteFile(file, []byte(text), 0o644)
}

// profile takes a 5-second CPU profile of the service under load and keeps
// it, and its top entries, as cpu.pprof and profile.txt.
func (b *bench) profile(ctx context.Context, url string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	prof, err := io.ReadAll(resp.Body)
	file := filepath.Join(b.dir, "cpu.pprof")
	if err == nil {
		err = os.WriteFile(file, prof, 0o644)
	}
	if err != nil {
		return err
	}
	args := []string{"tool", "pprof", "-top", "-nodecount=40", "-output", filepath.Join(b.dir, "profile.txt"), b.serviceBin, file}
	if out, err := exec.CommandContext(ctx, "go", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("go tool pprof: %w: %s", err, out)
	}
	return nil
}
