package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// procStat is a process's /proc/<pid>/stat fields from the third (the
// state) on, 15 empty ones if it is gone: the command name before them, in
// parentheses, may hold spaces.
func procStat(pid int) []string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	s := string(b)
	if f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:]); len(f) >= 15 {
		return f
	}
	return make([]string, 15)
}

// ticks is the sum of CPU times /proc gives in clock ticks (USER_HZ, 100).
func ticks(fields ...string) time.Duration {
	var sum int64
	for _, f := range fields {
		n, _ := strconv.ParseInt(f, 10, 64)
		sum += n
	}
	return time.Duration(sum) * 10 * time.Millisecond
}

// procCPU is a process's user+system CPU so far; with reaped, also that of
// the children it has waited for (PostgreSQL's exited backends).
func procCPU(pid int, reaped bool) time.Duration {
	if reaped {
		return ticks(procStat(pid)[11:15]...) // utime, stime, cutime, cstime: fields 14–17
	}
	return ticks(procStat(pid)[11:13]...)
}

// children are the PIDs of root's child processes.
func children(root int) []int {
	var out []int
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		pid, _ := strconv.Atoi(filepath.Base(d))
		if procStat(pid)[1] == strconv.Itoa(root) { // the parent
			out = append(out, pid)
		}
	}
	return out
}

// treeCPU is the CPU of a server that forks a process per connection: the
// postmaster, its live children, and the children it has reaped.
func treeCPU(root int) time.Duration {
	total := procCPU(root, true)
	for _, pid := range children(root) {
		total += procCPU(pid, false)
	}
	return total
}

// peakRSS is a process's peak resident set (VmHWM) in bytes, 0 if unknown.
func peakRSS(pid int) int64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	_, rest, _ := strings.Cut(string(b), "VmHWM:")
	kb, _ := strconv.ParseInt(strings.Fields(rest + " 0")[0], 10, 64)
	return kb * 1024
}

// busyCPU is the machine's non-idle CPU time so far, all cores together.
func busyCPU() time.Duration {
	b, _ := os.ReadFile("/proc/stat")
	f := strings.Fields(string(b)) // cpu user nice system idle iowait irq softirq steal …
	if len(f) < 9 || f[0] != "cpu" {
		return 0
	}
	return ticks(f[1], f[2], f[3], f[6], f[7], f[8]) // all but idle and iowait
}

// waitQuiet waits, up to limit, until other processes keep at most maxBusy
// cores busy over a 5-second sample. It returns what it last measured.
func waitQuiet(maxBusy float64, limit time.Duration) float64 {
	deadline := time.Now().Add(limit)
	for {
		b0, self0 := busyCPU(), selfCPU()
		time.Sleep(5 * time.Second)
		busy := (busyCPU() - b0 - (selfCPU() - self0)).Seconds() / 5
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

func selfCPU() time.Duration { return procCPU(os.Getpid(), false) }
