package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
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

// TestCall: -call sends one request with the token from a file and the
// headers given, and prints the status and body whatever the status.
func TestCall(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || r.Header.Get("Authorization") != "Bearer tok123" || r.Header.Get("Idempotency-Key") != "k1" || string(b) != `{"amount":1}` {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusForbidden)
		_, _ = w.Write([]byte(`{"code":"forbidden"}`))
	}))
	defer srv.Close()
	tok := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tok, []byte("tok123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	err := run(context.Background(), []string{"-call", srv.URL, "-method", "POST", "-body", `{"amount":1}`,
		"-bearer-file", tok, "-header", "Idempotency-Key: k1"}, &out, io.Discard)
	if err != nil || out.String() != "status=403 body={\"code\":\"forbidden\"}\n" {
		t.Errorf("call = %v, %q", err, out.String())
	}
}
