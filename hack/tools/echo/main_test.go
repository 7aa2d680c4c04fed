package main

import (
	"bytes"
	"context"
	"net"
	"strings"
	"testing"
	"time"
)

func TestServeAndGet(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // serve re-binds it; the race is harmless on loopback in a test

	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- run(ctx, []string{"-listen", addr}, &bytes.Buffer{}, &bytes.Buffer{}) }()

	var out bytes.Buffer
	if err := run(context.Background(), []string{"-get", "http://" + addr + "/probe", "-timeout", "5s"}, &out, &bytes.Buffer{}); err != nil {
		t.Fatalf("get: %v", err)
	}
	if got := out.String(); !strings.HasPrefix(got, "echo host=") || !strings.Contains(got, "path=/probe") {
		t.Errorf("body = %q, want an echo line for /probe", got)
	}

	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("serve after cancel: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("server did not stop")
	}
}

func TestGetFailsWithoutServer(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	err = run(context.Background(), []string{"-get", "http://" + addr + "/", "-timeout", "1500ms"}, &bytes.Buffer{}, &bytes.Buffer{})
	if err == nil {
		t.Fatal("get with nothing listening succeeded")
	}
}
