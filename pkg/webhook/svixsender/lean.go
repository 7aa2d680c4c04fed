package svixsender

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// LeanConn is one persistent HTTP/1.1 connection that a load worker drives
// itself: the request is written with one write and the answer read in the
// same goroutine. net/http's client runs a reader and a writer goroutine per
// connection and hands every request and answer between them, which costs
// the sender several times the CPU per request; on a benchmark machine that
// the sender shares with the service, that CPU is taken from the service.
// It speaks plain http:// only and reconnects after Connection: close or any
// error.
type LeanConn struct {
	addr    string // host:port to dial
	host    string // the Host header
	path    string // path and query
	timeout time.Duration
	conn    net.Conn
	br      *bufio.Reader
	buf     []byte
}

// DialLean returns a LeanConn to the host of rawURL (plain http:// only),
// each round trip bounded by timeout. It connects on first use.
func DialLean(rawURL string, timeout time.Duration) (*LeanConn, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("url: %w", err)
	}
	if u.Scheme != "http" {
		return nil, fmt.Errorf("a lean connection speaks plain http:// only, not %s://", u.Scheme)
	}
	addr := net.JoinHostPort(u.Hostname(), cmp.Or(u.Port(), "80"))
	return &LeanConn{addr: addr, host: u.Host, path: u.RequestURI(), timeout: timeout}, nil
}

// Close closes the connection (a later request dials again).
func (l *LeanConn) Close() {
	if l.conn != nil {
		l.conn.Close()
		l.conn = nil
	}
}

// sendLean is Send over l, a LeanConn to the sender's URL.
func (s *Sender) sendLean(ctx context.Context, l *LeanConn, m Message) Attempt {
	h, err := s.Headers(m, time.Now())
	if err != nil {
		return Attempt{Err: err}
	}
	a := l.Do(ctx, http.MethodPost, l.path, h, m.Body, true)
	s.attempts.Add(1)
	if a.Err != nil {
		s.transportErrs.Add(1)
	}
	s.count(a)
	return a
}

// Do makes one HTTP/1.1 request (path and query, headers, body) and reads
// its answer; keepBody keeps up to 64 KiB of it.
func (l *LeanConn) Do(ctx context.Context, method, path string, h http.Header, body []byte, keepBody bool) Attempt {
	b := l.buf[:0]
	b = append(b, method...)
	b = append(b, ' ')
	b = append(b, path...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, l.host...)
	b = append(b, "\r\n"...)
	for k, vs := range h {
		for _, v := range vs {
			b = append(b, k...)
			b = append(b, ": "...)
			b = append(b, v...)
			b = append(b, "\r\n"...)
		}
	}
	b = append(b, "Content-Length: "...)
	b = strconv.AppendInt(b, int64(len(body)), 10)
	b = append(b, "\r\n\r\n"...)
	b = append(b, body...)
	l.buf = b

	start := time.Now()
	a, reuse := l.roundTrip(ctx, b, keepBody)
	a.Latency = time.Since(start)
	if !reuse {
		l.Close()
	}
	return a
}

func (l *LeanConn) roundTrip(ctx context.Context, req []byte, keepBody bool) (a Attempt, reuse bool) {
	if err := ctx.Err(); err != nil {
		return Attempt{Err: err}, false
	}
	if l.conn == nil {
		d := net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
		c, err := d.DialContext(ctx, "tcp", l.addr)
		if err != nil {
			return Attempt{Err: err}, false
		}
		l.conn, l.br = c, bufio.NewReader(c)
	}
	if err := l.conn.SetDeadline(time.Now().Add(l.timeout)); err != nil {
		return Attempt{Err: err}, false
	}
	if _, err := l.conn.Write(req); err != nil {
		return Attempt{Err: fmt.Errorf("write request: %w", err)}, false
	}
	resp, err := http.ReadResponse(l.br, nil)
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return Attempt{Err: fmt.Errorf("read response: %w", err)}, false
	}
	a = readAnswer(resp, keepBody)
	return a, a.Err == nil && !resp.Close
}
