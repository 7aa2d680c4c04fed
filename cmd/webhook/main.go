// Command webhook receives Clerk's Svix-signed user webhooks and turns them
// into creditgate's credit ledger. `webhook migrate` applies the schema.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/uptrace/bun"
	"go.opentelemetry.io/otel"

	"github.com/creditgate/creditgate/pkg/clerk"
	"github.com/creditgate/creditgate/pkg/creditsapi"
	"github.com/creditgate/creditgate/pkg/ledger"
	"github.com/creditgate/creditgate/pkg/postgres"
	"github.com/creditgate/creditgate/pkg/reconcile"
	"github.com/creditgate/creditgate/pkg/telemetry"
	"github.com/creditgate/creditgate/pkg/webhook"
)

// version is stamped at build time with -ldflags "-X main.version=…".
var version = "dev"

const usage = `Usage:
  webhook                  serve POST /api/webhooks/clerk, /healthz, /readyz (HTTP_ADDR) and /metrics (METRICS_ADDR)
  webhook migrate          apply pending database migrations (and grant RUNTIME_ROLE what the service needs) and exit
  webhook migrate status   list migrations and whether each is applied
  webhook version          print the version
  webhook env              list the environment variables it reads, NAME=default
  webhook probe URL        GET URL and exit 0 on a 2xx answer (health checks in images without a shell)
  webhook selftest URL     POST URL one signed event it ignores (CLERK_WEBHOOK_SIGNING_SECRET); exit 0 on 200 ignored

Environment:
  DATABASE_URL                  PostgreSQL URL (required)
  RUNTIME_ROLE                  webhook migrate only: the role the service connects as; granted DML on its tables, no DDL,
                                and on the ledger only INSERT and SELECT
  CLERK_WEBHOOK_SIGNING_SECRET  whsec_ secret(s), separated by spaces or commas (required to serve)
  SIGNUP_CREDITS                credits granted once per new Clerk user (default 20)
  FORFEIT_ON_DELETE             on user.deleted, debit the remaining credits (default true)
  HTTP_ADDR                     application listener (default :8080)
  METRICS_ADDR                  Prometheus listener (default :9090)
  API_ADDR                      credits API listener (default :8081; its own Service, never the webhook Ingress)
  CREDITS_API_SERVICE_ACCOUNTS  in-cluster callers: namespace/serviceaccount:scopes entries; their projected tokens
                                (audience creditgate) are checked with a TokenReview
  CLERK_AUTHORIZED_PARTIES      frontend origins whose Clerk session tokens /v1/me/… accepts (needs CLERK_SECRET_KEY)
  CREDITS_API_KEYS              credits API keys: name:scopes:key entries (scopes read+spend+grant+admin, keys of 32+
                                characters), separated by spaces or commas; none: the API answers 401
  LOG_LEVEL                     debug|info|warn|error (default info)
  LOG_FORMAT                    json|text (default json)
  DB_MAX_CONNS                  database pool size (default 10)
  DB_LOCK_TIMEOUT               longest wait for a row lock before a delivery answers 503 (default 5s)
  BODY_MEMORY_LIMIT             bytes of webhook bodies held at once; beyond it deliveries get 503 (default 8MiB)
  SHUTDOWN_DELAY                after SIGTERM, report not-ready this long before draining (default 0s)
  SHUTDOWN_TIMEOUT              longest drain of in-flight requests (default 20s)
  CLERK_SECRET_KEY              Clerk Backend API key; when set, signup grants are written to the user's public metadata
  CLERK_API_URL                 Clerk Backend API base URL (default https://api.clerk.com/v1)
  CLERK_API_RPS                 most Clerk API calls per second from this process (default 20)
  OUTBOX_MAX_ATTEMPTS           failed metadata writes before one is parked as dead (default 12)
  POD_NAMESPACE                 the Kubernetes namespace, for OpenTelemetry's resource (the chart sets it)
  BACKLOG_REFRESH               how often the backlog gauges re-query the database (default 30s)
  OTEL_EXPORTER_OTLP_ENDPOINT   export traces and OTel metrics over OTLP/HTTP when set (and the other OTEL_* variables)
  OTEL_EXPORTER_OTLP_TRACES_ENDPOINT  the traces' endpoint, when OTEL_EXPORTER_OTLP_ENDPOINT is not set
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "webhook:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	switch {
	case len(args) == 0:
		return serve(ctx, getenv, stderr)
	case args[0] == "migrate" && len(args) == 1:
		return migrate(ctx, getenv, stdout, stderr, false)
	case args[0] == "migrate" && len(args) == 2 && args[1] == "status":
		return migrate(ctx, getenv, stdout, stderr, true)
	case args[0] == "env" && len(args) == 1:
		// The variables this binary reads, derived from loadConfig itself;
		// the chart's wiring test compares them with what the chart sets.
		_, vars, _ := loadConfig(func(string) string { return "" }, true)
		for _, v := range vars {
			fmt.Fprintf(stdout, "%s=%s\n", v.Name, v.Default)
		}
		return nil
	case args[0] == "probe" && len(args) == 2:
		return probe(ctx, args[1], stdout)
	case args[0] == "selftest" && len(args) == 2:
		return selftest(ctx, args[1], getenv, stdout)
	case args[0] == "version" || args[0] == "--version":
		fmt.Fprintln(stdout, version)
		return nil
	case args[0] == "help" || args[0] == "-h" || args[0] == "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown arguments %q", args)
	}
}

func migrate(ctx context.Context, getenv func(string) string, stdout, stderr io.Writer, statusOnly bool) error {
	cfg, _, err := loadConfig(getenv, false)
	if err != nil {
		return fmt.Errorf("configuration:\n%w", err)
	}
	log, err := telemetry.NewLogger(stderr, cfg.LogFormat, cfg.LogLevel)
	if err != nil {
		return err
	}
	db, err := postgres.Open(cfg.DatabaseURL, postgres.Options{MaxConns: 2})
	if err != nil {
		return fmt.Errorf("DATABASE_URL: %w", err)
	}
	defer db.Close()
	if statusOnly {
		ms, err := postgres.Migrations(ctx, db)
		if err != nil {
			return err
		}
		for _, m := range ms {
			state := "pending"
			if m.Applied {
				state = "applied"
			}
			fmt.Fprintf(stdout, "%-8s %s %s\n", state, m.Name, m.Comment)
		}
		return nil
	}
	applied, err := postgres.Migrate(ctx, db, log)
	for _, name := range applied {
		log.InfoContext(ctx, "migration applied", "migration", name)
	}
	if err != nil {
		return err
	}
	if cfg.RuntimeRole != "" {
		if err := postgres.GrantRuntime(ctx, db, cfg.RuntimeRole); err != nil {
			return fmt.Errorf("RUNTIME_ROLE: %w", err)
		}
		log.InfoContext(ctx, "runtime role granted what the service needs", "role", cfg.RuntimeRole)
	}
	if len(applied) == 0 {
		log.InfoContext(ctx, "database schema is up to date")
	}
	return nil
}

func serve(ctx context.Context, getenv func(string) string, stderr io.Writer) error {
	cfg, _, err := loadConfig(getenv, true)
	if err != nil {
		return fmt.Errorf("configuration:\n%w", err)
	}
	log, err := telemetry.NewLogger(stderr, cfg.LogFormat, cfg.LogLevel)
	if err != nil {
		return err
	}
	ot, err := telemetry.SetupOTel(ctx, cfg.OTLPEndpoint, "creditgate-webhook", version, cfg.Namespace)
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := ot.Shutdown(sctx); err != nil {
			log.Warn("flush telemetry", "error", err)
		}
	}()

	db, err := postgres.Open(cfg.DatabaseURL, postgres.Options{
		MaxConns: cfg.DBMaxConns, Tracing: ot.Enabled, LockTimeout: cfg.DBLockTimeout,
	})
	if err != nil {
		return fmt.Errorf("DATABASE_URL: %w", err)
	}
	defer db.Close()
	// Readiness asks the database on a connection of its own: a pool busy
	// with deliveries (or with one locked user's) is not a reason for
	// Kubernetes to pull this pod.
	healthDB, err := postgres.Open(cfg.DatabaseURL, postgres.Options{MaxConns: 1})
	if err != nil {
		return fmt.Errorf("DATABASE_URL: %w", err)
	}
	defer healthDB.Close()

	store := postgres.NewStore(db)
	reg := telemetry.NewRegistry()
	reg.MustRegister(postgres.NewPoolCollector(db))
	reg.MustRegister(reconcile.NewBacklogCollector(store.Backlog, cfg.BacklogRefresh, log))
	verifier, err := webhook.NewVerifier(cfg.Secrets)
	if err != nil {
		return fmt.Errorf("CLERK_WEBHOOK_SIGNING_SECRET: %w", err)
	}
	svc := &ledger.Service{
		Store:           store,
		Decode:          clerk.Decode,
		SignupCredits:   cfg.SignupCredits,
		ForfeitOnDelete: cfg.ForfeitOnDelete,
		MetadataOutbox:  cfg.Clerk.SecretKey != "",
	}
	var clerkAPI *clerk.API
	if cfg.Clerk.SecretKey != "" {
		clerkAPI = clerk.NewAPI(clerk.APIConfig{SecretKey: cfg.Clerk.SecretKey, URL: cfg.Clerk.APIURL, RequestsPerSecond: cfg.Clerk.RequestsPerSec})
	}
	var proc webhook.Processor = svc
	workerCtx, stopWorker := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWorker()
	workerDone := make(chan struct{})
	if cfg.Clerk.SecretKey != "" {
		// Clerk metadata write-back: the grant's transaction queued it in
		// the outbox; this worker delivers it right away, the reconciler
		// retries whatever is left.
		worker := reconcile.NewWorker(&reconcile.Deliverer{
			Store:       store,
			Writer:      clerkAPI,
			Metrics:     reconcile.NewMetrics(reg),
			Log:         log,
			MaxAttempts: cfg.Clerk.OutboxAttempts,
		}, 5*time.Second)
		go func() { defer close(workerDone); worker.Run(workerCtx) }()
		proc = wakeOnGrant{svc, worker}
	} else {
		close(workerDone)
		log.Info("CLERK_SECRET_KEY not set: Clerk metadata write-back is off")
	}

	var draining atomic.Bool
	h := webhook.New(webhook.Config{
		Verifier:    verifier,
		Processor:   proc,
		Ready:       readiness(healthDB, &draining),
		BodyMemory:  cfg.BodyMemory,
		Metrics:     webhook.NewMetrics(reg),
		Logger:      log,
		Tracer:      otel.Tracer("github.com/creditgate/creditgate/pkg/webhook"),
		HTTPTracing: ot.Enabled,
	})

	app := &http.Server{
		Addr:              cfg.HTTPAddr,
		Handler:           closeWhileDraining(&draining, h.Routes()),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	// The same bounds as the application listener: a scraper never needs
	// more, and nothing may hold a connection here forever.
	metrics := &http.Server{
		Addr:              cfg.MetricsAddr,
		Handler:           telemetry.MetricsHandler(reg),
		ReadHeaderTimeout: app.ReadHeaderTimeout,
		ReadTimeout:       app.ReadTimeout,
		WriteTimeout:      app.WriteTimeout,
		IdleTimeout:       app.IdleTimeout,
		MaxHeaderBytes:    app.MaxHeaderBytes,
		ErrorLog:          app.ErrorLog,
	}
	// The credits API: its own listener, behind its own Service.
	apiCfg := creditsapi.Config{Credits: store, Keys: cfg.APIKeys, Logger: log, Metrics: creditsapi.NewMetrics(reg), HTTPTracing: ot.Enabled}
	if clerkAPI != nil {
		// Just-in-time: a user whose first request beats Svix's user.created.
		apiCfg.Provision = func(ctx context.Context, clerkID string) error {
			u, err := clerkAPI.User(ctx, clerkID)
			if err != nil {
				return err
			}
			_, err = store.EnsureUser(ctx, u, cfg.SignupCredits, true)
			return err
		}
	}
	if len(cfg.AuthorizedParties) > 0 {
		sessions, err := clerk.NewSessions(clerk.APIConfig{SecretKey: cfg.Clerk.SecretKey, URL: cfg.Clerk.APIURL}, cfg.AuthorizedParties)
		if err != nil {
			return fmt.Errorf("CLERK_AUTHORIZED_PARTIES: %w", err)
		}
		apiCfg.Sessions = sessions
	}
	if len(cfg.APIServiceAccounts) > 0 {
		// In the cluster: the API server the kubelet names (not settings of
		// ours, hence read directly), our own token and the cluster CA.
		rv, err := creditsapi.InClusterReviewer(getenv("KUBERNETES_SERVICE_HOST"), getenv("KUBERNETES_SERVICE_PORT"), cfg.APIServiceAccounts)
		if err != nil {
			return fmt.Errorf("CREDITS_API_SERVICE_ACCOUNTS: %w", err)
		}
		apiCfg.Reviewer = rv
	}
	creditsAPI := creditsapi.New(apiCfg)
	api := &http.Server{
		Addr:              cfg.APIAddr,
		Handler:           closeWhileDraining(&draining, creditsAPI.Routes()),
		ReadHeaderTimeout: app.ReadHeaderTimeout,
		ReadTimeout:       app.ReadTimeout,
		WriteTimeout:      app.WriteTimeout,
		IdleTimeout:       app.IdleTimeout,
		MaxHeaderBytes:    app.MaxHeaderBytes,
		ErrorLog:          app.ErrorLog,
	}
	appLn, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen HTTP_ADDR: %w", err)
	}
	metricsLn, err := net.Listen("tcp", cfg.MetricsAddr)
	if err != nil {
		appLn.Close()
		return fmt.Errorf("listen METRICS_ADDR: %w", err)
	}
	apiLn, err := net.Listen("tcp", cfg.APIAddr)
	if err != nil {
		appLn.Close()
		metricsLn.Close()
		return fmt.Errorf("listen API_ADDR: %w", err)
	}

	errc := make(chan error, 3)
	go func() { errc <- serveOn(app, appLn) }()
	go func() { errc <- serveOn(metrics, metricsLn) }()
	go func() { errc <- serveOn(api, apiLn) }()
	log.Info("webhook serving", "http_addr", appLn.Addr().String(), "metrics_addr", metricsLn.Addr().String(),
		"api_addr", apiLn.Addr().String(), "api_keys", cfg.APIKeys.Len(),
		"signup_credits", cfg.SignupCredits, "signing_secrets", len(cfg.Secrets), "version", version, "otlp", ot.Enabled)

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down", "drain_delay", cfg.ShutdownDelay.String(), "drain_timeout", cfg.ShutdownTimeout.String())
	case runErr = <-errc:
		log.Error("server stopped", "error", runErr)
	}
	// Fail readiness first so that endpoints drop this pod, then stop
	// accepting and let in-flight deliveries finish.
	// From now on every answer carries Connection: close (closeWhileDraining),
	// so a sender holding a keep-alive connection to this pod reconnects, to a
	// pod that stays, after its next answer. Idle connections are deliberately
	// left open until Shutdown: closing one a sender is about to reuse loses
	// that POST to a transport error (net/http's SetKeepAlivesEnabled(false)
	// does exactly that, which is why it is not used here).
	draining.Store(true)
	if runErr == nil && cfg.ShutdownDelay > 0 {
		time.Sleep(cfg.ShutdownDelay)
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
	defer cancel()
	if err := app.Shutdown(sctx); err != nil {
		runErr = errors.Join(runErr, fmt.Errorf("drain http: %w", err))
	}
	if err := api.Shutdown(sctx); err != nil {
		runErr = errors.Join(runErr, fmt.Errorf("drain credits API: %w", err))
	}
	stopWorker()
	<-workerDone
	if err := metrics.Shutdown(sctx); err != nil {
		runErr = errors.Join(runErr, fmt.Errorf("drain metrics: %w", err))
	}
	log.Info("stopped")
	return runErr
}

// probe is a tiny HTTP health client: the image has no shell or curl.
func probe(ctx context.Context, url string, stdout io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("probe %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	fmt.Fprintf(stdout, "%s %s\n", resp.Status, strings.TrimSpace(string(body)))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("probe %s: %s", url, resp.Status)
	}
	return nil
}

// wakeOnGrant wakes the outbox worker when a delivery granted credits, so
// that Clerk's metadata follows within moments rather than a poll later.
type wakeOnGrant struct {
	*ledger.Service
	worker *reconcile.Worker
}

func (w wakeOnGrant) Process(ctx context.Context, d ledger.Delivery) (ledger.Result, error) {
	res, err := w.Service.Process(ctx, d)
	if res.CreditsGranted > 0 {
		w.worker.Wake()
	}
	return res, err
}

func serveOn(s *http.Server, ln net.Listener) error {
	if err := s.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// closeWhileDraining answers with Connection: close once draining is set, so
// that net/http closes each connection right after its answer instead of
// keeping it for the next request.
func closeWhileDraining(draining *atomic.Bool, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if draining.Load() {
			w.Header().Set("Connection", "close")
		}
		next.ServeHTTP(w, r)
	})
}

// readiness is ready when not draining and the database answers with every
// migration this binary needs.
func readiness(db *bun.DB, draining *atomic.Bool) func(context.Context) error {
	return func(ctx context.Context) error {
		if draining.Load() {
			return errors.New("shutting down")
		}
		return postgres.Ready(ctx, db)
	}
}
