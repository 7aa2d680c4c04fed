// Package pglocal starts a throwaway PostgreSQL cluster from the binaries
// installed on this machine, on a free loopback port, for tests, benchmarks
// and the local dev run. As root it runs the server as the postgres user,
// because PostgreSQL refuses to run as root.
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
	// Dir holds the cluster; empty means a new temporary directory, removed by Close.
	Dir string
	// Port to listen on (127.0.0.1); 0 picks a free one.
	Port int
	// Fsync keeps fsync on (for benchmarks); tests turn it off for speed.
	Fsync bool
	// Settings are extra postgres -c name=value settings.
	Settings map[string]string
	// LogFile receives the server's output; empty discards it.
	LogFile string
	// ListenAddresses adds addresses to listen on besides 127.0.0.1 (e.g. the
	// node IP, so that pods reach the server like a managed database).
	ListenAddresses []string
	// TrustCIDRs lets clients from these networks in without a password
	// (test clusters only).
	TrustCIDRs []string
	// StopWithParent has the kernel ask the server for a fast shutdown
	// (SIGINT) when the process that started it dies, even by SIGKILL
	// (Linux only; elsewhere it is ignored).
	StopWithParent bool
}

// Server is a running local cluster.
type Server struct {
	Port    int
	Dir     string
	bin     string
	opts    Options
	cred    *syscall.Credential
	cmd     *exec.Cmd
	exited  chan struct{}
	tempDir bool
}

// FindBin returns the directory holding initdb, postgres, pg_isready and
// psql: PG_BIN if set, then the newest /usr/lib/postgresql/*/bin, then the
// directory of initdb on PATH (symlinks resolved).
func FindBin() (string, error) {
	if d := os.Getenv("PG_BIN"); d != "" {
		if !complete(d) {
			return "", fmt.Errorf("PG_BIN=%s lacks initdb, postgres, pg_isready or psql", d)
		}
		return d, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int { return version(b) - version(a) })
	if p, err := exec.LookPath("initdb"); err == nil {
		if r, err := filepath.EvalSymlinks(p); err == nil {
			dirs = append(dirs, filepath.Dir(r))
		}
	}
	for _, d := range dirs {
		if complete(d) {
			return d, nil
		}
	}
	return "", ErrNoBinaries
}

func complete(dir string) bool {
	for _, b := range []string{"initdb", "postgres", "pg_isready", "psql"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			return false
		}
	}
	return true
}

func version(dir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
	return n
}

// Start initialises a cluster (unless Dir already holds one) and starts it.
func Start(ctx context.Context, opts Options) (*Server, error) {
	bin, err := FindBin()
	if err != nil {
		return nil, err
	}
	s := &Server{bin: bin, opts: opts, Dir: opts.Dir, Port: opts.Port}
	if os.Geteuid() == 0 {
		if s.cred, err = postgresUser("PostgreSQL"); err != nil {
			return nil, err
		}
	}
	if s.Dir == "" {
		if s.Dir, err = os.MkdirTemp("", "creditgate-pg-"); err != nil {
			return nil, err
		}
		s.tempDir = true
	}
	if err := s.start(ctx); err != nil {
		s.cleanup()
		return nil, err
	}
	return s, nil
}

// start makes the cluster's directory the server's, initialises the cluster
// if it has to, and starts the server.
func (s *Server) start(ctx context.Context) error {
	if err := own(s.Dir, s.cred); err != nil {
		return err
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
			return fmt.Errorf("initdb: %w\n%s", err, out)
		}
	}
	if err := s.allow(filepath.Join(data, "pg_hba.conf")); err != nil {
		return err
	}
	if s.Port == 0 {
		var err error
		if s.Port, err = freePort(); err != nil {
			return err
		}
	}
	return s.Restart(ctx)
}

// postgresUser is the credential of the postgres user, for running prog,
// which refuses to run as root.
func postgresUser(prog string) (*syscall.Credential, error) {
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
	// A server already on the port would answer pg_isready for ours, which
	// then fails to bind and exits: refuse the port instead of using it.
	l, err := net.Listen("tcp", loopback(s.Port))
	if err != nil {
		return fmt.Errorf("port %d: %w", s.Port, ErrPortInUse)
	}
	l.Close()
	cmd := exec.Command(filepath.Join(s.bin, "postgres"), args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred, Setpgid: true}
	if s.opts.StopWithParent {
		stopWithParent(cmd.SysProcAttr)
	}
	if s.opts.LogFile != "" {
		f, err := os.OpenFile(s.opts.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		cmd.Stdout, cmd.Stderr = f, f
	}
	exited := make(chan struct{})
	started := make(chan error, 1)
	go func() {
		if s.opts.StopWithParent {
			// The parent-death signal follows the thread that started the
			// child, not the process (prctl(2)): keep this goroutine on its
			// own thread until the server is gone, so that no thread exit
			// in between stops it.
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
		}
		err := cmd.Start()
		started <- err
		if err == nil {
			_ = cmd.Wait()
			close(exited)
		}
	}()
	if err := <-started; err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	s.cmd = cmd
	s.exited = exited

	waitCtx, cancel := context.WithTimeoutCause(ctx, 30*time.Second, errors.New("postgres did not accept connections within 30s"))
	defer cancel()
	err = poll(waitCtx, exited, 50*time.Millisecond, func() bool {
		// Ready only when our own postmaster says so in its pid file (an
		// answer on the port alone could come from another server), and
		// accepting queries, which pg_isready tells.
		pid, status, err := readPIDFile(data)
		return err == nil && pid == cmd.Process.Pid && status == "ready" &&
			exec.Command(filepath.Join(s.bin, "pg_isready"), "-q", "-h", "127.0.0.1", "-p", strconv.Itoa(s.Port)).Run() == nil
	})
	if errors.Is(err, errExited) {
		return errors.New("postgres exited during start-up (see its log)")
	}
	if err != nil {
		_ = s.Stop()
	}
	return err
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

// readPIDFile reads the pid and the status ("starting", "ready", "stopping",
// …) of the postmaster of the cluster in data from postmaster.pid
// (PostgreSQL's miscadmin.h, LOCK_FILE_LINE_*). PostgreSQL 10 and later
// write the status; the file is written before the server binds its port.
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
	if s.cmd == nil {
		return nil
	}
	// Once the server has exited, Signal fails and exited is closed.
	_ = s.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.exited
	}
	return nil
}

// Close stops the server and removes a temporary cluster.
func (s *Server) Close() error {
	err := s.Stop()
	s.cleanup()
	return err
}

func (s *Server) cleanup() {
	if s.tempDir {
		_ = os.RemoveAll(s.Dir)
	}
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
