//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creditgate/creditgate/pkg/pglocal"
)

// devRun is one dev state directory on free ports.
type devRun struct {
	dir, pgDir            string
	pgPort                int
	httpAddr, metricsAddr string
	apiAddr               string
}

func newRun(t *testing.T) devRun {
	t.Helper()
	r := devRun{dir: filepath.Join(t.TempDir(), "dev"), pgPort: freePort(t)}
	r.pgDir = clusterDir(r.dir)
	r.httpAddr = "127.0.0.1:" + strconv.Itoa(freePort(t))
	r.metricsAddr = "127.0.0.1:" + strconv.Itoa(freePort(t))
	r.apiAddr = "127.0.0.1:" + strconv.Itoa(freePort(t))
	t.Cleanup(func() {
		// As root the cluster may live outside the test's directory.
		if err := os.RemoveAll(r.pgDir); err != nil {
			t.Error(err)
		}
	})
	return r
}

func (r devRun) getenv(k string) string {
	switch k {
	case "DEV_DIR":
		return r.dir
	case "DEV_PG_PORT":
		return strconv.Itoa(r.pgPort)
	case "HTTP_ADDR":
		return r.httpAddr
	case "METRICS_ADDR":
		return r.metricsAddr
	case "API_ADDR":
		return r.apiAddr
	}
	return ""
}

// env is the environment of a make or dev process for r; an outer make's
// variables (make test) are left out.
func (r devRun) env() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES":
			continue
		}
		env = append(env, kv)
	}
	for _, k := range []string{"DEV_DIR", "DEV_PG_PORT", "HTTP_ADDR", "METRICS_ADDR", "API_ADDR"} {
		env = append(env, k+"="+r.getenv(k))
	}
	return env
}

// leftovers lists the processes of r still running: dev and the webhook (run
// from r.dir/bin), and the postmaster and its children (in r's cluster).
func (r devRun) leftovers() []process {
	data := filepath.Join(r.pgDir, "data")
	var left []process
	for _, p := range processes() {
		mine := strings.HasPrefix(p.exe, r.dir+string(filepath.Separator)) || p.cwd == data
		for i := 0; i+1 < len(p.args); i++ {
			mine = mine || p.args[i] == "-D" && p.args[i+1] == data
		}
		if mine {
			left = append(left, p)
		}
	}
	return left
}

// checkStopped fails t if a process of r runs or one of its ports is taken.
func (r devRun) checkStopped(t *testing.T) {
	t.Helper()
	r.checkNothingRuns(t)
	for _, addr := range []string{net.JoinHostPort("127.0.0.1", strconv.Itoa(r.pgPort)), r.httpAddr, r.metricsAddr} {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Errorf("%s still taken: %v", addr, err)
			continue
		}
		l.Close()
	}
}

// checkNothingRuns fails t if a process of r runs.
func (r devRun) checkNothingRuns(t *testing.T) {
	t.Helper()
	for _, p := range r.leftovers() {
		t.Errorf("left running: pid %d %q (exe %s)", p.pid, p.args, p.exe)
	}
}

// waitStopped waits until nothing of r runs, for stops the kernel carries out
// (parent-death signals) after the process the test waits for has gone.
func (r devRun) waitStopped(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for len(r.leftovers()) > 0 && time.Now().Before(deadline) {
		<-tick.C
	}
	r.checkStopped(t)
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// output collects a process's output and reports dev's readiness line.
type output struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	ready chan int // dev's pid, once
	sent  bool
}

var readyLine = regexp.MustCompile(`dev: ready: .* \(pid (\d+)\)`)

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.buf.Write(p)
	if m := readyLine.FindSubmatch(o.buf.Bytes()); m != nil && !o.sent {
		pid, _ := strconv.Atoi(string(m[1]))
		o.sent = true
		o.ready <- pid
	}
	return len(p), nil
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

// makeDev is one `make dev` for r, in its own process group.
type makeDev struct {
	cmd    *exec.Cmd
	out    *output
	devPID int
	done   chan struct{} // closed when make has exited
	err    error         // make's exit, once done
}

func startMakeDev(t *testing.T, r devRun) *makeDev {
	t.Helper()
	m := &makeDev{out: &output{ready: make(chan int, 1)}, done: make(chan struct{})}
	m.cmd = exec.Command("make", "--no-print-directory", "dev")
	m.cmd.Dir = repoRoot(t)
	m.cmd.Env = r.env()
	m.cmd.Stdout, m.cmd.Stderr = m.out, m.out
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	m.cmd.WaitDelay = 10 * time.Second // a child left holding the output must not hang Wait
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { m.err = m.cmd.Wait(); close(m.done) }()
	t.Cleanup(func() {
		// A test that failed half-way: make passes SIGTERM on to dev.
		select {
		case <-m.done:
		default:
			_ = m.cmd.Process.Signal(syscall.SIGTERM)
			m.wait(t)
		}
	})
	return m
}

