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

// bench is what both scenarios run with: the settings, the service's binary,
// a migrated database on a local PostgreSQL with pg_stat_statements, and the
// capture on the store's connections.
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
	if b.dir == "" {
		d, err := os.MkdirTemp("", "creditgate-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		b.dir = d
	} else if err := os.MkdirAll(b.dir, 0o755); err != nil {
		return err
	}
	// pglocal runs the server as postgres when root: it must write there.
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
		build := exec.CommandContext(ctx, "go", append(args, "github.com/creditgate/creditgate/cmd/webhook")...)
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("go build ./cmd/webhook: %w", err)
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
	if err != nil {
		return err
	}
	line, _, _ := strings.Cut(string(pidFile), "\n")
	if b.pgRoot, err = strconv.Atoi(strings.TrimSpace(line)); err != nil {
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
// pgbenchScript), <name>-simple.sql and <name>-prepared.sql, and returns
// their paths by -M mode.
func (b *bench) writeScripts(stmts []captured, name, header string, markers []*marker) (map[string]string, error) {
	files := map[string]string{}
	for _, mode := range []string{"simple", "prepared"} {
		s, err := pgbenchScript(stmts, header, markers, mode == "prepared")
		if err != nil {
			return nil, err
		}
		files[mode] = filepath.Join(b.dir, name+"-"+mode+".sql")
		if err := os.WriteFile(files[mode], []byte(s), 0o644); err != nil {
			return nil, err
		}
	}
	return files, nil
}

// measure runs op on a quiet machine with pg_stat_statements reset, and
// fills in the CPU of the service (pid, if not 0), of PostgreSQL, of the
// client (this process, which drives the service's load, unless op measured
// its own: pgbench's) and of the other processes, the statements PostgreSQL
// ran and the service's peak RSS.
func (b *bench) measure(ctx context.Context, pid int, what string, op func() (result, error)) (result, error) {
	busy := waitQuiet(b.MaxBusy, b.LoadWait)
	logf("%s (other processes at %.2f cores)", what, busy)
	if _, err := b.db.ExecContext(ctx, "SELECT pg_stat_statements_reset()"); err != nil {
		return result{}, err
	}
	cpu := func() (svc, pg, self, all time.Duration) {
		if pid != 0 {
			svc, _ = procCPU(pid, false)
		}
		pg, _ = treeCPU(b.pgRoot)
		all, _ = busyCPU()
		return svc, pg, selfCPU(), all
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
	r.ServiceCPU, r.PostgresCPU = svc1-svc0, pg1-pg0
	if r.ClientCPU == 0 {
		r.ClientCPU = self1 - self0
	}
	if err := b.db.QueryRowContext(ctx, `SELECT COALESCE(sum(calls), 0) FROM pg_stat_statements
		WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND query NOT LIKE '%pg_stat_statements%'`).
		Scan(&r.Statements); err != nil {
		return r, err
	}
	r.OtherCores = (all1 - all0 - (svc1 - svc0) - (pg1 - pg0) - (self1 - self0)).Seconds() / wall.Seconds()
	if pid != 0 {
		r.PeakRSS, _ = peakRSS(pid)
	}
	return r, nil
}

// rows measures the service under load, warmed up first (20 requests per
// client, unmeasured; the first service run profiled alongside, with
// -profile; every answer must be want), then pgbench running the scripts
// from as many clients, -M prepared and, with -simple, -M simple: the rows
// named name. load(n, run) sends n requests, run "warm" or "run"; tag names
// the files of the run (pgbench's logs, the service's statements).
func (b *bench) rows(ctx context.Context, svc *service, name string, clients, want int, scripts map[string]string, tag string,
	load func(n int, run string) (result, error)) ([]result, error) {
	if _, err := load(20*clients, "warm"); err != nil {
		return nil, err
	}
	r, err := b.measure(ctx, svc.cmd.Process.Pid, "service", func() (result, error) {
		var prof sync.WaitGroup
		defer prof.Wait()
		if svc.pprof != "" && !svc.profiled {
			svc.profiled = true
			prof.Go(func() {
				if err := profileService(ctx, svc, b.dir); err != nil {
					logf("profile: %v", err)
				}
			})
		}
		return load(b.Requests, "run")
	})
	if err != nil {
		return nil, err
	}
	if err := topStatements(ctx, b.db, filepath.Join(b.dir, "statements-"+tag+"-service.txt")); err != nil {
		return nil, err
	}
	if r.Statuses[want] != b.Requests {
		return nil, fmt.Errorf("%s: answers by status %v, want %d × %d", name, r.Statuses, b.Requests, want)
	}
	r.Name, r.Clients = name, clients
	rs := []result{r}
	for _, mode := range []string{"prepared", "simple"} {
		if mode == "simple" && !b.Simple {
			break
		}
		r, err := b.measure(ctx, 0, "pgbench -M "+mode, func() (result, error) {
			return b.pgbench(ctx, clients, mode, scripts[mode], tag+"-"+mode)
		})
		if err != nil {
			return nil, err
		}
		if err := topStatements(ctx, b.db, filepath.Join(b.dir, "statements-"+tag+"-"+mode+".txt")); err != nil {
			return nil, err
		}
		r.Name, r.Clients, r.mode, r.What = name, clients, mode, pgbenchRun[mode]
		rs = append(rs, r)
	}
	return rs, nil
}

// report prints the report and, with -out, keeps it as report-<scenario>.md.
func (b *bench) report(scenario, text string) error {
	fmt.Print(text)
	if b.OutDir == "" {
		return nil
	}
	return os.WriteFile(filepath.Join(b.dir, "report-"+scenario+".md"), []byte(text), 0o644)
}

// process is a server the benchmark measures: the webhook binary or the
// minimal server.
type process struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// startProcess starts cmd, which the kernel stops if the benchmark dies,
// and waits up to 30 s until GET ready answers 2xx.
func startProcess(ctx context.Context, cmd *exec.Cmd, ready string) (*process, error) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	for deadline := time.Now().Add(30 * time.Second); ; {
		if resp, err := http.Get(ready); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode/100 == 2 {
				return p, nil
			}
		}
		select {
		case <-p.done:
			return nil, errors.New("it exited before it was ready")
		case <-ctx.Done():
			p.stop()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.stop()
			return nil, errors.New("it was not ready within 30 s")
		}
	}
}

func (p *process) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
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
	*process
	api, key     string // the credits API's URL and an admin key for it
	hook, secret string // the webhook's URL and its signing secret
	pprof        string // the CPU profile's URL, with -profile
	profiled     bool   // once the first run has been
}

