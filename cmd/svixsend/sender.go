package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	svix "github.com/svix/svix-webhooks/go"
)

// maxKeptBody bounds how much of a response body is kept for display.
const maxKeptBody = 64 << 10

// message is one webhook message: Svix signs and delivers the same id and
// body on every attempt.
type message struct {
	ID     string
	Type   string
	UserID string
	Body   []byte
}

// attempt is the result of one delivery attempt. Err is a transport error
// (no HTTP response); otherwise Status is the response's status code.
type attempt struct {
	Status  int
	Body    []byte
	Latency time.Duration
	Err     error
}

// OK reports whether Svix would count the attempt as delivered.
func (a attempt) OK() bool { return a.Err == nil && a.Status >= 200 && a.Status < 300 }

// sender signs messages and POSTs them, one attempt per call. Retry policy
// belongs to the caller, so that a later Svix-like schedule (exponential
// back-off, same id and body, fresh timestamp and signature) wraps send.
type sender struct {
	url    string
	wh     *svix.Webhook
	client *http.Client
	now    func() time.Time
	// lean makes load workers use leanConn instead of client.
	lean bool
}

// newSender returns a sender whose connections are reused across up to
// conns concurrent callers.
func newSender(url, secret string, conns int, timeout time.Duration) (*sender, error) {
	wh, err := svix.NewWebhook(secret)
	if err != nil {
		// Never echo the secret.
		return nil, fmt.Errorf("signing secret is not valid base64 after whsec_")
	}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          conns,
		MaxIdleConnsPerHost:   conns,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   5 * time.Second,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
	}
	return &sender{
		url: url,
		wh:  wh,
		client: &http.Client{
			Transport: tr,
			Timeout:   timeout,
			// Svix does not follow redirects: a 3xx is a failed attempt.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		now: time.Now,
	}, nil
}

// headers returns the Svix headers for m signed at t.
func (s *sender) headers(m message, t time.Time) (http.Header, error) {
	sig, err := s.wh.Sign(m.ID, t, m.Body)
	if err != nil {
		return nil, fmt.Errorf("sign %s: %w", m.ID, err)
	}
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set("User-Agent", "svixsend (creditgate)")
	h.Set("svix-id", m.ID)
	h.Set("svix-timestamp", strconv.FormatInt(t.Unix(), 10))
	h.Set("svix-signature", sig)
	return h, nil
}

// send makes one signed delivery attempt of m. keepBody keeps up to 64 KiB
// of the response body; otherwise it is drained so the connection is reused.
func (s *sender) send(ctx context.Context, m message, keepBody bool) attempt {
	h, err := s.headers(m, s.now())
	if err != nil {
		return attempt{Err: err}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(m.Body))
	if err != nil {
		return attempt{Err: err}
	}
	req.Header = h
	start := time.Now()
	resp, err := s.client.Do(req)
	if err != nil {
		return attempt{Err: err, Latency: time.Since(start)}
	}
	a := attempt{Status: resp.StatusCode}
	if keepBody {
		a.Body, err = io.ReadAll(io.LimitReader(resp.Body, maxKeptBody))
	}
	if err == nil {
		_, err = io.Copy(io.Discard, resp.Body)
	}
	resp.Body.Close()
	a.Latency = time.Since(start)
	if err != nil {
		a.Err = fmt.Errorf("read response: %w", err)
	}
	return a
}
