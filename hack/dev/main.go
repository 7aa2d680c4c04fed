// Command dev runs creditgate for real on this machine: a local PostgreSQL it
// starts itself, the migrations, and the webhook binary with a generated
// development signing secret. `make dev` builds it and the webhook into
// .dev/bin and execs it; `make dev-reset` runs `dev reset`.
//
// Everything it starts stops with it: on SIGINT, SIGTERM or SIGHUP it stops
// the webhook, then PostgreSQL, and exits; the kernel stops both should dev
// itself be killed, and dev stops when make is signalled or dies. The next
// run, owning the state directory through a lock, stops whatever a killed
// run still left. It refuses ports that something else listens on rather
// than use (and migrate) a server it did not start.
package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
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
	"syscall"
	"time"

	"github.com/creditgate/creditgate/pkg/pglocal"
	"github.com/creditgate/creditgate/pkg/postgres"
)

const usage = `usage: dev          run PostgreSQL, the migrations and the webhook until SIGINT or SIGTERM
       dev reset    stop a running dev and delete its state (the database too)

Environment:
  DEV_DIR       state directory: cluster, logs, signing secret, binaries (default .dev)
  DEV_PG_PORT   PostgreSQL port on 127.0.0.1 (default 54329)
  HTTP_ADDR     webhook listener (default 127.0.0.1:8080)
  METRICS_ADDR  Prometheus listener (default 127.0.0.1:9090)
  API_ADDR      credits API listener (default 127.0.0.1:8081)
`

func main() {
	stopWithParent()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	var err error
	switch args := os.Args[1:]; {
	case len(args) == 0:
		err = run(ctx, stop, os.Getenv, os.Stdout)
	case len(args) == 1 && args[0] == "reset":
		err = reset(ctx, os.Getenv, os.Stdout)
	default:
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "dev:", err)
		os.Exit(1)
	}
}

// config is where dev keeps its state and which ports it takes.
type config struct {
	dir         string // DEV_DIR, absolute
	pgDir       string // the cluster (pglocal's Dir)
	pgPort      int
	httpAddr    string
	metricsAddr string
	apiAddr     string
}

// webhook is the webhook binary, which make dev builds.
func (c config) webhook() string { return filepath.Join(c.dir, "bin", "webhook") }

// port is one of dev's listeners: the variable that moves it, its value, its
// address and another value for the variable, for the advice when it is taken.
type port struct{ name, value, addr, example string }

func (c config) ports() []port {
	pg := strconv.Itoa(c.pgPort)
	return []port{
		{"DEV_PG_PORT", pg, net.JoinHostPort("127.0.0.1", pg), "54339"},
		{"HTTP_ADDR", c.httpAddr, c.httpAddr, "127.0.0.1:8088"},
		{"METRICS_ADDR", c.metricsAddr, c.metricsAddr, "127.0.0.1:9098"},
		{"API_ADDR", c.apiAddr, c.apiAddr, "127.0.0.1:8089"},
	}
}

// load reads the configuration; relative paths are taken from the working
// directory, which make sets to the checkout.
func load(getenv func(string) string) (config, error) {
	c := config{
		httpAddr:    cmp.Or(getenv("HTTP_ADDR"), "127.0.0.1:8080"),
		metricsAddr: cmp.Or(getenv("METRICS_ADDR"), "127.0.0.1:9090"),
		apiAddr:     cmp.Or(getenv("API_ADDR"), "127.0.0.1:8081"),
	}
	dir, err := filepath.Abs(cmp.Or(getenv("DEV_DIR"), ".dev"))
	if err != nil {
		return c, fmt.Errorf("DEV_DIR: %w", err)
	}
	c.dir, c.pgDir = dir, clusterDir(dir)
	port := cmp.Or(getenv("DEV_PG_PORT"), "54329")
	if c.pgPort, err = strconv.Atoi(port); err != nil || c.pgPort < 1 || c.pgPort > 65535 {
		return c, fmt.Errorf("DEV_PG_PORT=%q: want a port number", port)
	}
	for _, p := range c.ports()[1:] {
		if _, _, err := net.SplitHostPort(p.addr); err != nil {
			return c, fmt.Errorf("%s=%q: want host:port: %w", p.name, p.addr, err)
		}
	}
	return c, nil
}

// clusterDir is dir/pg, except as root when the postgres user, which runs the
// server, cannot reach dir (a checkout under /root): then a directory of
// /var/tmp named after dir, so that each checkout still has its own.
func clusterDir(dir string) string {
	in := filepath.Join(dir, "pg")
	if os.Geteuid() != 0 {
		return in
	}
	// Without a postgres user, pglocal.Start says what is missing.
	if u, err := pglocal.PostgresUser("PostgreSQL"); err != nil || reachable(dir, int(u.Uid), int(u.Gid)) {
		return in
	}
	sum := sha256.Sum256([]byte(dir))
	return filepath.Join("/var/tmp", fmt.Sprintf("creditgate-dev-%x", sum[:6]))
}

