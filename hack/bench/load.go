package main

import (
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
	Name      string
	What      string // the run column, if not the service's
	mode      string // pgbench's -M
	Clients   int
	Ops       int
	Elapsed   time.Duration
	Latencies []time.Duration
	Statuses  map[int]int

	ServiceCPU, PostgresCPU, ClientCPU time.Duration
	OtherCores                         float64
	Statements                         int64
	PeakRSS                            int64
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

// loader posts n debits of 1 credit through the credits API at base from
// clients concurrent keep-alive connections, user(i) naming the user of the
// i-th and run its idempotency keys; the result has each one's latency and
// the count of each status.
type loader func(ctx context.Context, base, key, run string, clients, n int, user func(i int) string) (result, error)

const debitBody = `{"amount":1,"reason":"bench"}`

// sendFunc sends request i and returns its latency and status.
type sendFunc func(i int) (time.Duration, int, error)

// drive sends requests 0…n-1 from clients goroutines, each with the sender
// dial gives it (and closes it with the function it returns); with a rate,
// request i not before start + i/rate.
func drive(ctx context.Context, clients, n int, rate float64, dial func() (sendFunc, func(), error)) (result, error) {
	lat, status := make([]time.Duration, n), make([]int, n)
	var next atomic.Int64
	var g errgroup.Group // Wait returns the first error; the other clients go on
	start := time.Now()
	for range clients {
		g.Go(func() error {
			send, closeConn, err := dial()
			if err != nil {
				return err
			}
			defer closeConn()
			for i := int(next.Add(1)) - 1; i < n && ctx.Err() == nil; i = int(next.Add(1)) - 1 {
				if rate > 0 {
					time.Sleep(time.Until(start.Add(time.Duration(float64(i) / rate * float64(time.Second)))))
				}
				if lat[i], status[i], err = send(i); err != nil {
					return err
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

// apiLoad is the loader with Go's HTTP client (-client net/http).
func apiLoad(ctx context.Context, base, key, run string, clients, n int, user func(i int) string) (result, error) {
	tr := &http.Transport{MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	send := func(i int) (time.Duration, int, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/users/"+user(i)+"/debits", strings.NewReader(debitBody))
		req.Header = http.Header{"Authorization": {"Bearer " + key}, "Content-Type": {"application/json"},
			"Idempotency-Key": {run + "-" + strconv.Itoa(i)}}
		t0 := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			return 0, 0, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return time.Since(t0), resp.StatusCode, nil
	}
	return drive(ctx, clients, n, 0, func() (sendFunc, func(), error) { return send, func() {}, nil })
}

// leanLoad is the loader with a client that costs the machine less (-client
// lean), sending at most rate requests per second (0: as fast as answers
// come): the kit's lean connection per client, driven in its own goroutine,
// each request written in one write and its answer read with a small parser
// (status line, Content-Length, body). On a 2-core machine whatever the load
// generator burns is taken from the service and PostgreSQL.
func leanLoad(rate float64) loader {
	return func(ctx context.Context, base, key, run string, clients, n int, user func(i int) string) (result, error) {
		body := []byte(debitBody)
		return drive(ctx, clients, n, rate, func() (sendFunc, func(), error) {
			conn, err := svixsender.DialLean(base, 30*time.Second)
			if err != nil {
				return nil, nil, err
			}
			h := http.Header{"Authorization": {"Bearer " + key}, "Content-Type": {"application/json"}, "Idempotency-Key": {""}}
			return func(i int) (time.Duration, int, error) {
				h["Idempotency-Key"][0] = run + "-" + strconv.Itoa(i)
				a := conn.Do(ctx, http.MethodPost, "/v1/users/"+user(i)+"/debits", h, body, false)
				if a.Err != nil {
					return 0, 0, fmt.Errorf("request %d: %w", i, a.Err)
				}
				return a.Latency, a.Status, nil
			}, conn.Close, nil
		})
	}
}

var (
	tpsRE  = regexp.MustCompile(`number of transactions actually processed: (\d+)`)
	failRE = regexp.MustCompile(`number of failed transactions: (\d+)`)
	rateRE = regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`)
)

// pgbench runs script with -M mode for -pgbench-seconds from clients
// connections and reads each transaction's latency from its log
// (pgbench-<name>.*). Its client CPU is pgbench's; its elapsed time leaves
// out the connections' set-up.
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
	out, err := os.Create(prefix + ".out")
	if err != nil {
		return result{}, err
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	start := time.Now()
	runErr := cmd.Run()
	r := result{Elapsed: time.Since(start)}
	text, _ := os.ReadFile(prefix + ".out")
	if runErr != nil {
		return r, fmt.Errorf("pgbench %s: %w\n%s", strings.Join(args, " "), runErr, text)
	}
	r.ClientCPU = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	m := tpsRE.FindSubmatch(text)
	if m == nil {
		return r, fmt.Errorf("pgbench: no transaction count in its output:\n%s", text)
	}
	r.Ops, _ = strconv.Atoi(string(m[1]))
	if m := rateRE.FindSubmatch(text); m != nil {
		if tps, _ := strconv.ParseFloat(string(m[1]), 64); tps > 0 {
			r.Elapsed = time.Duration(float64(r.Ops) / tps * float64(time.Second))
		}
	}
	if f := failRE.FindSubmatch(text); f != nil && string(f[1]) != "0" {
		return r, fmt.Errorf("pgbench: %s transactions failed:\n%s", f[1], text)
	}
	// A log line per transaction: client, transaction, latency in µs, …
	logs, _ := filepath.Glob(prefix + ".[0-9]*")
	for _, l := range logs {
		data, err := os.ReadFile(l)
		if err != nil {
			return r, err
		}
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
