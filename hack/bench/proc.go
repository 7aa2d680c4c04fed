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

// procStat is a process's /proc/<pid>/stat fields from the third (the
// state) on: the command name before it, in parentheses, may hold spaces.
func procStat(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 15 {
		return nil, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	return f, nil
}

// ticks is the sum of CPU times /proc gives in clock ticks.
func ticks(fields ...string) (time.Duration, error) {
	var sum time.Duration
	for _, f := range fields {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return 0, err
		}
		sum += time.Duration(n) * clockTick
	}
	return sum, nil
}

// procCPU is a process's user+system CPU so far; with children, also that of
// its children it has waited for (PostgreSQL's exited backends).
func procCPU(pid int, children bool) (time.Duration, error) {
	f, err := procStat(pid)
	if err != nil {
		return 0, err
	}
	if children {
		return ticks(f[11:15]...) // utime, stime, cutime, cstime: fields 14–17
	}
	return ticks(f[11:13]...)
}

// children are the PIDs of root's child processes.
func children(root int) []int {
	var out []int
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		pid, _ := strconv.Atoi(filepath.Base(d))
		if f, err := procStat(pid); err == nil && f[1] == strconv.Itoa(root) { // f[1]: the parent
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
	return ticks(f[1], f[2], f[3], f[6], f[7], f[8]) // all but idle and iowait
}

// waitQuiet waits, up to limit, until other processes keep at most maxBusy
// cores busy over a 5-second sample. It returns what it last measured.
func waitQuiet(maxBusy float64, limit time.Duration) float64 {
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