// reachable reports whether uid (primary group gid) may search every existing
// ancestor of dir, from the mode bits.
func reachable(dir string, uid, gid int) bool {
	for d := dir; ; d = filepath.Dir(d) {
		if fi, err := os.Stat(d); err == nil {
			st := fi.Sys().(*syscall.Stat_t)
			search := os.FileMode(0o001) // others'
			switch {
			case int(st.Uid) == uid:
				search = 0o100
			case int(st.Gid) == gid:
				search = 0o010
			}
			if fi.Mode()&search == 0 {
				return false
			}
		}
		if d == filepath.Dir(d) {
			return true
		}
	}
}

func run(ctx context.Context, restoreSignals func(), getenv func(string) string, stdout io.Writer) (err error) {
	c, err := load(getenv)
	if err != nil {
		return err
	}
	if err := makeDir(c.dir); err != nil {
		return err
	}
	unlock, err := lock(c.dir)
	if err != nil {
		return err
	}
	defer unlock()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go watchParent(ctx, cancel)

	// Holding the lock, whatever still runs from this directory is left over
	// from a dev that was killed: stop it before looking at the ports.
	if err := stopLeftovers(ctx, c, stdout); err != nil {
		return err
	}
	// Refuse ports something else listens on: dev starts its own PostgreSQL
	// and would otherwise talk to (and migrate) whichever answers.
	for _, p := range c.ports() {
		l, err := net.Listen("tcp", p.addr)
		if err != nil {
			return portError(p)
		}
		l.Close()
	}
	bin := c.webhook()
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("no webhook binary (%w): run `make dev`, which builds it", err)
	}

	fmt.Fprintln(stdout, "starting PostgreSQL in", c.pgDir)
	if err := os.MkdirAll(c.pgDir, 0o700); err != nil {
		return err
	}
	pgLog := filepath.Join(c.dir, "postgres.log")
	pg, err := pglocal.Start(ctx, pglocal.Options{Dir: c.pgDir, Port: c.pgPort, Fsync: true, LogFile: pgLog, StopWithParent: true})
	if errors.Is(err, pglocal.ErrPortInUse) {
		return portError(c.ports()[0])
	} else if err != nil {
		return fmt.Errorf("start PostgreSQL (log: %s): %w", pgLog, err)
	}
	defer func() {
		_ = pg.Stop()
		fmt.Fprintln(stdout, "dev: PostgreSQL stopped")
	}()
	if err := pg.CreateDatabase(ctx, "creditgate", ""); err != nil && !strings.Contains(err.Error(), "already exists") {
		return err
	}
	dbURL := pg.URL("creditgate")
	db, err := postgres.Open(dbURL, postgres.Options{MaxConns: 2})
	if err != nil {
		return err
	}
	applied, err := postgres.Migrate(ctx, db, slog.New(slog.NewTextHandler(io.Discard, nil)))
	db.Close()
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "migrations applied now: %d\n", len(applied))

	secretFile := filepath.Join(c.dir, "signing-secret")
	secret, err := devSecret(secretFile)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, `
creditgate is starting on http://%[1]s (metrics on %[4]s/metrics)

  DATABASE_URL=%[2]s
  CLERK_WEBHOOK_SIGNING_SECRET=%[3]s   (a development secret, kept in %[5]s)

Send a signed Clerk user.created event (in another terminal):

  go run ./cmd/svixsend -url http://%[1]s/api/webhooks/clerk -secret %[3]s -user user_demo -email demo@example.com

Then look at the ledger:

  psql '%[2]s' -c 'SELECT clerk_id, email, available_credits FROM users'

Ctrl-C stops the service and PostgreSQL (data stays in %[6]s; make dev-reset deletes it).

`, c.httpAddr, dbURL, secret, c.metricsAddr, secretFile, c.pgDir)

	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "DATABASE_URL="+dbURL, "CLERK_WEBHOOK_SIGNING_SECRET="+secret,
		"LOG_FORMAT="+cmp.Or(getenv("LOG_FORMAT"), "text"))
	for _, p := range c.ports()[1:] {
		cmd.Env = append(cmd.Env, p.name+"="+p.value)
	}
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	// Its own process group: a Ctrl-C reaches dev, which stops the webhook
	// before PostgreSQL, rather than both at once.
	webhook, err := pglocal.StartProcess(cmd, syscall.SIGTERM)
	if err != nil {
		return fmt.Errorf("start webhook: %w", err)
	}
	defer func() {
		// The webhook drains for SHUTDOWN_TIMEOUT, 20 s by default.
		if stopErr := webhook.Stop(syscall.SIGTERM, 30*time.Second); stopErr != nil && err == nil {
			err = fmt.Errorf("stop webhook: %w", stopErr)
		}
		fmt.Fprintln(stdout, "dev: webhook stopped")
	}()

	poll := time.NewTicker(50 * time.Millisecond) // until the webhook is ready
	defer poll.Stop()
	for {
		select {
		case <-poll.C:
			if ready(ctx, "http://"+c.httpAddr+"/readyz") {
				fmt.Fprintf(stdout, "dev: ready: POST http://%s/api/webhooks/clerk (pid %d)\n", c.httpAddr, os.Getpid())
				poll.Stop()
			}
		case <-webhook.Exited():
			return fmt.Errorf("webhook exited: %v", webhook.Cmd.ProcessState)
		case <-ctx.Done():
			// A second signal now kills dev at once; the kernel then
			// stops the webhook and PostgreSQL (their parent-death signal).
			restoreSignals()
			fmt.Fprintf(stdout, "dev: stopping (%v)\n", context.Cause(ctx))
			return nil
		}
	}
}