// waitReady waits for dev's readiness line (the first run compiles dev and
// the webhook).
func (m *makeDev) waitReady(t *testing.T) {
	t.Helper()
	timeout := time.NewTimer(5 * time.Minute)
	defer timeout.Stop()
	select {
	case m.devPID = <-m.out.ready:
	case <-m.done:
		t.Fatalf("make dev exited before it was ready: %v\n%s", m.err, m.out)
	case <-timeout.C:
		_ = syscall.Kill(-m.cmd.Process.Pid, syscall.SIGKILL)
		t.Fatalf("make dev not ready within 5m:\n%s", m.out)
	}
}

// wait waits for make to exit.
func (m *makeDev) wait(t *testing.T) error {
	t.Helper()
	timeout := time.NewTimer(2 * time.Minute)
	defer timeout.Stop()
	select {
	case <-m.done:
		return m.err
	case <-timeout.C:
		_ = syscall.Kill(-m.cmd.Process.Pid, syscall.SIGKILL)
		<-m.done
		t.Errorf("make dev did not exit within 2m of the signal:\n%s", m.out)
		return m.err
	}
}

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return root
}

func needTools(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("skipping make dev runs in -short mode")
	}
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("no make")
	}
	if _, err := pglocal.FindBin(); err != nil {
		t.Skip(err)
	}
}

