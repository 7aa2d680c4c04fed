package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgxpool"
)

// serveMinimal is the floor the benchmark compares the service with: a Go
// HTTP server whose handler only runs one prepared statement (SELECT 1) on a
// pgx pool and answers 201 with a short body: no authentication, routing,
// JSON, metrics or ledger. It runs as `bench -serve-minimal` in its own
// process, so that its CPU is measured like the service's.
func serveMinimal() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		return err
	}
	defer pool.Close()
	srv := &http.Server{Addr: os.Getenv("API_ADDR"), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var n int
		if err := pool.QueryRow(r.Context(), "SELECT 1").Scan(&n); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		fmt.Fprint(w, `{"ok":true}`)
	})}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if err := srv.ListenAndServe(); err != http.ErrServerClosed {
		return err
	}
	return nil
}

// measureMinimal runs the same load against the minimal server, started from
// this very binary; note ends its row's name.
func (b *bench) measureMinimal(ctx context.Context, load loader, note string) (result, error) {
	self, err := os.Executable()
	if err != nil {
		return result{}, err
	}
	addr, err := freeAddrs(1)
	if err != nil {
		return result{}, err
	}
	cmd := exec.Command(self, "-serve-minimal")
	cmd.Env = append(append(os.Environ(), "DATABASE_URL="+b.url, "API_ADDR="+addr[0]), strings.Fields(b.WebhookEnv)...)
	cmd.Stderr = os.Stderr
	base := "http://" + addr[0]
	srv, err := startProcess(ctx, cmd, base+"/")
	if err != nil {
		return result{}, fmt.Errorf("the minimal server: %w", err)
	}
	defer srv.stop()
	user := func(int) string { return "x" }
	if _, err := load(ctx, base, "-", "warm", b.Clients, 20*b.Clients, user); err != nil {
		return result{}, err
	}
	r, err := b.measure(ctx, cmd.Process.Pid, "minimal server", func() (result, error) {
		return load(ctx, base, "-", "run", b.Clients, b.Requests, user)
	})
	r.Name, r.What = "floor", "minimal Go server: net/http, pgx, `SELECT 1` prepared"+note
	return r, err
}
