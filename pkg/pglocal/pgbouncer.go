package pglocal

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// Bouncer is a running PgBouncer in transaction pooling mode in front of a
// server: what many teams put between creditgate and PostgreSQL.
type Bouncer struct {
	Addr string // 127.0.0.1:port
	dir  string
	proc *Process
}

// StartBouncer starts pgbouncer (PGBOUNCER, else pgbouncer on PATH, else
// /usr/sbin/pgbouncer) in transaction mode, trusting the user postgres, in
// front of the server at host:port, and waits until it accepts connections.
// Any role of the server may connect (pgbouncer looks roles up as postgres).
func StartBouncer(ctx context.Context, server string) (_ *Bouncer, err error) {
	bin := os.Getenv("PGBOUNCER")
	if bin == "" {
		if bin, err = exec.LookPath("pgbouncer"); err != nil {
			bin = "/usr/sbin/pgbouncer"
		}
	}
	if _, err := os.Stat(bin); err != nil {
		return nil, errors.New("no pgbouncer binary found: install it (Debian/Ubuntu: apt-get install pgbouncer) or set PGBOUNCER to its path")
	}
	host, port, err := net.SplitHostPort(server)
	if err != nil {
		return nil, fmt.Errorf("pgbouncer: server %q: %w", server, err)
	}
	dir, err := os.MkdirTemp("", "creditgate-pgbouncer-")
	if err != nil {
		return nil, err
	}
	b := &Bouncer{dir: dir}
	defer func() {
		if err != nil {
			_ = b.Close()
		}
	}()
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		if cred, err = PostgresUser("pgbouncer"); err != nil {
			return nil, err
		}
		if err := own(dir, cred); err != nil {
			return nil, err
		}
	}
	listenPort, err := freePort()
	if err != nil {
		return nil, err
	}
	b.Addr = loopback(listenPort)
	ini := fmt.Sprintf(`[databases]
* = host=%s port=%s

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = trust
auth_file = %s
auth_user = postgres
pool_mode = transaction
default_pool_size = 20
max_client_conn = 2000
server_login_retry = 1
logfile = %s
`, host, port, listenPort, filepath.Join(dir, "users.txt"), filepath.Join(dir, "pgbouncer.log"))
	for name, content := range map[string]string{"pgbouncer.ini": ini, "users.txt": `"postgres" ""` + "\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return nil, err
		}
	}
	cmd := exec.Command(bin, filepath.Join(dir, "pgbouncer.ini"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if b.proc, err = StartProcess(cmd, syscall.SIGINT); err != nil {
		return nil, fmt.Errorf("start pgbouncer: %w", err)
	}
	err = poll(ctx, b.proc.exited, 20*time.Millisecond, func() bool {
		conn, err := net.DialTimeout("tcp", b.Addr, time.Second)
		return err == nil && conn.Close() == nil
	})
	if errors.Is(err, errExited) {
		log, _ := os.ReadFile(filepath.Join(dir, "pgbouncer.log"))
		return nil, fmt.Errorf("pgbouncer exited: %v\n%s", cmd.ProcessState, log)
	}
	if err != nil {
		return nil, err
	}
	return b, nil
}

// Close stops pgbouncer and removes its directory.
func (b *Bouncer) Close() error {
	if b.proc != nil {
		_ = b.proc.Stop(syscall.SIGINT, 10*time.Second)
	}
	return os.RemoveAll(b.dir)
}
