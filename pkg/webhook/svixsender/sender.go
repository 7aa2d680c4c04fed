// Package svixsender sends webhooks the way Svix delivers them: each
// message signed with Svix's v1 HMAC afresh for every attempt (same id and
// body, new timestamp), retried on a schedule until a 2xx or an abort, with
// a load runner for benchmarks. It is the one sender of the project:
// cmd/svixsend is a command over it, the e2e suite and the tests deliver
// through it, and its bodies come from pkg/clerk/clerkevent.
package svixsender

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"strconv"
	"sync"
	"time"

	svix "github.com/svix/svix-webhooks/go"
)

// CompressedSchedule is Svix's retry schedule after the first attempt (5 s,
// 5 min, 30 min, 2 h, 5 h, 10 h, 10 h) scaled down for a test run.
var CompressedSchedule = []time.Duration{
	200 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 15 * time.Second, 30 * time.Second,
}

// Message is one webhook message: every attempt carries the same id and
// body. Type and UserID are for reports.
type Message struct {
	ID     string
	Type   string
	UserID string
	Body   []byte
}

// Attempt is the result of one delivery attempt. Err is a transport error
// (no HTTP response); otherwise Status is the response's status code.
type Attempt struct {
	Status  int
	Body    []byte
	Header  http.Header
	Latency time.Duration
	Err     error
}

// OK reports whether Svix would count the attempt as delivered.
func (a Attempt) OK() bool { return a.Err == nil && a.Status >= 200 && a.Status < 300 }

// Aborted reports whether the receiver asked Svix to stop retrying
// (webhook-delivery: abort-message on a 4xx).
func (a Attempt) Aborted() bool {
	return a.Err == nil && a.Header.Get("webhook-delivery") == "abort-message"
}

// Options configures New.
type Options struct {
	// Conns is how many connections are kept for reuse across concurrent
	// callers; 0 means 64.
	Conns int
	// Timeout bounds one attempt; 0 means 15 s.
	Timeout time.Duration
	// Schedule is Deliver's waits between attempts; nil means one attempt.
	Schedule []time.Duration
	// Lean makes Load's workers drive their own connections (LeanConn).
	Lean bool
	// UserAgent is sent with every attempt; empty means "svixsender (creditgate)".
	UserAgent string
}

// Counts are the sender's attempts so far: how many, how many answered
// other than 2xx, how many got no answer, and the answers by status.
type Counts struct {
	Attempts, Non2xx, TransportErrors int64
	Statuses                          map[int]int
}

// Sender signs and POSTs messages to one URL. It is safe for concurrent use.
type Sender struct {
	url    string
	wh     *svix.Webhook
	client *http.Client
	opts   Options
	mu     sync.Mutex
	counts Counts
}

// errSecret never echoes the secret.
var errSecret = errors.New("signing secret is not valid base64 after whsec_")

