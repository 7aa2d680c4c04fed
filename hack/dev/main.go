// Command dev runs creditgate for real on this machine: a local PostgreSQL it
// starts itself (data kept under the user cache dir), the migrations, and the
// webhook binary with a generated development signing secret. Ctrl-C stops
// everything. Run it with `make dev`.
package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/creditgate/creditgate/pkg/pglocal"
	"github.com/creditgate/creditgate/pkg/postgres"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "dev:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	cache, err := os.UserCacheDir()
	if err != nil || os.Geteuid() == 0 {
		// As root PostgreSQL runs as the postgres user, who cannot enter /root.
		cache = "/var/tmp"
	}
	dir := filepath.Join(cache, "creditgate-dev")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	pgDir := filepath.Join(dir, "pg")
	if err := os.MkdirAll(pgDir, 0o700); err != nil {
		return err
	}
	fmt.Println("starting PostgreSQL in", pgDir)
	port, err := strconv.Atoi(envOr("DEV_PG_PORT", "54329"))
	if err != nil {
		return fmt.Errorf("DEV_PG_PORT: %w", err)
	}
	pg, err := pglocal.Start(ctx, pglocal.Options{Dir: pgDir, Port: port, Fsync: true, LogFile: filepath.Join(dir, "postgres.log")})
	if err != nil {
		return err
	}
	defer pg.Stop()
	if err := pg.CreateDatabase(ctx, "creditgate", ""); err != nil && !strings.Contains(err.Error(), "already exists") {
		return err
	}
	dbURL := pg.URL("creditgate")

	db, err := postgres.Open(dbURL, postgres.Options{MaxConns: 2})
	if err != nil {
		return err
	}
	applied, err := postgres.Migrate(ctx, db, slog.New(slog.NewTextHandler(io.Discard, nil)))
	db.Close()
	if err != nil {
		return err
	}
	fmt.Printf("migrations applied now: %d\n", len(applied))

	secret, err := devSecret(filepath.Join(dir, "signing-secret"))
	if err != nil {
		return err
	}
	bin := filepath.Join(dir, "webhook")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/webhook")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("build webhook: %w", err)
	}

	httpAddr := envOr("HTTP_ADDR", "127.0.0.1:8080")
	fmt.Printf(`
creditgate is starting on http://%[1]s (metrics on %[4]s/metrics)

  DATABASE_URL=%[2]s
  CLERK_WEBHOOK_SIGNING_SECRET=%[3]s   (a development secret, kept in %[5]s)

Send a signed Clerk user.created event (in another terminal):

  go run ./cmd/svixsend -url http://%[1]s/api/webhooks/clerk -secret %[3]s -user user_demo -email demo@example.com

Then look at the ledger:

  psql '%[2]s' -c 'SELECT clerk_id, email, available_credits FROM users'

Ctrl-C stops the service and PostgreSQL (data stays in %[6]s).

`, httpAddr, dbURL, secret, envOr("METRICS_ADDR", "127.0.0.1:9090"), filepath.Join(dir, "signing-secret"), pgDir)

	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(),
		"DATABASE_URL="+dbURL,
		"CLERK_WEBHOOK_SIGNING_SECRET="+secret,
		"HTTP_ADDR="+httpAddr,
		"METRICS_ADDR="+envOr("METRICS_ADDR", "127.0.0.1:9090"),
		"LOG_FORMAT="+envOr("LOG_FORMAT", "text"),
	)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	waitErr := make(chan error, 1)
	go func() { waitErr <- cmd.Wait() }()
	select {
	case err := <-waitErr:
		return fmt.Errorf("webhook exited: %w", err)
	case <-ctx.Done():
		_ = cmd.Process.Signal(syscall.SIGTERM)
		if err := <-waitErr; err != nil {
			var ee *exec.ExitError
			if !errors.As(err, &ee) {
				return err
			}
		}
		return nil
	}
}

// devSecret returns the development signing secret, creating it once.
func devSecret(path string) (string, error) {
	if b, err := os.ReadFile(path); err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	key := make([]byte, 24)
	if _, err := rand.Read(key); err != nil {
		return "", err
	}
	s := "whsec_" + base64.StdEncoding.EncodeToString(key)
	return s, os.WriteFile(path, []byte(s+"\n"), 0o600)
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
