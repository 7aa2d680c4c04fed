package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"
)

// serveMinimal is the floor the benchmark compares the service with: a Go
// HTTP server whose handler only runs one prepared statement (SELECT 1) on a
// pgx pool and answers 201 with a short body: no authentication, routing,
// JSON, metrics or ledger. It runs as `bench -serve-minimal` in its own
// process, so that its CPU is measured like the service's.
func serveMinimal(ctx context.Context, _ config) error {
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
	context.AfterFunc(ctx, func() { _ = srv.Close() })
	if err := srv.ListenAndServe(); err != http.ErrServerClosed {
		return err
	}
	return nil
}

// measureMinimal runs the debits' load against the minimal server, started
// from this very binary, at most rate a second (0: as fast as it answers).
func (b *bench) measureMinimal(ctx context.Context, rate float64) (result, error) {
	self, err := os.Executable()
	if err != nil {
		return result{}, err
	}
	addr, err := freeAddrs(1)
	if err != nil {
		return result{}, err
	}
	env := append([]string{"DATABASE_URL=" + b.url, "API_ADDR=" + addr[0]}, strings.Fields(b.WebhookEnv)...)
	srv, err := startProcess(ctx, "http://"+addr[0]+"/", env, os.Stderr, self, "-serve-minimal")
	if err != nil {
		return result{}, fmt.Errorf("the minimal server: %w", err)
	}
	defer srv.stop()
	load := func(n int, run string) (result, error) {
		return b.debits(ctx, b.Client, rate, "http://"+addr[0], "-", run, n, func(int) string { return "x" })
	}
	if _, err := load(20*b.Clients, "warm"); err != nil {
		return result{}, err
	}
	r, err := b.measure(ctx, srv.pid, "minimal server", func() (result, error) { return load(b.Requests, "run") })
	r.Name, r.What = "floor", "minimal Go server: net/http, pgx, `SELECT 1` prepared"
	if rate > 0 {
		r.What += fmt.Sprintf(", held to %.0f/s", rate)
	}
	return r, err
}
