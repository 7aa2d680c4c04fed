package pglocal

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
)

func needBinaries(t *testing.T) {
	t.Helper()
	if _, err := FindBin(); err != nil {
		t.Skip(err)
	}
}

// TestStartRefusesPortInUse: with something on the port, a server must not
// start, rather than report ready because the other one answers.
func TestStartRefusesPortInUse(t *testing.T) {
	needBinaries(t)
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	s, err := Start(context.Background(), Options{Port: l.Addr().(*net.TCPAddr).Port})
	if err == nil {
		s.Close()
		t.Fatal("Start succeeded on a port in use")
	}
	if !errors.Is(err, ErrPortInUse) {
		t.Fatalf("Start = %v, want ErrPortInUse", err)
	}
}

// TestStopLeftover stops a server as the next run finds it after its
// starter was killed, and leaves a pid file alone when no server runs.
func TestStopLeftover(t *testing.T) {
	needBinaries(t)
	if runtime.GOOS != "linux" {
		t.Skip("StopLeftover needs /proc")
	}
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	// As root the server runs as postgres, which must reach the cluster:
	// t.TempDir makes the test's directory and its own 0700.
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	s, err := Start(ctx, Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	pid, err := StopLeftover(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if pid != s.proc.Cmd.Process.Pid {
		t.Errorf("StopLeftover = pid %d, want the server's %d", pid, s.proc.Cmd.Process.Pid)
	}
	<-s.proc.Exited()
	if pid, err := StopLeftover(ctx, dir); pid != 0 || err != nil {
		t.Errorf("StopLeftover with nothing running = %d, %v; want 0, nil", pid, err)
	}
}

// TestStopLeftoverReusedPID: a pid file naming a live process that is not
// the cluster's server (its pid was reused) is removed, and nothing is
// signalled.
func TestStopLeftoverReusedPID(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("StopLeftover needs /proc")
	}
	t.Parallel()
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "data", "postmaster.pid")
	if err := os.MkdirAll(filepath.Dir(pidFile), 0o700); err != nil {
		t.Fatal(err)
	}
	// This test's own pid: alive, and not a postmaster.
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"+filepath.Dir(pidFile)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pid, err := StopLeftover(context.Background(), dir)
	if pid != 0 || err != nil {
		t.Errorf("StopLeftover = %d, %v; want 0, nil", pid, err)
	}
	if _, err := os.Stat(pidFile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale pid file kept: %v", err)
	}
}

// TestAllowAppendsOnce: the trust lines are appended after the file's own
// lines, each once, however often allow runs (Restart runs it again).
func TestAllowAppendsOnce(t *testing.T) {
	hba := filepath.Join(t.TempDir(), "pg_hba.conf")
	own := "local all all trust\n"
	if err := os.WriteFile(hba, []byte(own), 0o600); err != nil {
		t.Fatal(err)
	}
	s := &Server{opts: Options{TrustCIDRs: []string{"10.244.0.0/16", "192.0.2.1/32", "10.244.0.0/16"}}}
	for range 2 {
		if err := s.allow(hba); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(hba)
	if err != nil {
		t.Fatal(err)
	}
	want := own + "host all all 10.244.0.0/16 trust\nhost all all 192.0.2.1/32 trust\n"
	if string(got) != want {
		t.Errorf("pg_hba.conf:\n%s\nwant:\n%s", got, want)
	}
}
