package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/creditgate/creditgate/pkg/webhook/svixsender"
)

// result is one measured run, of the service or of pgbench.
type result struct {
	Name, What, mode                   string // What: the run column, if not the service's; mode: pgbench's -M
	Clients, Ops                       int
	Elapsed                            time.Duration
	Latencies                          []time.Duration
	Statuses                           map[int]int
	ServiceCPU, PostgresCPU, ClientCPU time.Duration
	OtherCores                         float64
	Statements, PeakRSS                int64
}

func (r result) rate() float64 { return float64(r.Ops) / r.Elapsed.Seconds() }

func (r result) pct(p float64) time.Duration {
	if len(r.Latencies) == 0 {
		return 0
	}
	l := slices.Clone(r.Latencies)
	slices.Sort(l)
	i := int(p*float64(len(l))+0.5) - 1
	return l[max(0, min(i, len(l)-1))]
}

// debits posts n debits of 1 credit to the credits API at base from -clients
// keep-alive connections, user(i) naming the i-th's user and run its
// idempotency keys, at most rate a second (0: as fast as answers come), with
// Go's client (net/http) or the kit's lean one: a request in one write, a
// small parser. On 2 cores what the load generator burns, the service lacks.
func (b *bench) debits(ctx context.Context, client string, rate float64, base, key, run string, n int,
	user func(i int) string) (result, error) {
	body := []byte(`{"amount":1,"reason":"bench"}`)
	tr := &http.Transport{MaxIdleConnsPerHost: b.Clients, MaxConnsPerHost: b.Clients, DisableCompression: true}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	lat, status := make([]time.Duration, n), make([]int, n)
	var next atomic.Int64
	var g errgroup.Group // Wait returns the first error; the other clients go on
	start := time.Now()
	for range b.Clients {
		g.Go(func() error {
			conn, err := svixsender.DialLean(base, 30*time.Second) // it connects on first use
			if err != nil {
				return err
			}
			defer conn.Close()
			h := http.Header{"Authorization": {"Bearer " + key}, "Content-Type": {"application/json"}, "Idempotency-Key": {""}}
			for i := int(next.Add(1)) - 1; i < n && ctx.Err() == nil; i = int(next.Add(1)) - 1 {
				if rate > 0 {
					time.Sleep(time.Until(start.Add(time.Duration(float64(i) / rate * float64(time.Second)))))
				}
				h["Idempotency-Key"][0] = run + "-" + strconv.Itoa(i)
				path := "/v1/users/" + user(i) + "/debits"
				if client == "lean" {
					a := conn.Do(ctx, http.MethodPost, path, h, body, false)
					lat[i], status[i], err = a.Latency, a.Status, a.Err
				} else {
					req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+path, bytes.NewReader(body))
					req.Header = h.Clone()
					t0 := time.Now()
					var resp *http.Response
					if resp, err = hc.Do(req); err == nil {
						_, _ = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						lat[i], status[i] = time.Since(t0), resp.StatusCode
					}
				}
				if err != nil {
					return fmt.Errorf("request %d: %w", i, err)
				}
			}
			return nil
		})
	}
	err := g.Wait()
	r := result{Ops: n, Latencies: lat, Elapsed: time.Since(start), Statuses: map[int]int{}}
	for _, s := range status {
		r.Statuses[s]++
	}
	return r, err
}

var (
	tpsRE  = regexp.MustCompile(`number of transactions actually processed: (\d+)`)
	failRE = regexp.MustCompile(`number of failed transactions: (\d+)`)
	rateRE = regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`)
)

// pgbench runs script with -M mode for -pgbench-seconds from clients
// connections, each transaction's latency read from its log (pgbench-<name>.*),
// client CPU pgbench's, elapsed time without the connections' set-up.
func (b *bench) pgbench(ctx context.Context, clients int, mode, script, name string) (result, error) {
	prefix := filepath.Join(b.dir, "pgbench-"+name)
	old, _ := filepath.Glob(prefix + ".[0-9]*") // an earlier run's, in a kept directory
	for _, f := range old {
		_ = os.Remove(f)
	}
	args := []string{"-n", "-h", "127.0.0.1", "-p", strconv.Itoa(b.port), "-U", "postgres", "-c", strconv.Itoa(clients),
		"-j", strconv.Itoa(min(clients, runtime.NumCPU())), "-T", strconv.Itoa(b.Seconds), "-M", mode, "-f", script, "bench",
		"-l", "--log-prefix", prefix}
	cmd := exec.CommandContext(ctx, b.pgbenchBin, args...)
	start := time.Now()
	text, err := cmd.CombinedOutput()
	r := result{Elapsed: time.Since(start)}
	if err != nil {
		return r, fmt.Errorf("pgbench %s: %w\n%s", strings.Join(args, " "), err, text)
	}
	if err := os.WriteFile(prefix+".out", text, 0o644); err != nil {
		return r, err
	}
	m, tps := tpsRE.FindSubmatch(text), rateRE.FindSubmatch(text)
	if m == nil || tps == nil {
		return r, fmt.Errorf("pgbench: no transaction count or rate in its output:\n%s", text)
	}
	r.Ops, _ = strconv.Atoi(string(m[1]))
	r.ClientCPU = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	if tps, _ := strconv.ParseFloat(string(tps[1]), 64); tps > 0 {
		r.Elapsed = time.Duration(float64(r.Ops) / tps * float64(time.Second))
	}
	if f := failRE.FindSubmatch(text); f != nil && string(f[1]) != "0" {
		return r, fmt.Errorf("pgbench: %s transactions failed:\n%s", f[1], text)
	}
	// A log line per transaction: client, transaction, latency in µs, …
	logs, _ := filepath.Glob(prefix + ".[0-9]*")
	for _, l := range logs {
		data, _ := os.ReadFile(l) // what it misses, the count below misses
		for line := range strings.Lines(string(data)) {
			if f := strings.Fields(line); len(f) > 2 {
				if us, err := strconv.ParseInt(f[2], 10, 64); err == nil {
					r.Latencies = append(r.Latencies, time.Duration(us)*time.Microsecond)
				}
			}
		}
	}
	if len(r.Latencies) != r.Ops {
		return r, fmt.Errorf("pgbench: %d transactions, but %d in its logs", r.Ops, len(r.Latencies))
	}
	return r, nil
}
