package main

import (
	"bufio"
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

// leanConn is one persistent HTTP/1.1 connection that a load worker drives
// itself: the request is written with one write and the answer read in the
// same goroutine. net/http's client runs a reader and a writer goroutine per
// connection and hands every request and answer between them, which costs
// the sender several times the CPU per request; on a benchmark machine that
// the sender shares with the service, that CPU is taken from the service.
// It speaks plain http:// only and reconnects after Connection: close or any
// error.
type leanConn struct {
	s       *sender
	addr    string // host:port to dial
	host    string // the Host header
	path    string // path and query
	timeout time.Duration
	conn    net.Conn
	br      *bufio.Reader
	buf     []byte
}

func newLeanConn(s *sender, rawURL string, timeout time.Duration) (*leanConn, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("-url: %w", err)
	}
	if u.Scheme != "http" {
		return nil, fmt.Errorf("-client=lean speaks plain http:// only, not %s://", u.Scheme)
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "80")
	}
	return &leanConn{s: s, addr: addr, host: u.Host, path: u.RequestURI(), timeout: timeout}, nil
}

func (l *leanConn) close() {
	if l.conn != nil {
		l.conn.Close()
		l.conn = nil
	}
}

// send makes one signed delivery attempt of m, like sender.send.
func (l *leanConn) send(ctx context.Context, m message, keepBody bool) attempt {
	h, err := l.s.headers(m, l.s.now())
	if err != nil {
		return attempt{Err: err}
	}
	b := l.buf[:0]
	b = append(b, "POST "...)
	b = append(b, l.path...)
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
	b = strconv.AppendInt(b, int64(len(m.Body)), 10)
	b = append(b, "\r\n\r\n"...)
	b = append(b, m.Body...)
	l.buf = b

	start := time.Now()
	a, reuse := l.roundTrip(ctx, b, keepBody)
	a.Latency = time.Since(start)
	if !reuse {
		l.close()
	}
	return a
}

func (l *leanConn) roundTrip(ctx context.Context, req []byte, keepBody bool) (a attempt, reuse bool) {
	if err := ctx.Err(); err != nil {
		return attempt{Err: err}, false
	}
	if l.conn == nil {
		d := net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
		c, err := d.DialContext(ctx, "tcp", l.addr)
		if err != nil {
			return attempt{Err: err}, false
		}
		l.conn = c
		if l.br == nil {
			l.br = bufio.NewReaderSize(c, 4096)
		} else {
			l.br.Reset(c)
		}
	}
	if err := l.conn.SetDeadline(time.Now().Add(l.timeout)); err != nil {
		return attempt{Err: err}, false
	}
	if _, err := l.conn.Write(req); err != nil {
		return attempt{Err: fmt.Errorf("write request: %w", err)}, false
	}
	resp, err := http.ReadResponse(l.br, nil)
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return attempt{Err: fmt.Errorf("read response: %w", err)}, false
	}
	a.Status = resp.StatusCode
	if keepBody {
		a.Body, err = io.ReadAll(io.LimitReader(resp.Body, maxKeptBody))
	}
	if err == nil {
		_, err = io.Copy(io.Discard, resp.Body)
	}
	resp.Body.Close()
	if err != nil {
		a.Err = fmt.Errorf("read response: %w", err)
		return a, false
	}
	return a, !resp.Close
}
