package dbdown_test

import (
	"context"
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
)

// proxy is a TCP relay to a database server that the test can cut off and
// restore: the outage, when the server is not the tests' own to stop
// (TEST_DATABASE_URL). Stop closes every relayed connection and refuses new
// ones, as a server shutting down does; Restart listens again on the same
// address.
type proxy struct {
	addr, upstream string
	mu             sync.Mutex
	ln             net.Listener
	conns          map[net.Conn]struct{}
}

func startProxy(t *testing.T, upstream string) *proxy {
	t.Helper()
	p := &proxy{addr: "127.0.0.1:0", upstream: upstream, conns: map[net.Conn]struct{}{}}
	if err := p.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	p.addr = p.ln.Addr().String()
	t.Cleanup(func() { _ = p.Stop() })
	return p
}

// url is dbURL reaching the server through the proxy.
func (p *proxy) url(dbURL string) string {
	u, _ := url.Parse(dbURL)
	u.Host = p.addr
	return u.String()
}

func (p *proxy) Restart(context.Context) error {
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.relay(c)
		}
	}()
	return nil
}

func (p *proxy) relay(c net.Conn) {
	up, err := net.Dial("tcp", p.upstream)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	if p.ln == nil { // stopped meanwhile
		p.mu.Unlock()
		c.Close()
		up.Close()
		return
	}
	p.conns[c], p.conns[up] = struct{}{}, struct{}{}
	p.mu.Unlock()
	var wg sync.WaitGroup
	copyThenClose := func(dst, src net.Conn) {
		defer wg.Done()
		_, _ = io.Copy(dst, src)
		dst.Close()
		src.Close()
	}
	wg.Add(2)
	go copyThenClose(up, c)
	go copyThenClose(c, up)
	wg.Wait()
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, up)
	p.mu.Unlock()
}

func (p *proxy) Stop() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
	return nil
}
