// Package pglocal starts a throwaway PostgreSQL cluster from the binaries
// installed on this machine, on a free loopback port, for tests, benchmarks
// and the local dev run, and the child processes they need. As root it runs
// the server as the postgres user, because PostgreSQL refuses to run as root.
package pglocal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrPortInUse means something already listens on the port asked for.
var ErrPortInUse = errors.New("something else already listens on it")

// ErrNoBinaries means no PostgreSQL server binaries were found.
var ErrNoBinaries = errors.New("no PostgreSQL server binaries found (initdb, postgres): " +
	"install them (Debian/Ubuntu: apt-get install postgresql) or set DATABASE_URL to a server you run")

// Options configures Start.
type Options struct {
	Dir      string            // holds the cluster; "" means a new temporary directory, removed by Close
	Port     int               // to listen on (127.0.0.1); 0 picks a free one
	Fsync    bool              // keeps fsync on (for benchmarks); tests turn it off for speed
	Settings map[string]string // extra postgres -c name=value settings
	LogFile  string            // receives the server's output; "" discards it
	// ListenAddresses adds addresses to listen on besides 127.0.0.1 (e.g. the
	// node IP, so that pods reach the server like a managed database).
	ListenAddresses []string
	TrustCIDRs      []string // lets clients from these networks in without a password (test clusters only)
	// StopWithParent has the kernel ask the server for a fast shutdown (SIGINT)
	// when the process that started it dies, even by SIGKILL (Linux only).
	StopWithParent bool
}

// Server is a running local cluster.
type Server struct {
	Port    int
	Dir     string
	bin     string
	opts    Options
	cred    *syscall.Credential
	proc    *Process
	tempDir bool
}

