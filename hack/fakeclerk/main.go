// Command fakeclerk serves clerkfake, the fake Clerk Backend API, as a
// process for local runs. Point the Clerk client's BackendConfig.URL at
// http://<addr>/v1 and drive the fake (users, faults, rate limit, call record)
// through its admin API under http://<addr>/_fake/.
//
//	go run ./hack/fakeclerk -addr 127.0.0.1:8081 -secret-key sk_test_x -seed-users 50
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/creditgate/creditgate/pkg/clerk/clerkfake"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(ctx, os.Args[1:], logger); err != nil && !errors.Is(err, flag.ErrHelp) {
		logger.Error("fakeclerk failed", "error", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, logger *slog.Logger) error {
	fs := flag.NewFlagSet("fakeclerk", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:8081", "address to listen on")
	secretKey := fs.String("secret-key", "", "require \"Authorization: Bearer <`key`>\" on the Backend API; empty accepts any")
	seedUsers := fs.Int("seed-users", 0, "start with this many users, signed up a minute apart up to now")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if *seedUsers < 0 {
		return fmt.Errorf("-seed-users must be 0 or more, got %d", *seedUsers)
	}

	fake := clerkfake.New()
	fake.SetSecretKey(*secretKey)
	start := time.Now().Truncate(time.Second).Add(-time.Duration(*seedUsers) * time.Minute)
	for i := range *seedUsers {
		fake.AddUser(clerkfake.User{
			ID:        fmt.Sprintf("user_seed%05d", i+1),
			Email:     fmt.Sprintf("seed%05d@example.test", i+1),
			CreatedAt: start.Add(time.Duration(i) * time.Minute),
		})
	}

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	logger.Info("serving fake Clerk Backend API", "api_url", "http://"+ln.Addr().String()+"/v1",
		"admin_url", "http://"+ln.Addr().String()+"/_fake/", "seed_users", *seedUsers, "secret_key_required", *secretKey != "")
	srv := &http.Server{Handler: logRequests(logger, fake), ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(shutdownCtx)
}

// logRequests logs one line per request. The query is left out: Clerk
// filters can carry email addresses.
func logRequests(logger *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		logger.Info("request", "method", r.Method, "path", r.URL.Path,
			"status", cmp.Or(sw.status, http.StatusOK), "duration_ms", time.Since(start).Milliseconds())
	})
}

// statusWriter records the first status set through it; none means 200.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = cmp.Or(w.status, code)
	w.ResponseWriter.WriteHeader(code)
}
