//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	svix "github.com/svix/svix-webhooks/go"
)

// message is one Svix message: every attempt carries the same id and body,
// signed afresh with the attempt's timestamp.
type message struct {
	ID   string
	Body []byte
}

// sender delivers messages like Svix does: a non-2xx answer or a transport
// error is retried on a schedule (Svix's is 5 s, 5 min, 30 min, 2 h, 5 h,
// 10 h, 10 h; the suite compresses it).
type sender struct {
	url      string
	wh       *svix.Webhook
	client   *http.Client
	schedule []time.Duration

	attempts, non2xx, transportErrs atomic.Int64
	mu                              sync.Mutex
	statuses                        map[int]int
}

// compressedSchedule is Svix's retry schedule scaled down for a test run.
var compressedSchedule = []time.Duration{
	200 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 15 * time.Second, 30 * time.Second,
}

func newSender(url, secret string, schedule []time.Duration) *sender {
	wh, err := svix.NewWebhook(secret)
	if err != nil {
		panic(err)
	}
	return &sender{
		url: url, wh: wh, schedule: schedule, statuses: map[int]int{},
		client: &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}},
	}
}

// attempt is one delivery attempt's answer.
type attempt struct {
	Status int
	Body   string
	Header http.Header
	Err    error
}

// post makes one signed attempt with the given headers override (for bad
// input specs) and returns the answer.
func (s *sender) post(ctx context.Context, m message, signedAt time.Time, mutate func(*http.Request)) attempt {
	sig, err := s.wh.Sign(m.ID, signedAt, m.Body)
	if err != nil {
		return attempt{Err: err}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(m.Body))
	if err != nil {
		return attempt{Err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("svix-id", m.ID)
	req.Header.Set("svix-timestamp", strconv.FormatInt(signedAt.Unix(), 10))
	req.Header.Set("svix-signature", sig)
	if mutate != nil {
		mutate(req)
	}
	s.attempts.Add(1)
	resp, err := s.client.Do(req)
	if err != nil {
		s.transportErrs.Add(1)
		return attempt{Err: err}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	s.mu.Lock()
	s.statuses[resp.StatusCode]++
	s.mu.Unlock()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		s.non2xx.Add(1)
	}
	return attempt{Status: resp.StatusCode, Body: string(b), Header: resp.Header}
}

// deliver sends m until a 2xx, following the retry schedule; it returns the
// last attempt. A 4xx with webhook-delivery: abort-message ends it, as
// Svix would.
func (s *sender) deliver(ctx context.Context, m message) attempt {
	var a attempt
	for i := 0; ; i++ {
		a = s.post(ctx, m, time.Now(), nil)
		if a.Err == nil && a.Status >= 200 && a.Status < 300 {
			return a
		}
		if a.Err == nil && a.Header.Get("webhook-delivery") == "abort-message" {
			return a
		}
		if i >= len(s.schedule) {
			return a
		}
		select {
		case <-ctx.Done():
			return attempt{Err: ctx.Err()}
		case <-time.After(s.schedule[i]):
		}
	}
}

// deliverAll sends every message with concurrency senders and returns the
// messages that never got a 2xx.
func (s *sender) deliverAll(ctx context.Context, msgs []message, concurrency int) []string {
	work := make(chan message)
	var mu sync.Mutex
	var failed []string
	var wg sync.WaitGroup
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range work {
				if a := s.deliver(ctx, m); a.Err != nil || a.Status < 200 || a.Status > 299 {
					mu.Lock()
					failed = append(failed, fmt.Sprintf("%s: %d %v %s", m.ID, a.Status, a.Err, a.Body))
					mu.Unlock()
				}
			}
		}()
	}
	for _, m := range msgs {
		work <- m
	}
	close(work)
	wg.Wait()
	return failed
}

// userCreated is a Clerk user.created message for a new user.
func userCreated(svixID, clerkID, email string, version int64) message {
	return message{ID: svixID, Body: []byte(fmt.Sprintf(
		`{"data":{"id":%q,"object":"user","email_addresses":[{"id":"idn_%s","object":"email_address","email_address":%q}],"primary_email_address_id":"idn_%s","first_name":"E2E","created_at":%d,"updated_at":%d},"object":"event","type":"user.created","timestamp":%d,"instance_id":"ins_e2e"}`,
		clerkID, clerkID, email, clerkID, version, version, version))}
}

func userUpdated(svixID, clerkID, email string, version int64) message {
	m := userCreated(svixID, clerkID, email, version)
	m.Body = bytes.Replace(m.Body, []byte(`"type":"user.created"`), []byte(`"type":"user.updated"`), 1)
	return m
}

func userDeleted(svixID, clerkID string) message {
	return message{ID: svixID, Body: []byte(fmt.Sprintf(
		`{"data":{"id":%q,"object":"user","deleted":true},"object":"event","type":"user.deleted","timestamp":%d,"instance_id":"ins_e2e"}`,
		clerkID, time.Now().UnixMilli()))}
}
