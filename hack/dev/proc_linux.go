package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/creditgate/creditgate/pkg/pglocal"
)

// stopWithParent has the kernel send this process SIGTERM when its parent
// dies (make killed by SIGKILL). make is single-threaded, so the parent's
// thread is the parent.
func stopWithParent() {
	_, _, _ = syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_PDEATHSIG, uintptr(syscall.SIGTERM), 0)
}

// watchParent calls stop when the process that started dev is GNU make and
// has begun handling a SIGINT (make's death reaches dev as SIGTERM, from
// stopWithParent). make passes SIGTERM on to its recipe but not SIGINT, which
// it expects the terminal to have sent to the whole process group (Ctrl-C):
// sent to make alone, it would stop nothing. make's handler first resets
// SIGINT to its default action, which /proc shows (nothing else in make
// changes that handler).
func watchParent(ctx context.Context, stop context.CancelCauseFunc) {
	ppid := os.Getppid()
	comm, _ := os.ReadFile("/proc/" + strconv.Itoa(ppid) + "/comm")
	if name := strings.TrimSpace(string(comm)); name != "make" && name != "gmake" {
		return
	}
	if caught, ok := catchesSIGINT(ppid); !ok || !caught {
		return
	}
	for ctx.Err() == nil {
		if caught, ok := catchesSIGINT(ppid); ok && !caught {
			stop(errors.New("make got SIGINT"))
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// catchesSIGINT reports whether pid has a SIGINT handler (its SigCgt mask in
// /proc/pid/status); ok is false when that cannot be read.
func catchesSIGINT(pid int) (caught, ok bool) {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	_, v, _ := strings.Cut(string(b), "\nSigCgt:")
	v, _, _ = strings.Cut(v, "\n")
	mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
	return mask&(1<<(syscall.SIGINT-1)) != 0, err == nil
}

// process is one entry of /proc.
type process struct {
	pid  int
	exe  string // the executable; " (deleted)" trimmed
	cwd  string
	args []string
}

// processes lists the processes whose /proc entries this user may read (a
// zombie has no executable, directory or command line left).
func processes() []process {
	ents, _ := os.ReadDir("/proc")
	var ps []process
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		dir := "/proc/" + e.Name() + "/"
		p := process{pid: pid}
		exe, _ := os.Readlink(dir + "exe")
		p.exe = strings.TrimSuffix(exe, " (deleted)")
		p.cwd, _ = os.Readlink(dir + "cwd")
		if b, _ := os.ReadFile(dir + "cmdline"); len(b) > 0 {
			p.args = strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		}
		ps = append(ps, p)
	}
	return ps
}

// stopStrays stops (SIGTERM, then SIGKILL once ctx is done) the processes
// running exe, other than this one, and returns their pids.
func stopStrays(ctx context.Context, exe string) []int {
	var pids []int
	for _, p := range processes() {
		if p.exe == exe && p.pid != os.Getpid() {
			pids = append(pids, p.pid)
			_ = syscall.Kill(p.pid, syscall.SIGTERM)
		}
	}
	for _, pid := range pids {
		for pglocal.Alive(pid) {
			if ctx.Err() != nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return pids
}

// listener describes the process listening on TCP port ("pid 123: postgres
// -D /x"), or returns "" when /proc does not tell (another user's process,
// for one).
func listener(port int) string {
	inodes, hexPort := map[string]bool{}, fmt.Sprintf(":%04X", port)
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, _ := os.ReadFile(table)
		for line := range strings.Lines(string(b)) {
			// sl local_address rem_address st … inode: the address is
			// hex IP:PORT, state 0A is LISTEN.
			f := strings.Fields(line)
			if len(f) >= 10 && f[3] == "0A" && strings.HasSuffix(f[1], hexPort) {
				inodes["socket:["+f[9]+"]"] = true
			}
		}
	}
	if len(inodes) == 0 {
		return ""
	}
	for _, p := range processes() {
		fds := "/proc/" + strconv.Itoa(p.pid) + "/fd/"
		ents, _ := os.ReadDir(fds)
		for _, fd := range ents {
			if l, _ := os.Readlink(fds + fd.Name()); inodes[l] {
				l = "pid " + strconv.Itoa(p.pid) + ": " + strings.Join(p.args, " ")
				if len(l) > 200 {
					l = l[:200] + "…"
				}
				return l
			}
		}
	}
	return ""
}