func (b *bench) startService(ctx context.Context) (*service, error) {
	addr, err := freeAddrs(4) // webhook, metrics, API, pprof
	if err != nil {
		return nil, err
	}
	secret, key := make([]byte, 24), make([]byte, 32)
	_, _ = rand.Read(secret)
	_, _ = rand.Read(key)
	s := &service{api: "http://" + addr[2], key: base64.RawURLEncoding.EncodeToString(key),
		hook: "http://" + addr[0] + "/api/webhooks/clerk", secret: "whsec_" + base64.StdEncoding.EncodeToString(secret)}
	cmd := exec.Command(b.serviceBin)
	cmd.Env = append(os.Environ(), "DATABASE_URL="+b.url, "CLERK_WEBHOOK_SIGNING_SECRET="+s.secret,
		"CREDITS_API_KEYS=bench:admin:"+s.key, "HTTP_ADDR="+addr[0], "METRICS_ADDR="+addr[1], "API_ADDR="+addr[2], "LOG_LEVEL=warn")
	if b.Profile {
		s.pprof = "http://" + addr[3] + "/debug/pprof/profile"
		cmd.Env = append(cmd.Env, "PPROF_ADDR="+addr[3])
	}
	cmd.Env = append(cmd.Env, strings.Fields(b.WebhookEnv)...)
	logFile, err := os.Create(filepath.Join(b.dir, "webhook.log"))
	if err != nil {
		return nil, err
	}
	defer logFile.Close() // the service writes through its own descriptor
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if s.process, err = startProcess(ctx, cmd, "http://"+addr[0]+"/readyz"); err != nil {
		return nil, fmt.Errorf("the service: %w; see %s", err, logFile.Name())
	}
	return s, nil
}

// topStatements writes what PostgreSQL spent its time on in the last run,
// by statement: calls, planning and execution time.
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

// profileService takes a 5-second CPU profile of the service under load
// and writes it, and its top entries, to dir.
func profileService(ctx context.Context, svc *service, dir string) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, svc.pprof+"?seconds=5", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	prof, err := io.ReadAll(resp.Body)
	file := filepath.Join(dir, "cpu.pprof")
	if err == nil {
		err = os.WriteFile(file, prof, 0o644)
	}
	if err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-nodecount=40", svc.cmd.Path, file).CombinedOutput()
	if err != nil {
		return fmt.Errorf("go tool pprof: %w: %s", err, out)
	}
	return os.WriteFile(filepath.Join(dir, "profile.txt"), out, 0o644)
}
