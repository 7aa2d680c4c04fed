package pglocal

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// ErrNoPgBouncer means no pgbouncer binary was found.
var ErrNoPgBouncer = errors.New("no pgbouncer binary found: install it (Debian/Ubuntu: apt-get install pgbouncer) or set PGBOUNCER to its path")

// Bouncer is a running PgBouncer in transaction pooling mode in front of a
// server: what many teams put between creditgate and PostgreSQL.
type Bouncer struct {
	Port   int
	dir    string
	cmd    *exec.Cmd
	exited chan struct{}
}

// BouncerOptions configures StartBouncer.
type BouncerOptions struct {
	// Server is the host:port of the PostgreSQL server behind it.
	Server string
	// PoolSize is the number of server connections per database and user
	// (default_pool_size); 0 means 20.
	PoolSize int
	// ConnectQuery runs on each server connection it opens (connect_query):
	// in transaction mode a client's SET does not follow the client, so a
	// session setting belongs here (or on the role).
	ConnectQuery string
}

// StartBouncer starts pgbouncer (PGBOUNCER, else pgbouncer on PATH, else
// /usr/sbin/pgbouncer) in transaction mode, trusting the user postgres, in
// front of opts.Server, and waits until it accepts connections. Any role
// of the server may connect (pgbouncer looks roles up as postgres).
func StartBouncer(ctx context.Context, opts BouncerOptions) (_ *Bouncer, err error) {
	bin := os.Getenv("PGBOUNCER")
	if bin == "" {
		if bin, err = exec.LookPath("pgbouncer"); err != nil {
			bin = "/usr/sbin/pgbouncer"
		}
	}
	if _, err := os.Stat(bin); err != nil {
		return nil, ErrNoPgBouncer
	}
	host, port, err := net.SplitHostPort(opts.Server)
	if err != nil {
		return nil, fmt.Errorf("pgbouncer: server %q: %w", opts.Server, err)
	}
	if opts.PoolSize <= 0 {
		opts.PoolSize = 20
	}
	dir, err := os.MkdirTemp("", "creditgate-pgbouncer-")
	if err != nil {
		return nil, err
	}
	b := &Bouncer{dir: dir, exited: make(chan struct{})}
	defer func() {
		if err != nil {
			_ = b.Close()
		}
	}()
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		if cred, err = postgresUser("pgbouncer"); err != nil {
			return nil, err
		}
		if err := own(dir, cred); err != nil {
			return nil, err
		}
	}
	if b.Port, err = freePort(); err != nil {
		return nil, err
	}
	target := fmt.Sprintf("host=%s port=%s", host, port)
	if opts.ConnectQuery != "" {
		target += fmt.Sprintf(" connect_query='%s'", opts.ConnectQuery)
	}
	ini := fmt.Sprintf(`[databases]
* = %s

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = trust
auth_file = %s
auth_user = postgres
pool_mode = transaction
default_pool_size = %d
max_client_conn = 2000
server_login_retry = 1
logfile = %s
`, target, b.Port, filepath.Join(dir, "users.txt"), opts.PoolSize, filepath.Join(dir, "pgbouncer.log"))
	for name, content := range map[string]string{"pgbouncer.ini": ini, "users.txt": `"postgres" ""` + "\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return nil, err
		}
	}
	b.cmd = exec.Command(bin, filepath.Join(dir, "pgbouncer.ini"))
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	stopWithParent(b.cmd.SysProcAttr)
	if err := b.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start pgbouncer: %w", err)
	}
	go func() { _ = b.cmd.Wait(); close(b.exited) }()
	err = poll(ctx, b.exited, 20*time.Millisecond, func() bool {
		conn, err := net.DialTimeout("tcp", loopback(b.Port), time.Second)
		return err == nil && conn.Close() == nil
	})
	if errors.Is(err, errExited) {
		log, _ := os.ReadFile(filepath.Join(dir, "pgbouncer.log"))
		return nil, fmt.Errorf("pgbouncer exited: %v\n%s", b.cmd.ProcessState, log)
	}
	if err != nil {
		return nil, err
	}
	return b, nil
}

// URL returns serverURL with its host and port replaced by the bouncer's.
func (b *Bouncer) URL(serverURL string) (string, error) {
	u, err := url.Parse(serverURL)
	if err != nil {
		return "", err
	}
	u.Host = loopback(b.Port)
	return u.String(), nil
}

// Close stops pgbouncer and removes its directory.
func (b *Bouncer) Close() error {
	if b.cmd != nil && b.cmd.Process != nil {
		_ = b.cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-b.exited:
		case <-time.After(10 * time.Second):
			_ = b.cmd.Process.Kill()
			<-b.exited
		}
	}
	_ = os.RemoveAll(b.dir)
	return nil
}