// TestMakeDev runs `make dev` again and again on one state directory: it
// refuses a PostgreSQL it did not start on its port; it stops on each signal
// a developer or the machine sends, three SIGTERMs to make in a row first
// (issue 10's acceptance), and after each nothing it started runs or holds a
// port; it stops what a killed run left; `dev reset` stops it and deletes its
// state. Only the first run compiles (into the state directory).
func TestMakeDev(t *testing.T) {
	needTools(t)
	// make must not inherit an ignored SIGINT (a shell's background job
	// does): exec resets a handled signal to its default, not an ignored one.
	if signal.Ignored(syscall.SIGINT) {
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGINT)
		defer signal.Stop(c)
	}
	r := newRun(t)
	ctx := context.Background()

	// Each step needs the one before: stop at the first failure.
	step := func(name string, f func(t *testing.T)) {
		if !t.Run(name, f) {
			t.FailNow()
		}
	}
	step("refuses a foreign PostgreSQL", func(t *testing.T) {
		foreign, err := pglocal.Start(ctx, pglocal.Options{Port: r.pgPort})
		if err != nil {
			t.Fatal(err)
		}
		defer foreign.Close()
		m := startMakeDev(t, r)
		if err := m.wait(t); err == nil {
			t.Fatalf("make dev succeeded with a foreign PostgreSQL on its port:\n%s", m.out)
		}
		if want := "DEV_PG_PORT=" + strconv.Itoa(r.pgPort); !strings.Contains(m.out.String(), want) {
			t.Errorf("the refusal does not name %s:\n%s", want, m.out)
		}
		if err := foreign.Psql(ctx, "postgres", `DO $$ BEGIN IF EXISTS (SELECT FROM pg_database WHERE datname = 'creditgate') THEN RAISE 'creditgate database created'; END IF; END $$`); err != nil {
			t.Error(err)
		}
		if _, err := os.Stat(r.pgDir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("cluster directory %s created: %v", r.pgDir, err)
		}
		r.checkNothingRuns(t)
	})

	stops := []struct {
		name string
		stop func(m *makeDev) error
		// async: the kernel, not the process the test waits for, stops the
		// rest (parent-death signals), so wait for that.
		async bool
	}{
		{name: "SIGTERM to make 1", stop: func(m *makeDev) error { return m.cmd.Process.Signal(syscall.SIGTERM) }},
		{name: "SIGTERM to make 2", stop: func(m *makeDev) error { return m.cmd.Process.Signal(syscall.SIGTERM) }},
		{name: "SIGTERM to make 3", stop: func(m *makeDev) error { return m.cmd.Process.Signal(syscall.SIGTERM) }},
		{name: "SIGINT to make alone", stop: func(m *makeDev) error { return m.cmd.Process.Signal(syscall.SIGINT) }},
		{name: "Ctrl-C (SIGINT to the process group)", stop: func(m *makeDev) error { return syscall.Kill(-m.cmd.Process.Pid, syscall.SIGINT) }},
		{name: "SIGTERM to dev", stop: func(m *makeDev) error { return syscall.Kill(m.devPID, syscall.SIGTERM) }},
		{name: "SIGHUP to the process group", stop: func(m *makeDev) error { return syscall.Kill(-m.cmd.Process.Pid, syscall.SIGHUP) }},
		{name: "SIGKILL to dev", stop: func(m *makeDev) error { return syscall.Kill(m.devPID, syscall.SIGKILL) }, async: true},
		{name: "SIGKILL to make", stop: func(m *makeDev) error { return m.cmd.Process.Kill() }, async: true},
	}
	for _, tt := range stops {
		step(tt.name, func(t *testing.T) {
			m := startMakeDev(t, r)
			m.waitReady(t)
			if n := len(r.leftovers()); n < 3 {
				t.Fatalf("found %d processes of the run, want dev, the webhook and PostgreSQL's: %v", n, r.leftovers())
			}
			if err := tt.stop(m); err != nil {
				t.Fatal(err)
			}
			_ = m.wait(t) // make exits non-zero: it dies of the signal
			if tt.async {
				r.waitStopped(t)
			} else {
				r.checkStopped(t)
			}
			if t.Failed() {
				t.Logf("output:\n%s", m.out)
			}
		})
	}

	step("stops what a killed run left", func(t *testing.T) {
		// As a killed dev could leave them, were it not for the kernel's
		// parent-death signals: its PostgreSQL, and a webhook run from its
		// binary holding HTTP_ADDR.
		left, err := pglocal.Start(ctx, pglocal.Options{Dir: r.pgDir, Port: r.pgPort})
		if err != nil {
			t.Fatal(err)
		}
		defer left.Stop()
		pidFile, err := os.ReadFile(filepath.Join(r.pgDir, "data", "postmaster.pid"))
		if err != nil {
			t.Fatal(err)
		}
		leftPID, _, _ := strings.Cut(string(pidFile), "\n")
		secret, err := os.ReadFile(filepath.Join(r.dir, "signing-secret"))
		if err != nil {
			t.Fatal(err)
		}
		var strayOut bytes.Buffer
		stray := exec.Command(filepath.Join(r.dir, "bin", "webhook"))
		stray.Env = append(r.env(), "DATABASE_URL="+left.URL("creditgate"),
			"CLERK_WEBHOOK_SIGNING_SECRET="+strings.TrimSpace(string(secret)),
			"HTTP_ADDR="+r.httpAddr, "METRICS_ADDR="+r.metricsAddr, "API_ADDR="+r.apiAddr)
		stray.Stdout, stray.Stderr = &strayOut, &strayOut
		if err := stray.Start(); err != nil {
			t.Fatal(err)
		}
		strayDone := make(chan struct{})
		go func() { _ = stray.Wait(); close(strayDone) }()
		defer func() { _ = stray.Process.Kill(); <-strayDone }()
		waitListening(t, r.httpAddr, strayDone)

		m := startMakeDev(t, r)
		m.waitReady(t)
		out := m.out.String()
		for _, want := range []string{
			"stopped PostgreSQL (pid " + leftPID + ") left running",
			"stopped webhook [" + strconv.Itoa(stray.Process.Pid) + "] left running",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q", want)
			}
		}
		if err := m.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		_ = m.wait(t)
		r.checkStopped(t)
		if t.Failed() {
			t.Logf("output:\n%s\nstray webhook:\n%s", m.out, &strayOut)
		}
	})

	step("dev reset stops it and deletes the state", func(t *testing.T) {
		m := startMakeDev(t, r)
		m.waitReady(t)
		cmd := exec.Command(filepath.Join(r.dir, "bin", "dev"), "reset")
		cmd.Env = r.env()
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("dev reset: %v\n%s", err, out)
		}
		if !strings.Contains(string(out), "stopping make dev (pid "+strconv.Itoa(m.devPID)+")") {
			t.Errorf("dev reset did not say it stopped make dev:\n%s", out)
		}
		_ = m.wait(t)
		r.checkStopped(t)
		for _, d := range []string{r.dir, r.pgDir} {
			if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s is still there (%v)", d, err)
			}
		}
	})
}