// New returns a Sender to url signing with secret (whsec_…).
func New(url, secret string, o Options) (*Sender, error) {
	wh, err := svix.NewWebhook(secret)
	if err != nil {
		return nil, errSecret
	}
	o.Conns = cmp.Or(o.Conns, 64)
	o.Timeout = cmp.Or(o.Timeout, 15*time.Second)
	o.UserAgent = cmp.Or(o.UserAgent, "svixsender (creditgate)")
	tr := http.DefaultTransport.(*http.Transport).Clone()
	// Conns HTTP/1.1 connections, as Svix opens them, never one HTTP/2 stream each.
	tr.MaxIdleConns, tr.MaxIdleConnsPerHost, tr.DisableCompression, tr.ForceAttemptHTTP2 = o.Conns, o.Conns, true, false
	return &Sender{
		url: url, wh: wh, opts: o, counts: Counts{Statuses: map[int]int{}},
		client: &http.Client{
			Transport: tr,
			Timeout:   o.Timeout,
			// Svix does not follow redirects: a 3xx is a failed attempt.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}, nil
}

// Sign returns the headers Svix sends with m signed with secret (whsec_…)
// at t: svix-id, svix-timestamp, svix-signature and the content type.
func Sign(secret string, m Message, t time.Time) (http.Header, error) {
	wh, err := svix.NewWebhook(secret)
	if err != nil {
		return nil, errSecret
	}
	return (&Sender{wh: wh}).Headers(m, t), nil // no User-Agent: the caller's client sends its own
}

// Headers returns the Svix headers for m signed at t, and the User-Agent.
func (s *Sender) Headers(m Message, t time.Time) http.Header {
	sig, _ := s.wh.Sign(m.ID, t, m.Body) // an HMAC: it returns no error
	h := http.Header{"Content-Type": {"application/json"}, "Svix-Id": {m.ID},
		"Svix-Timestamp": {strconv.FormatInt(t.Unix(), 10)}, "Svix-Signature": {sig}}
	if s.opts.UserAgent != "" {
		h.Set("User-Agent", s.opts.UserAgent)
	}
	return h
}

// Post makes one attempt of m signed at signedAt; mutate, if set, changes
// the request before it is sent (tests of bad input).
func (s *Sender) Post(ctx context.Context, m Message, signedAt time.Time, mutate func(*http.Request)) Attempt {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(m.Body))
	if err != nil {
		return Attempt{Err: err}
	}
	req.Header = s.Headers(m, signedAt)
	if mutate != nil {
		mutate(req)
	}
	s.begin()
	start := time.Now()
	resp, err := s.client.Do(req)
	a := Attempt{Err: err}
	if err == nil {
		a = readAnswer(resp, true)
	}
	a.Latency = time.Since(start)
	return s.count(a)
}

// readAnswer reads and closes resp, keeping up to 64 KiB of its body if
// keepBody.
func readAnswer(resp *http.Response, keepBody bool) Attempt {
	a := Attempt{Status: resp.StatusCode, Header: resp.Header}
	var err error
	if keepBody {
		a.Body, err = io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	}
	if err == nil {
		_, err = io.Copy(io.Discard, resp.Body)
	}
	resp.Body.Close()
	if err != nil {
		a.Err = fmt.Errorf("read response: %w", err)
	}
	return a
}

// begin counts an attempt as it starts (a spec may ask whether any began
// after some moment), count its outcome.
func (s *Sender) begin() {
	s.mu.Lock()
	s.counts.Attempts++
	s.mu.Unlock()
}

// count records a's outcome and returns it.
func (s *Sender) count(a Attempt) Attempt {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a.Err != nil {
		s.counts.TransportErrors++
		return a
	}
	s.counts.Statuses[a.Status]++
	if !a.OK() {
		s.counts.Non2xx++
	}
	return a
}

// Counts returns the attempts made so far.
func (s *Sender) Counts() Counts {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.counts
	c.Statuses = maps.Clone(c.Statuses)
	return c
}

// Deliver sends m until a 2xx, following the schedule; it returns the last
// attempt. An abort ends it, as it would Svix's.
func (s *Sender) Deliver(ctx context.Context, m Message) Attempt {
	for i := 0; ; i++ {
		a := s.Post(ctx, m, time.Now(), nil)
		if a.OK() || a.Aborted() || i >= len(s.opts.Schedule) {
			return a
		}
		select {
		case <-ctx.Done():
			return Attempt{Err: ctx.Err()}
		case <-time.After(s.opts.Schedule[i]):
		}
	}
}

// DeliverAll delivers every message, concurrency at a time, and returns a
// line for each that never got a 2xx.
func (s *Sender) DeliverAll(ctx context.Context, msgs []Message, concurrency int) []string {
	sem := make(chan struct{}, concurrency)
	var mu sync.Mutex
	var failed []string
	var wg sync.WaitGroup
	for _, m := range msgs {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if a := s.Deliver(ctx, m); !a.OK() {
				mu.Lock()
				failed = append(failed, fmt.Sprintf("%s: %d %v %s", m.ID, a.Status, a.Err, a.Body))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return failed
}
