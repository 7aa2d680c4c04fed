package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/creditgate/creditgate/pkg/webhook/svixsender"
)

// loader drives n debits from clients concurrent clients.
type loader func(ctx context.Context, base, key, run string, clients, n int, user func(i int) string) ([]time.Duration, map[int]int, time.Duration, error)

// result is one measured run, of the service or of pgbench.
type result struct {
	Name      string
	What      string // the run column, if not the service's or pgbench's
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

// apiLoad posts n debits of 1 credit through the credits API from clients
// concurrent keep-alive connections, user(i) naming the user of the i-th.
// It returns the latency of each and the count of each status.
func apiLoad(ctx context.Context, base, key, run string, clients, n int, user func(i int) string) ([]time.Duration, map[int]int, time.Duration, error) {
	tr := &http.Transport{MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	body := []byte(`{"amount":1,"reason":"bench"}`)
	lat := make([]time.Duration, n)
	status := make([]int, n)
	var next atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/users/"+user(i)+"/debits", strings.NewReader(string(body)))
				req.Header.Set("Authorization", "Bearer "+key)
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Idempotency-Key", run+"-"+strconv.Itoa(i))
				t0 := time.Now()
				resp, err := client.Do(req)
				if err != nil {
					once.Do(func() { firstErr = err })
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				lat[i], status[i] = time.Since(t0), resp.StatusCode
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	counts := map[int]int{}
	for _, s := range status {
		counts[s]++
	}
	return lat, counts, elapsed, firstErr
}

var (
	tpsRE   = regexp.MustCompile(`number of transactions actually processed: (\d+)`)
	failRE  = regexp.MustCompile(`number of failed transactions: (\d+)`)
	rateRE  = regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`)
	logLine = regexp.MustCompile(`^\d+ \d+ (\d+) `)
)

// pgbench runs the script for seconds from clients connections and reads
// each transaction's latency from its log. elapsed is the run's length.
func pgbench(ctx context.Context, bin string, args []string, dir, name string) (ops int, lat []time.Duration, cpu time.Duration, elapsed time.Duration, err error) {
	prefix := filepath.Join(dir, "pgbench-"+name)
	old, _ := filepath.Glob(prefix + ".[0-9]*") // an earlier run's, in a kept directory
	for _, f := range old {
		_ = os.Remove(f)
	}
	args = append(args, "-l", "--log-prefix", prefix)
	cmd := exec.CommandContext(ctx, bin, args...)
	out, err := os.Create(prefix + ".out")
	if err != nil {
		return 0, nil, 0, 0, err
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	start := time.Now()
	runErr := cmd.Run()
	elapsed = time.Since(start)
	text, _ := os.ReadFile(prefix + ".out")
	if runErr != nil {
		return 0, nil, 0, 0, fmt.Errorf("pgbench %s: %w\n%s", strings.Join(args, " "), runErr, text)
	}
	cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	m := tpsRE.FindSubmatch(text)
	if m == nil {
		return 0, nil, 0, 0, fmt.Errorf("pgbench: no transaction count in its output:\n%s", text)
	}
	ops, _ = strconv.Atoi(string(m[1]))
	if r := rateRE.FindSubmatch(text); r != nil {
		// pgbench's own rate leaves out its connection set-up.
		if tps, _ := strconv.ParseFloat(string(r[1]), 64); tps > 0 {
			elapsed = time.Duration(float64(ops) / tps * float64(time.Second))
		}
	}
	if f := failRE.FindSubmatch(text); f != nil && string(f[1]) != "0" {
		return 0, nil, 0, 0, fmt.Errorf("pgbench: %s transactions failed:\n%s", f[1], text)
	}
	logs, _ := filepath.Glob(prefix + ".[0-9]*")
	for _, l := range logs {
		f, err := os.Open(l)
		if err != nil {
			return 0, nil, 0, 0, err
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if m := logLine.FindStringSubmatch(sc.Text()); m != nil {
				us, _ := strconv.ParseInt(m[1], 10, 64)
				lat = append(lat, time.Duration(us)*time.Microsecond)
			}
		}
		f.Close()
	}
	if len(lat) != ops {
		return 0, nil, 0, 0, fmt.Errorf("pgbench: %d transactions, but %d in its logs", ops, len(lat))
	}
	return ops, lat, cpu, elapsed, nil
}

// leanLoad is apiLoad with a client that costs the machine less: one
// keep-alive connection per client, driven in its own goroutine, each
// request written in one write and its answer read with a small parser
// (status line, Content-Length, body). On a 2-core machine whatever the
// load generator burns is taken from the service and PostgreSQL;
// -client net/http measures with Go's client instead.
func leanLoad(ctx context.Context, base, key, run string, clients, n int, user func(i int) string) ([]time.Duration, map[int]int, time.Duration, error) {
	return pacedLoad(0)(ctx, base, key, run, clients, n, user)
}

// pacedLoad is leanLoad sending at most rate requests per second (0: as
// fast as answers come), request i not before start + i/rate.
func pacedLoad(rate float64) loader {
	return func(ctx context.Context, base, key, run string, clients, n int, user func(i int) string) ([]time.Duration, map[int]int, time.Duration, error) {
		return lean(ctx, base, key, run, clients, n, user, rate)
	}
}

func lean(ctx context.Context, base, key, run string, clients, n int, user func(i int) string, rate float64) ([]time.Duration, map[int]int, time.Duration, error) {
	lat := make([]time.Duration, n)
	status := make([]int, n)
	var next atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	body := []byte(`{"amount":1,"reason":"bench"}`)
	start := time.Now()
	for range clients {
		wg.Go(func() {
			fail := func(err error) { once.Do(func() { firstErr = err }) }
			// The kit's lean connection: one write per request, the answer
			// read in this goroutine (net/http's client costs the shared
			// machine several times the CPU).
			conn, err := svixsender.DialLean(base, 30*time.Second)
			if err != nil {
				fail(err)
				return
			}
			defer conn.Close()
			h := http.Header{"Authorization": {"Bearer " + key}, "Content-Type": {"application/json"}, "Idempotency-Key": {""}}
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				if rate > 0 {
					if d := time.Until(start.Add(time.Duration(float64(i) / rate * float64(time.Second)))); d > 0 {
						time.Sleep(d)
					}
				}
				h["Idempotency-Key"][0] = run + "-" + strconv.Itoa(i)
				a := conn.Do(ctx, http.MethodPost, "/v1/users/"+user(i)+"/debits", h, body, false)
				if a.Err != nil {
					fail(fmt.Errorf("request %d: %w", i, a.Err))
					return
				}
				lat[i], status[i] = a.Latency, a.Status
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	counts := map[int]int{}
	for _, s := range status {
		counts[s]++
	}
	return lat, counts, elapsed, firstErr
}