// waitListening waits until something accepts connections on addr, or
// exited is closed.
func waitListening(t *testing.T, addr string, exited <-chan struct{}) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listens on %s after a minute", addr)
		}
		select {
		case <-exited:
			t.Fatalf("the process to listen on %s exited", addr)
		case <-tick.C:
		}
	}
}

// TestRunRefusesPortsInUse runs dev in-process with something already
// listening on one of its ports: it must refuse before starting anything, with
// a message naming the variable that moves that port.
func TestRunRefusesPortsInUse(t *testing.T) {
	tests := []struct {
		name   string
		listen func(r devRun) string // the address to occupy
		want   string
	}{
		{name: "PostgreSQL port", listen: func(r devRun) string { return "127.0.0.1:" + strconv.Itoa(r.pgPort) }, want: "DEV_PG_PORT"},
		{name: "PostgreSQL port on every address", listen: func(r devRun) string { return "0.0.0.0:" + strconv.Itoa(r.pgPort) }, want: "DEV_PG_PORT"},
		{name: "webhook port", listen: func(r devRun) string { return r.httpAddr }, want: "HTTP_ADDR"},
		{name: "metrics port", listen: func(r devRun) string { return r.metricsAddr }, want: "METRICS_ADDR"},
		{name: "credits API port", listen: func(r devRun) string { return r.apiAddr }, want: "API_ADDR"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := newRun(t)
			l, err := net.Listen("tcp", tt.listen(r))
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			var out bytes.Buffer
			err = run(context.Background(), func() {}, r.getenv, &out)
			if err == nil || !strings.Contains(err.Error(), tt.want+"=") {
				t.Fatalf("run = %v, want a refusal naming %s", err, tt.want)
			}
			// The listener is this test: the refusal names it.
			if want := "pid " + strconv.Itoa(os.Getpid()) + ":"; !strings.Contains(err.Error(), want) {
				t.Errorf("run = %v, want it to name the listener (%s)", err, want)
			}
			if _, err := os.Stat(r.pgDir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("cluster directory created before the refusal: %v", err)
			}
		})
	}
}

// TestRunRefusesASecondDev runs dev in-process while the state directory's
// lock is held, as by a running dev.
func TestRunRefusesASecondDev(t *testing.T) {
	r := newRun(t)
	if err := makeDir(r.dir); err != nil {
		t.Fatal(err)
	}
	unlock, err := lock(r.dir)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	// flock locks belong to the open file, so a second open conflicts even
	// within one process.
	err = run(context.Background(), func() {}, r.getenv, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "already running") || !strings.Contains(err.Error(), strconv.Itoa(os.Getpid())) {
		t.Fatalf("run = %v, want a refusal naming the running dev's pid", err)
	}
}

func TestLoad(t *testing.T) {
	tests := []struct {
		name, key, value, want string
	}{
		{name: "port not a number", key: "DEV_PG_PORT", value: "pg", want: `DEV_PG_PORT="pg"`},
		{name: "port out of range", key: "DEV_PG_PORT", value: "70000", want: `DEV_PG_PORT="70000"`},
		{name: "address without port", key: "HTTP_ADDR", value: "127.0.0.1", want: `HTTP_ADDR="127.0.0.1"`},
		{name: "metrics address without port", key: "METRICS_ADDR", value: "localhost", want: `METRICS_ADDR="localhost"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := load(func(k string) string {
				if k == tt.key {
					return tt.value
				}
				return ""
			})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("load = %v, want an error naming %s", err, tt.want)
			}
		})
	}
	c, err := load(func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if c.pgPort != 54329 || c.httpAddr != "127.0.0.1:8080" || c.metricsAddr != "127.0.0.1:9090" || filepath.Base(c.dir) != ".dev" {
		t.Errorf("defaults: %+v", c)
	}
}

func TestReachable(t *testing.T) {
	dir := t.TempDir()
	open := filepath.Join(dir, "open")
	closed := filepath.Join(dir, "closed")
	for _, d := range []string{open, closed} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// t.TempDir makes the test's directory and its own 0700.
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(closed, 0o700); err != nil {
		t.Fatal(err)
	}
	const nobody = 1 << 30 // a uid and gid that own nothing here
	tests := []struct {
		dir  string
		want bool
	}{
		{filepath.Join(open, "not-yet-created"), true},
		{filepath.Join(closed, "x"), false},
	}
	for _, tt := range tests {
		if got := reachable(tt.dir, nobody, nobody); got != tt.want {
			t.Errorf("reachable(%s) = %v, want %v (parents of %s must be searchable by others)", tt.dir, got, tt.want, dir)
		}
	}
}
