package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// clockTick is Linux's USER_HZ, the unit of /proc's CPU times.
const clockTick = 10 * time.Millisecond

// procCPU is a process's user+system CPU so far; with children, also that of
// its children it has waited for (PostgreSQL's exited backends).
func procCPU(pid int, children bool) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name, in parentheses, may hold spaces: fields count from
	// after its closing parenthesis (field 3, the state, is f[0]).
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 15 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	n := 2 // utime, stime: fields 14, 15
	if children {
		n = 4 // cutime, cstime: 16, 17
	}
	var ticks int64
	for i := 0; i < n; i++ {
		v, err := strconv.ParseInt(f[11+i], 10, 64)
		if err != nil {
			return 0, err
		}
		ticks += v
	}
	return time.Duration(ticks) * clockTick, nil
}

// ppid is a process's parent.
func ppid(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 2 {
		return 0
	}
	p, _ := strconv.Atoi(f[1])
	return p
}

// children are the PIDs of root's child processes.
func children(root int) []int {
	var out []int
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		pid, _ := strconv.Atoi(filepath.Base(d))
		if ppid(pid) == root {
			out = append(out, pid)
		}
	}
	return out
}

// treeCPU is the CPU of a server that forks a process per connection: the
// postmaster, its live children, and the children it has reaped.
func treeCPU(root int) (time.Duration, error) {
	total, err := procCPU(root, true)
	if err != nil {
		return 0, err
	}
	for _, pid := range children(root) {
		if c, err := procCPU(pid, false); err == nil {
			total += c
		}
	}
	return total, nil
}

// peakRSS is a process's peak resident set (VmHWM) in bytes.
func peakRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no VmHWM", pid)
}

// busyCPU is the machine's non-idle CPU time so far, all cores together.
func busyCPU() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal …
	if len(f) < 9 || f[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	var ticks int64
	for i, v := range f[1:9] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, err
		}
		ticks += n
	}
	return time.Duration(ticks) * clockTick, nil
}

// waitQuiet waits, up to limit, until other processes keep at most maxBusy
// cores busy over a 5-second sample. It returns what it last measured.
func waitQuiet(maxBusy float64, limit time.Duration, logf func(string, ...any)) float64 {
	deadline := time.Now().Add(limit)
	for {
		b0, _ := busyCPU()
		self0 := selfCPU()
		time.Sleep(5 * time.Second)
		b1, _ := busyCPU()
		busy := (b1 - b0 - (selfCPU() - self0)).Seconds() / 5
		if busy <= maxBusy {
			return busy
		}
		if time.Now().After(deadline) {
			logf("other processes keep %.2f cores busy after waiting %s: measuring anyway", busy, limit)
			return busy
		}
		logf("other processes keep %.2f cores busy (more than %.2f): waiting", busy, maxBusy)
	}
}

// selfCPU is this process's CPU so far.
func selfCPU() time.Duration {
	c, _ := procCPU(os.Getpid(), false)
	return c
}