// FindBin returns the directory holding initdb, postgres and psql: PG_BIN if
// set, then the newest /usr/lib/postgresql/*/bin, then the directory of
// initdb on PATH (symlinks resolved).
func FindBin() (string, error) {
	complete := func(dir string) bool {
		return !slices.ContainsFunc([]string{"initdb", "postgres", "psql"}, func(b string) bool {
			_, err := os.Stat(filepath.Join(dir, b))
			return err != nil
		})
	}
	if d := os.Getenv("PG_BIN"); d != "" {
		if !complete(d) {
			return "", fmt.Errorf("PG_BIN=%s lacks initdb, postgres or psql", d)
		}
		return d, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	version := func(dir string) int {
		n, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
		return n
	}
	slices.SortFunc(dirs, func(a, b string) int { return version(b) - version(a) })
	if p, err := exec.LookPath("initdb"); err == nil {
		if r, err := filepath.EvalSymlinks(p); err == nil {
			dirs = append(dirs, filepath.Dir(r))
		}
	}
	if i := slices.IndexFunc(dirs, complete); i >= 0 {
		return dirs[i], nil
	}
	return "", ErrNoBinaries
}

// Start initialises a cluster (unless Dir already holds one) and starts it.
func Start(ctx context.Context, opts Options) (_ *Server, err error) {
	s := &Server{opts: opts, Dir: opts.Dir, Port: opts.Port}
	if s.bin, err = FindBin(); err != nil {
		return nil, err
	}
	if os.Geteuid() == 0 {
		if s.cred, err = PostgresUser("PostgreSQL"); err != nil {
			return nil, err
		}
	}
	if s.Dir == "" {
		if s.Dir, err = os.MkdirTemp("", "creditgate-pg-"); err != nil {
			return nil, err
		}
		s.tempDir = true
	}
	defer func() {
		if err != nil && s.tempDir {
			_ = os.RemoveAll(s.Dir)
		}
	}()
	if err := own(s.Dir, s.cred); err != nil {
		return nil, err
	}
	data := filepath.Join(s.Dir, "data")
	if _, err := os.Stat(filepath.Join(data, "PG_VERSION")); err != nil {
		cmd := exec.CommandContext(ctx, filepath.Join(s.bin, "initdb"), "-D", data, "-U", "postgres",
			"--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
		// Interrupted, initdb removes the directory it was filling (a
		// killed one would leave a cluster that never starts).
		cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
		cmd.WaitDelay = 10 * time.Second
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("initdb: %w\n%s", err, out)
		}
	}
	if err := s.allow(filepath.Join(data, "pg_hba.conf")); err != nil {
		return nil, err
	}
	if s.Port == 0 {
		if s.Port, err = freePort(); err != nil {
			return nil, err
		}
	}
	if err := s.Restart(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// PostgresUser is the credential of the postgres user, for running prog,
// which refuses to run as root.
func PostgresUser(prog string) (*syscall.Credential, error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root, and %s refuses to: create a 'postgres' user (the Debian package does) or run as another user", prog)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// own gives dir to cred's user, if any.
func own(dir string, cred *syscall.Credential) error {
	if cred == nil {
		return nil
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return err
	}
	return os.Chown(dir, int(cred.Uid), int(cred.Gid))
}

// Restart starts the server again after Stop, on the same port and data.
func (s *Server) Restart(ctx context.Context) error {
	data := filepath.Join(s.Dir, "data")
	args := []string{"-D", data, "-p", strconv.Itoa(s.Port),
		"-c", "listen_addresses=" + strings.Join(append([]string{"127.0.0.1"}, s.opts.ListenAddresses...), ","),
		"-c", "unix_socket_directories=" + s.Dir,
		"-c", "max_connections=300", "-c", "shared_buffers=128MB"}
	if !s.opts.Fsync {
		args = append(args, "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
	}
	for _, k := range slices.Sorted(maps.Keys(s.opts.Settings)) {
		args = append(args, "-c", k+"="+s.opts.Settings[k])
	}
	// A server already on the port would take our clients, while ours fails
	// to bind and exits: refuse the port instead of using it.
	l, err := net.Listen("tcp", loopback(s.Port))
	if err != nil {
		return fmt.Errorf("port %d: %w", s.Port, ErrPortInUse)
	}
	l.Close()
	cmd := exec.Command(filepath.Join(s.bin, "postgres"), args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	if s.opts.LogFile != "" {
		f, err := os.OpenFile(s.opts.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		cmd.Stdout, cmd.Stderr = f, f
	}
	stopSig := syscall.Signal(0)
	if s.opts.StopWithParent {
		stopSig = syscall.SIGINT
	}
	if s.proc, err = StartProcess(cmd, stopSig); err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	waitCtx, cancel := context.WithTimeoutCause(ctx, 30*time.Second, errors.New("postgres did not accept connections within 30s"))
	defer cancel()
	err = poll(waitCtx, s.proc.exited, 50*time.Millisecond, func() bool {
		// Ready when our own postmaster says it accepts connections in its
		// pid file, which is what pg_ctl waits for (an answer on the port
		// alone could come from another server).
		pid, status, err := readPIDFile(data)
		return err == nil && pid == cmd.Process.Pid && status == "ready"
	})
	if errors.Is(err, errExited) {
		return errors.New("postgres exited during start-up (see its log)")
	}
	if err != nil {
		_ = s.Stop()
	}
	return err
}

// Process is a child process started by StartProcess.
type Process struct {
	Cmd    *exec.Cmd
	exited chan struct{}
}

// StartProcess starts cmd in a process group of its own. With a stopSig, the
// kernel sends cmd that signal when this process dies, even by SIGKILL (Linux
// only), or rather the thread that started cmd (prctl(2)): that goroutine
// keeps its thread until cmd exits.
func StartProcess(cmd *exec.Cmd, stopSig syscall.Signal) (*Process, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	stopWithParent(cmd.SysProcAttr, stopSig)
	p := &Process{Cmd: cmd, exited: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		err := cmd.Start()
		started <- err
		if err == nil {
			_ = cmd.Wait()
			close(p.exited)
		}
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return p, nil
}

// Exited is closed once the process has exited (Cmd.ProcessState tells how).
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Stop sends the process sig and waits until it exits; after timeout it kills
// the process group. It returns an error for a non-zero exit status, not when
// a signal ended the process.
func (p *Process) Stop(sig os.Signal, timeout time.Duration) error {
	_ = p.Cmd.Process.Signal(sig) // fails once the process has exited
	select {
	case <-p.exited:
	case <-time.After(timeout):
		_ = syscall.Kill(-p.Cmd.Process.Pid, syscall.SIGKILL)
		<-p.exited
		return fmt.Errorf("did not stop within %v: killed", timeout)
	}
	if st := p.Cmd.ProcessState; st.Exited() && !st.Success() {
		return errors.New(st.String())
	}
	return nil
}

// errExited is poll's error when the process it waits for exits.
var errExited = errors.New("exited")

// poll calls ready every interval until it returns true, the process whose
// exit closes exited is gone, or ctx is done (context.Cause).
func poll(ctx context.Context, exited <-chan struct{}, interval time.Duration, ready func() bool) error {
	for !ready() {
		select {
		case <-exited:
			return errExited
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(interval):
		}
	}
	return nil
}

// readPIDFile reads the pid and the status ("starting", "ready", …) of the
// postmaster of the cluster in data from postmaster.pid (PostgreSQL's
// miscadmin.h, LOCK_FILE_LINE_*; the status since PostgreSQL 10).
func readPIDFile(data string) (pid int, status string, err error) {
	b, err := os.ReadFile(filepath.Join(data, "postmaster.pid"))
	if err != nil {
		return 0, "", err
	}
	lines := strings.Split(string(b), "\n")
	if pid, err = strconv.Atoi(strings.TrimSpace(lines[0])); err != nil {
		return 0, "", fmt.Errorf("postmaster.pid: %w", err)
	}
	if len(lines) > 7 {
		status = strings.TrimSpace(lines[7])
	}
	return pid, status, nil
}

// allow appends trust lines for TrustCIDRs to pg_hba.conf, once.
func (s *Server) allow(hba string) error {
	if len(s.opts.TrustCIDRs) == 0 {
		return nil
	}
	b, err := os.ReadFile(hba)
	if err != nil {
		return err
	}
	var add []byte
	for _, c := range s.opts.TrustCIDRs {
		if line := "host all all " + c + " trust"; !bytes.Contains(b, []byte(line)) && !bytes.Contains(add, []byte(line)) {
			add = append(add, line+"\n"...)
		}
	}
	if len(add) == 0 {
		return nil
	}
	// Appended, never rewritten: an interrupted write cannot lose the
	// file's own lines.
	f, err := os.OpenFile(hba, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.Write(add)
	return errors.Join(err, f.Close())
}

func loopback(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// URL returns a connection URL for database name.
func (s *Server) URL(name string) string {
	return fmt.Sprintf("postgres://postgres@%s/%s?sslmode=disable", loopback(s.Port), name)
}

// Stop shuts the server down fast (in-flight transactions are rolled back)
// and waits for it to exit.
func (s *Server) Stop() error {
	if s.proc != nil {
		_ = s.proc.Stop(syscall.SIGINT, 30*time.Second)
	}
	return nil
}

// Close stops the server and removes a temporary cluster.
func (s *Server) Close() error {
	_ = s.Stop()
	if s.tempDir {
		return os.RemoveAll(s.Dir)
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// CreateDatabase runs CREATE DATABASE through psql, optionally from a template.
func (s *Server) CreateDatabase(ctx context.Context, name, template string) error {
	q := "CREATE DATABASE " + quoteIdent(name)
	if template != "" {
		q += " TEMPLATE " + quoteIdent(template)
	}
	return s.Psql(ctx, "postgres", q)
}

// Psql runs one SQL command through psql.
func (s *Server) Psql(ctx context.Context, db, sql string) error {
	cmd := exec.CommandContext(ctx, filepath.Join(s.bin, "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
		"-h", "127.0.0.1", "-p", strconv.Itoa(s.Port), "-U", "postgres", "-d", db, "-c", sql)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("psql: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }
