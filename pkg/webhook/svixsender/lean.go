package svixsender

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"
)

// LeanConn is one persistent HTTP/1.1 connection that a load worker drives
// itself: one write per request, the answer read in the same goroutine.
// net/http's client hands every request and answer between a reader and a
// writer goroutine per connection, several times the CPU per request, taken
// from the service on a benchmark machine that both share. It speaks plain
// http:// only and reconnects after Connection: close or any error.
type LeanConn struct {
	addr    string // host:port to dial
	host    string // the Host header
	path    string // path and query
	timeout time.Duration
	conn    net.Conn
	br      *bufio.Reader
	buf     bytes.Buffer
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

// Do makes one HTTP/1.1 request (path and query, headers, body) and reads
// its answer; keepBody keeps up to 64 KiB of it.
func (l *LeanConn) Do(ctx context.Context, method, path string, h http.Header, body []byte, keepBody bool) (a Attempt) {
	l.buf.Reset()
	fmt.Fprintf(&l.buf, "%s %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n", method, path, l.host, len(body))
	_ = h.Write(&l.buf) // a bytes.Buffer does not fail
	l.buf.WriteString("\r\n")
	l.buf.Write(body)
	start := time.Now()
	defer func() {
		a.Latency = time.Since(start)
		if a.Err != nil {
			l.Close()
		}
	}()
	if err := ctx.Err(); err != nil {
		return Attempt{Err: err}
	}
	if l.conn == nil {
		c, err := (&net.Dialer{Timeout: l.timeout}).DialContext(ctx, "tcp", l.addr)
		if err != nil {
			return Attempt{Err: err}
		}
		l.conn, l.br = c, bufio.NewReader(c)
	}
	if err := l.conn.SetDeadline(time.Now().Add(l.timeout)); err != nil {
		return Attempt{Err: err}
	}
	if _, err := l.conn.Write(l.buf.Bytes()); err != nil {
		return Attempt{Err: fmt.Errorf("write request: %w", err)}
	}
	resp, err := http.ReadResponse(l.br, nil)
	if err != nil {
		return Attempt{Err: fmt.Errorf("read response: %w", err)}
	}
	if resp.Close {
		defer l.Close() // after the answer is read
	}
	return readAnswer(resp, keepBody)
}
