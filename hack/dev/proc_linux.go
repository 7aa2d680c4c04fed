package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func setParentDeathSignal(attr *syscall.SysProcAttr, sig syscall.Signal) { attr.Pdeathsig = sig }

// stopWithParent has the kernel send this process SIGTERM when its parent
// dies (make killed by SIGKILL). make is single-threaded, so the parent's
// thread is the parent.
func stopWithParent() {
	_, _, _ = syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_PDEATHSIG, uintptr(syscall.SIGTERM), 0)
}

// watchParent calls stop when the process that started dev exits, or when
// that process is GNU make and has begun handling a SIGINT. make passes
// SIGTERM on to its recipe, but not SIGINT: it expects the terminal to have
// sent it to the whole process group (as Ctrl-C does) and waits for the
// recipe, so a SIGINT sent to make alone would otherwise stop nothing. make's
// handler first resets SIGINT to its default action, so /proc shows make no
// longer catching it (a change nothing else in make makes; blocking signals
// around its own bookkeeping, as it also does, leaves the handler alone).
func watchParent(ctx context.Context, stop func(why string)) {
	ppid := os.Getppid()
	comm, _ := os.ReadFile("/proc/" + strconv.Itoa(ppid) + "/comm")
	watchINT := false
	if name := strings.TrimSpace(string(comm)); name == "make" || name == "gmake" {
		caught, err := sigmask(ppid, "SigCgt")
		watchINT = err == nil && caught&sigbit(syscall.SIGINT) != 0
	}
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		if os.Getppid() != ppid {
			stop("the parent process exited")
			return
		}
		if watchINT {
			if caught, err := sigmask(ppid, "SigCgt"); err == nil && caught&sigbit(syscall.SIGINT) == 0 {
				stop("make got SIGINT")
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func sigbit(s syscall.Signal) uint64 { return 1 << (uint(s) - 1) }

// sigmask reads a signal mask line (SigBlk, SigCgt, …) of /proc/pid/status.
func sigmask(pid int, field string) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	return 0, os.ErrNotExist
}

// process is one entry of /proc.
type process struct {
	pid  int
	exe  string // the executable; " (deleted)" trimmed
	cwd  string
	args []string
}

// processes lists the processes whose /proc entries this user may read.
func processes() []process {
	ents, _ := os.ReadDir("/proc")
	var ps []process
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		dir := filepath.Join("/proc", e.Name())
		p := process{pid: pid}
		p.exe, _ = os.Readlink(filepath.Join(dir, "exe"))
		p.exe = strings.TrimSuffix(p.exe, " (deleted)")
		p.cwd, _ = os.Readlink(filepath.Join(dir, "cwd"))
		if b, err := os.ReadFile(filepath.Join(dir, "cmdline")); err == nil && len(b) > 0 {
			for _, a := range bytes.Split(bytes.TrimRight(b, "\x00"), []byte{0}) {
				p.args = append(p.args, string(a))
			}
		}
		if alive(pid) {
			ps = append(ps, p)
		}
	}
	return ps
}

// alive reports whether pid is a process that has not exited (a zombie has).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && b[i+2] != 'Z' && b[i+2] != 'X'
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
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	done := ctx.Done()
	for _, pid := range pids {
		for alive(pid) {
			select {
			case <-tick.C:
			case <-done:
				for _, pid := range pids {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
				done = nil
			}
		}
	}
	return pids
}

// listener describes the process listening on TCP port ("pid 123: postgres
// -D /x"), or returns "" when /proc does not tell (another user's process,
// for one).
func listener(port int) string {
	inodes := map[string]bool{}
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(table)
		if err != nil {
			continue
		}
		for line := range strings.Lines(string(b)) {
			// sl local_address rem_address st … inode: the address is
			// hex IP:PORT, state 0A is LISTEN.
			f := strings.Fields(line)
			if len(f) < 10 || f[3] != "0A" {
				continue
			}
			_, hexPort, ok := strings.Cut(f[1], ":")
			if p, err := strconv.ParseUint(hexPort, 16, 16); ok && err == nil && int(p) == port {
				inodes["socket:["+f[9]+"]"] = true
			}
		}
	}
	if len(inodes) == 0 {
		return ""
	}
	for _, p := range processes() {
		fds, _ := os.ReadDir(filepath.Join("/proc", strconv.Itoa(p.pid), "fd"))
		for _, fd := range fds {
			if l, _ := os.Readlink(filepath.Join("/proc", strconv.Itoa(p.pid), "fd", fd.Name())); inodes[l] {
				return "pid " + strconv.Itoa(p.pid) + ": " + strings.Join(p.args, " ")
			}
		}
	}
	return ""
}