// ready reports whether url answers 200 within a second.
func ready(ctx context.Context, url string) bool {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := (&http.Client{Timeout: time.Second}).Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// portError names the variable that moves the port, with an example, and
// what listens on it when /proc tells.
func portError(p port) error {
	holder := "another PostgreSQL, or another make dev?"
	_, ps, _ := net.SplitHostPort(p.addr)
	if n, err := strconv.Atoi(ps); err == nil {
		holder = cmp.Or(listener(n), holder)
	}
	return fmt.Errorf("%s=%s is in use by a program make dev did not start (%s): stop it, or choose a free port, e.g. `%s=%s make dev`",
		p.name, p.value, holder, p.name, p.example)
}

// stopLeftovers stops a PostgreSQL on this checkout's cluster and webhooks
// run from its binary that a killed dev left running.
func stopLeftovers(ctx context.Context, c config, stdout io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	pid, err := pglocal.StopLeftover(ctx, c.pgDir)
	if err != nil {
		return fmt.Errorf("stop the PostgreSQL an earlier make dev left running: %w", err)
	}
	if pid != 0 {
		fmt.Fprintf(stdout, "dev: stopped PostgreSQL (pid %d) left running by an earlier make dev\n", pid)
	}
	if pids := stopStrays(ctx, c.webhook()); len(pids) > 0 {
		fmt.Fprintf(stdout, "dev: stopped webhook %v left running by an earlier make dev\n", pids)
	}
	return nil
}

// reset stops a running dev (and whatever a killed one left) and deletes the
// state directory and the cluster.
func reset(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	c, err := load(getenv)
	if err != nil {
		return err
	}
	if _, err := os.Stat(c.dir); errors.Is(err, os.ErrNotExist) {
		fmt.Fprintln(stdout, "dev reset: nothing in", c.dir)
		return nil
	}
	if _, err := os.Stat(filepath.Join(c.dir, "lock")); err != nil {
		return fmt.Errorf("%s holds no make dev lock file: not deleting it", c.dir)
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	unlock, err := lockWait(ctx, c.dir, stdout)
	if err != nil {
		return err
	}
	defer unlock()
	if err := stopLeftovers(ctx, c, stdout); err != nil {
		return err
	}
	for _, d := range []string{c.pgDir, c.dir} {
		if err := os.RemoveAll(d); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "dev reset: removed", d)
	}
	return nil
}

// makeDir creates dir with a .gitignore that ignores all of it.
func makeDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, ".gitignore"), []byte("*\n"), 0o644)
}

// lock takes dir's lock for this process's life (the kernel drops it when
// the process dies, however), or names the dev that holds it.
func lock(dir string) (unlock func(), err error) {
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		b, _ := io.ReadAll(f)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, &busyError{dir: dir, pid: strings.TrimSpace(string(b))}
		}
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return func() { f.Close() }, nil
}

// busyError is another dev holding the lock.
type busyError struct{ dir, pid string }

func (e *busyError) Error() string {
	return fmt.Sprintf("make dev is already running for %s (pid %s): stop it first (or `make dev-reset`)", e.dir, e.pid)
}

// lockWait takes dir's lock, stopping (SIGTERM) the dev that holds it first.
func lockWait(ctx context.Context, dir string, stdout io.Writer) (func(), error) {
	for signalled := false; ; time.Sleep(50 * time.Millisecond) {
		unlock, err := lock(dir)
		busy, ok := errors.AsType[*busyError](err)
		if !ok {
			return unlock, err
		}
		if pid, perr := strconv.Atoi(busy.pid); perr == nil && !signalled {
			fmt.Fprintf(stdout, "dev reset: stopping make dev (pid %d)\n", pid)
			_ = syscall.Kill(pid, syscall.SIGTERM)
			signalled = true
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w (still held after %v)", err, ctx.Err())
		}
	}
}

// devSecret returns the development signing secret, creating it once.
func devSecret(path string) (string, error) {
	if b, err := os.ReadFile(path); err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	key := make([]byte, 24)
	if _, err := rand.Read(key); err != nil {
		return "", err
	}
	s := "whsec_" + base64.StdEncoding.EncodeToString(key)
	return s, os.WriteFile(path, []byte(s+"\n"), 0o600)
}
