package main

import (
	"cmp"
	"fmt"
	"os/exec"
	"runtime"
	"strings"
	"time"
)

func ms(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d)/float64(time.Millisecond)) }

func perOp(d time.Duration, ops int) string {
	if d == 0 || ops == 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f", float64(d)/float64(time.Microsecond)/float64(ops))
}

// renderReport is the debits' Markdown (docs/benchmarks.md): the runs, issue
// 11's targets.
func renderReport(c config, rs []result, drain string) string {
	var b strings.Builder
	writeRuns(&b, c, fmt.Sprintf("%d clients (%s), %d debits of 1 per service run", c.Clients, c.Client, c.Requests),
		"scenario", "debits or tx", "debit", "**service** (HTTP API)", 11, rs)
	for i := 0; i+1 < len(rs); i++ {
		s, p := rs[i], rs[i+1]
		if s.What != "" || p.mode == "" { // a service run, then pgbench's
			continue
		}
		want := 0.6
		if strings.HasPrefix(s.Name, "one") {
			want = 0.5
		}
		ratio := s.rate() / p.rate()
		target(&b, ratio >= want, "%s: ≥ %.1f × pgbench running the same statements in the same round trips (`-M prepared`, pipelined as the service sends them) | %.0f / %.0f = **%.2f**",
			s.Name, want, s.rate(), p.rate(), ratio)
		if want == 0.6 {
			p99 := s.pct(0.99)
			cpu := float64(s.ServiceCPU) / float64(time.Microsecond) / float64(s.Ops)
			target(&b, p99 < 20*time.Millisecond, "%s: p99 < 20 ms | **%s ms**", s.Name, ms(p99))
			target(&b, cpu < 200, "%s: service CPU < 200 µs per debit | **%.0f µs**", s.Name, cpu)
		}
	}
	return b.String() + drain
}

// writeRuns writes the line that says when, where and what ran, a table row
// per run (first names the first column, ops what a row counts, unit what the
// service's CPU is per, service its runs) and the head of issue's targets.
func writeRuns(b *strings.Builder, c config, load, first, ops, unit, service string, issue int, rs []result) {
	rev, _ := exec.Command("git", "describe", "--always", "--dirty").Output()
	pgv, _ := exec.Command("psql", "--version").Output()
	fmt.Fprintf(b, "Run %s UTC at %s, %s, %d cores, %s; %s, pgbench %d s per run",
		time.Now().UTC().Format("2006-01-02 15:04"), strings.TrimSpace(string(rev)), runtime.Version(), runtime.NumCPU(),
		strings.TrimSpace(string(pgv)), load, c.Seconds)
	if c.WebhookEnv != "" {
		fmt.Fprintf(b, "; service settings %s", c.WebhookEnv)
	}
	b.WriteString(".\n\n")
	fmt.Fprintf(b, "| %s | run | %s | per second | p50 ms | p90 ms | p99 ms | max ms | service CPU µs/%s | PostgreSQL CPU µs/op | client CPU µs/op | statements/op | other processes, cores | service peak RSS MB |\n", first, ops, unit)
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rs {
		rss := "–"
		if r.PeakRSS > 0 {
			rss = fmt.Sprintf("%.1f", float64(r.PeakRSS)/1e6)
		}
		fmt.Fprintf(b, "| %s | %s | %d | %.0f | %s | %s | %s | %s | %s | %s | %s | %.2f | %.2f | %s |\n",
			r.Name, cmp.Or(r.What, service), r.Ops, r.rate(), ms(r.pct(0.5)), ms(r.pct(0.9)), ms(r.pct(0.99)), ms(r.pct(1)),
			perOp(r.ServiceCPU, r.Ops), perOp(r.PostgresCPU, r.Ops), perOp(r.ClientCPU, r.Ops),
			float64(r.Statements)/float64(r.Ops), r.OtherCores, rss)
	}
	fmt.Fprintf(b, "\n| target (issue %d) | measured | |\n|---|---|---|\n", issue)
}

// pgbenchRun names pgbench's runs by -M mode.
var pgbenchRun = map[string]string{
	"prepared": "pgbench, same SQL `-M prepared`, same trips",
	"simple":   "pgbench, same SQL `-M simple`, a trip per statement",
}

// target writes a row of the targets: format's cells, then met or missed.
func target(b *strings.Builder, ok bool, format string, args ...any) {
	fmt.Fprintf(b, "| "+format+" | %s |\n", append(args, map[bool]string{true: "met", false: "**missed**"}[ok])...)
}
