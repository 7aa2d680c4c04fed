package svixsender

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/creditgate/creditgate/pkg/clerk/clerkevent"
)

// Generator makes the messages of a run: Clerk events of one type, each for
// a new user or all for one. It is safe for concurrent use.
type Generator struct {
	EventType  string
	InstanceID string
	// Unique gives every message a new user (and so a new signup).
	Unique bool
	// User and Email are the one user of a non-unique run.
	User, Email string
	// SvixID, when set, is reused by every message: redeliveries of one message.
	SvixID string
}

// Message makes a message of the run; EventType must be one of
// clerkevent.Types.
func (g *Generator) Message() Message {
	user, email := g.User, g.Email
	if g.Unique {
		user = clerkevent.NewID("user")
		email = clerkevent.EmailFor(user)
	}
	body := clerkevent.Event{Type: g.EventType, UserID: user, Email: email, InstanceID: g.InstanceID}.MustBody()
	m := Message{ID: g.SvixID, Type: g.EventType, UserID: user, Body: body}
	if m.ID == "" {
		m.ID = clerkevent.NewID("msg")
	}
	return m
}

// LoadResult is a finished (or interrupted) load run.
type LoadResult struct {
	requested, concurrency, failed int
	unique                         bool
	// cpu is this process's user+system CPU time during the run.
	elapsed, cpu time.Duration
	latencies    []time.Duration
	status       map[int]int
	// sample keeps the first response body of each non-2xx status.
	sample map[int]string
	errors map[string]int
}

// add records an attempt.
func (r *LoadResult) add(a Attempt) {
	r.latencies = append(r.latencies, a.Latency)
	if !a.OK() {
		r.failed++
	}
	if a.Err != nil {
		// Bound the distinct messages kept: a dead target repeats one error.
		if _, ok := r.errors[a.Err.Error()]; ok || len(r.errors) < 10 {
			r.errors[a.Err.Error()]++
		} else {
			r.errors["(other errors)"]++
		}
		return
	}
	r.status[a.Status]++
	if _, ok := r.sample[a.Status]; !ok && !a.OK() {
		r.sample[a.Status] = strings.TrimSpace(string(a.Body))
	}
}

// Failed counts attempts that Svix would retry or give up on.
func (r LoadResult) Failed() int { return r.failed }

// Load sends n messages from c concurrent workers, each waiting for its
// response before sending the next (closed loop, like Svix's per-endpoint
// concurrency). A cancelled ctx stops it early; what was sent is reported.
// pregenerate builds every body before the clock starts, so that during the
// run the sender spends its CPU on signing and HTTP only (a benchmark's
// load generator shares the machine with what it measures).
func Load(ctx context.Context, s *Sender, g *Generator, n, c int, pregenerate bool) (LoadResult, error) {
	res := LoadResult{requested: n, concurrency: c, unique: g.Unique,
		latencies: make([]time.Duration, 0, n), status: map[int]int{}, sample: map[int]string{}, errors: map[string]int{}}
	if s.opts.Lean { // each worker dials its own below: check the URL once
		if _, err := DialLean(s.url, s.opts.Timeout); err != nil {
			return res, err
		}
	}
	var pre []Message
	for pregenerate && len(pre) < n {
		pre = append(pre, g.Message())
	}
	var next atomic.Int64
	var mu sync.Mutex // guards res.add
	var wg sync.WaitGroup
	cpu0 := cpuTime()
	start := time.Now()
	for range c {
		wg.Go(func() {
			send := func(ctx context.Context, m Message) Attempt { return s.Post(ctx, m, time.Now(), nil) }
			if s.opts.Lean {
				lc, _ := DialLean(s.url, s.opts.Timeout) // checked above
				defer lc.Close()
				send = func(ctx context.Context, m Message) Attempt {
					s.begin()
					return s.count(lc.Do(ctx, http.MethodPost, lc.path, s.Headers(m, time.Now()), m.Body, true))
				}
			}
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				var m Message
				if pre != nil {
					m, pre[i] = pre[i], Message{} // sent: let it be collected
				} else {
					m = g.Message()
				}
				a := send(ctx, m)
				if ctx.Err() != nil {
					// Interrupted: the attempt did not really fail.
					return
				}
				mu.Lock()
				res.add(a)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	res.elapsed, res.cpu = time.Since(start), cpuTime()-cpu0
	return res, nil
}

// cpuTime is this process's user+system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru) // on error, ru stays zero
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// percentile returns the nearest-rank p-th percentile of sorted durations.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(float64(len(sorted))*p/100+0.999999999) - 1
	return sorted[max(0, min(rank, len(sorted)-1))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// Sent is how many attempts the run made.
func (r LoadResult) Sent() int { return len(r.latencies) }

// Latencies are the attempts' latencies, in the order they were recorded.
func (r LoadResult) Latencies() []time.Duration { return r.latencies }

// Statuses counts the answers by status code.
func (r LoadResult) Statuses() map[int]int { return r.status }

// Elapsed is the run's wall time.
func (r LoadResult) Elapsed() time.Duration { return r.elapsed }

// Print writes the summary as "name: value" lines, stable for scripts and
// readable for people.
func (r LoadResult) Print(w io.Writer) {
	lat := slices.Sorted(slices.Values(r.latencies))
	sent := len(lat)
	fmt.Fprintf(w, "events: %d\n", sent)
	if sent < r.requested {
		fmt.Fprintf(w, "interrupted_after: %d of %d\n", sent, r.requested)
	}
	fmt.Fprintf(w, "concurrency: %d\n", r.concurrency)
	fmt.Fprintf(w, "unique_users: %t\n", r.unique)
	fmt.Fprintf(w, "duration_s: %.3f\n", r.elapsed.Seconds())
	fmt.Fprintf(w, "throughput_per_s: %.1f\n", float64(sent)/max(r.elapsed.Seconds(), 1e-9)) // a run that never started took 0 s
	codes := slices.Sorted(maps.Keys(r.status))
	for _, code := range codes {
		fmt.Fprintf(w, "status_%d: %d\n", code, r.status[code])
	}
	fmt.Fprintf(w, "failed: %d\n", r.Failed())
	for _, p := range []float64{50, 90, 99} {
		fmt.Fprintf(w, "latency_p%v_ms: %.3f\n", p, ms(percentile(lat, p)))
	}
	if sent > 0 {
		fmt.Fprintf(w, "latency_max_ms: %.3f\n", ms(lat[sent-1]))
		fmt.Fprintf(w, "sender_cpu_us_per_event: %.1f\n", float64(r.cpu)/float64(time.Microsecond)/float64(sent))
	}
	for _, code := range codes {
		if body, ok := r.sample[code]; ok {
			fmt.Fprintf(w, "first_body_%d: %s\n", code, body)
		}
	}
	for _, e := range slices.Sorted(maps.Keys(r.errors)) {
		fmt.Fprintf(w, "error: %s (x%d)\n", e, r.errors[e])
	}
}
