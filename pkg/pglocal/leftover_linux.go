package pglocal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

func stopWithParent(attr *syscall.SysProcAttr, sig syscall.Signal) { attr.Pdeathsig = sig }

// StopLeftover stops a server left running on the cluster in dir (a Start
// Dir) by a process that died without stopping it, and returns its pid (0
// when there was none). It signals only a postmaster whose command line is
// that cluster's: a postmaster.pid naming any other process (the pid was
// reused) or none is stale, and is removed so that PostgreSQL does not refuse
// to start. It asks for a fast shutdown, and kills the server's process group
// when that takes longer than ctx allows.
func StopLeftover(ctx context.Context, dir string) (int, error) {
	data := filepath.Join(dir, "data")
	pid, _, err := readPIDFile(data)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	// Gone (a zombie has no command line), or not postgres -D data.
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	args := strings.Split(string(b), "\x00")
	if i := slices.Index(args, "-D"); i < 1 || i+1 >= len(args) || args[i+1] != data || filepath.Base(args[0]) != "postgres" {
		return 0, os.Remove(filepath.Join(data, "postmaster.pid"))
	}
	// Our own server: Start runs it in its own process group.
	if err := syscall.Kill(pid, syscall.SIGINT); err != nil && !errors.Is(err, syscall.ESRCH) {
		return pid, fmt.Errorf("stop postgres (pid %d): %w", pid, err)
	}
	if err := poll(ctx, nil, 20*time.Millisecond, func() bool { return !Alive(pid) }); err != nil {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		return pid, fmt.Errorf("postgres (pid %d) did not stop: killed its process group: %w", pid, err)
	}
	return pid, nil
}

// Alive reports whether pid is a process that has not exited (a zombie has).
func Alive(pid int) bool {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	// pid (comm) state …: comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && b[i+2] != 'Z' && b[i+2] != 'X'
}
