// Command reconciler runs one bounded reconcile pass (a CronJob tick) and
// exits: it re-runs failed webhook events, backfills Clerk users the webhooks
// missed, grants missing signup credits, retries Clerk metadata writes and
// audits the ledger. It exits non-zero only when it could not run at all;
// item failures are recorded, counted and retried next run. `reconciler
// requeue` sets dead events back to failed for the next pass to re-run.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/push"

	"github.com/creditgate/creditgate/pkg/clerk"
	"github.com/creditgate/creditgate/pkg/env"
	"github.com/creditgate/creditgate/pkg/ledger"
	"github.com/creditgate/creditgate/pkg/postgres"
	"github.com/creditgate/creditgate/pkg/reconcile"
	"github.com/creditgate/creditgate/pkg/telemetry"
)

var version = "dev"

const usage = `Usage: reconciler [--dry-run] | reconciler requeue ... | reconciler explain ID | reconciler env

One bounded reconcile pass, then exit; prints a one-line JSON summary on stdout.
  --dry-run   report what would be done and change nothing
  requeue     set dead webhook events back to failed for the next run to re-run:
              requeue (--svix-id ID [--svix-id ID ...] | --since RFC3339-TIME) [--dry-run]
              (reconciler requeue --help tells more)
  explain     print one user's story (balance, entries, events, Clerk writes)
              and what the next run would do: explain [--json] CLERK_USER_ID
  env         list the environment variables it reads, NAME=default

Environment:
  DATABASE_URL              PostgreSQL URL (required)
  SIGNUP_CREDITS            signup grant (default 20; must match the webhook's)
  FORFEIT_ON_DELETE         as the webhook's (default true), for re-run user.deleted events
  CLERK_SECRET_KEY          Clerk Backend API key; enables the backfill and metadata write-back
  CLERK_API_URL             Clerk Backend API base URL (default https://api.clerk.com/v1)
  CLERK_API_RPS             most Clerk API calls per second (default 20)
  OUTBOX_MAX_ATTEMPTS       failed metadata writes before one is parked as dead (default 12)
  RECONCILE_GRACE           leave failed events younger than this to Svix's retries (default 5m)
  RECONCILE_MAX_ATTEMPTS    attempts before a failed event is parked as dead (default 10)
  RECONCILE_BATCH           most items per pass (default 1000)
  BACKFILL_PAGE_SIZE        Clerk users per list call (default 500, Clerk's maximum)
  BACKFILL_MAX_PAGES        most list calls per run (default 20)
  BACKFILL_OVERLAP          re-list this much before the watermark (default 10m)
  DB_LOCK_TIMEOUT           longest wait for a row lock before an item is left for the next run (default 5s)
  SWEEP_INTERVAL            how often the deletion sweep asks Clerk about every live user (default 24h; 0 turns it off; needs CLERK_SECRET_KEY)
  SWEEP_MAX_DELETIONS       a run that finds more users gone from Clerk than this deletes none of them (default 50)
  PAYLOAD_RETENTION         keep finished events' bodies as received this long, then keep only ids, types and times (default 720h; 0 keeps them)
  RECONCILE_TIMEOUT         bound on the whole run (default 4m; keep it under the CronJob's deadline)
  PUSHGATEWAY_URL           push the run's metrics to this Prometheus Pushgateway when set
  POD_NAMESPACE             the Pushgateway group's namespace label (the chart sets it)
  LOG_LEVEL                 debug|info|warn|error (default info; logs go to stderr)
  LOG_FORMAT                json|text (default json)
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "reconciler:", err)
		os.Exit(1)
	}
}

type config struct {
	DatabaseURL     string
	LogLevel        string
	LogFormat       string
	SignupCredits   int64
	ForfeitOnDelete bool
	ClerkSecretKey  string
	ClerkAPIURL     string
	ClerkRPS        float64
	Timeout         time.Duration
	DBLockTimeout   time.Duration
	PushgatewayURL  string
	Namespace       string
	Reconcile       reconcile.Config
}

func loadConfig(getenv func(string) string) (config, []env.Var, error) {
	r := env.New(getenv)
	c := config{
		DatabaseURL:     r.DatabaseURL("DATABASE_URL", postgres.CheckURL),
		LogLevel:        r.OneOf("LOG_LEVEL", "info", "debug", "info", "warn", "error"),
		LogFormat:       r.OneOf("LOG_FORMAT", "json", "json", "text"),
		SignupCredits:   r.Int("SIGNUP_CREDITS", ledger.DefaultSignupCredits, 1, 1_000_000_000),
		ForfeitOnDelete: r.Bool("FORFEIT_ON_DELETE", true),
		ClerkSecretKey:  r.Secret("CLERK_SECRET_KEY"),
		ClerkAPIURL:     r.URL("CLERK_API_URL", "https://api.clerk.com/v1"),
		ClerkRPS:        float64(r.Int("CLERK_API_RPS", 20, 1, 1000)),
		Timeout:         r.Duration("RECONCILE_TIMEOUT", 4*time.Minute, time.Second, 24*time.Hour),
		DBLockTimeout:   r.Duration("DB_LOCK_TIMEOUT", 5*time.Second, 100*time.Millisecond, time.Minute),
		PushgatewayURL:  r.URL("PUSHGATEWAY_URL", ""),
		Namespace:       r.String("POD_NAMESPACE", ""),
	}
	batch := int(r.Int("RECONCILE_BATCH", 1000, 1, 1_000_000))
	c.Reconcile = reconcile.Config{
		SignupCredits:     c.SignupCredits,
		Grace:             r.Duration("RECONCILE_GRACE", 5*time.Minute, 0, 30*24*time.Hour),
		MaxEventAttempts:  int(r.Int("RECONCILE_MAX_ATTEMPTS", 10, 1, 1000)),
		EventBatch:        batch,
		UserBatch:         batch,
		OutboxBatch:       batch,
		BackfillPageSize:  int(r.Int("BACKFILL_PAGE_SIZE", 500, 1, 500)),
		BackfillMaxPages:  int(r.Int("BACKFILL_MAX_PAGES", 20, 1, 100_000)),
		BackfillOverlap:   r.Duration("BACKFILL_OVERLAP", 10*time.Minute, 0, 30*24*time.Hour),
		OutboxMaxAttempts: int(r.Int("OUTBOX_MAX_ATTEMPTS", 12, 1, 1000)),
		PayloadRetention:  r.Duration("PAYLOAD_RETENTION", 30*24*time.Hour, 0, 10*365*24*time.Hour),
		RetentionBatch:    10 * batch,
		SweepInterval:     r.Duration("SWEEP_INTERVAL", 24*time.Hour, 0, 365*24*time.Hour),
		SweepBatch:        batch,
		SweepMaxDeletions: int(r.Int("SWEEP_MAX_DELETIONS", 50, 0, 1_000_000)),
		SweepMinAge:       time.Hour,
		ForfeitOnDelete:   c.ForfeitOnDelete,
	}
	return c, r.Vars(), r.Err()
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "requeue" {
		return runRequeue(ctx, args[1:], getenv, stdout, stderr)
	}
	if len(args) > 0 && args[0] == "explain" {
		return runExplain(ctx, args[1:], getenv, stdout, stderr)
	}
	if len(args) == 1 && args[0] == "env" {
		// The variables this binary reads, derived from loadConfig itself.
		_, vars, _ := loadConfig(func(string) string { return "" })
		for _, v := range vars {
			fmt.Fprintf(stdout, "%s=%s\n", v.Name, v.Default)
		}
		return nil
	}
	fs := flag.NewFlagSet("reconciler", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	dryRun := fs.Bool("dry-run", false, "report what would be done and change nothing")
	showVersion := fs.Bool("version", false, "print the version")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if *showVersion {
		fmt.Fprintln(stdout, version)
		return nil
	}
	if fs.NArg() > 0 {
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	cfg, _, err := loadConfig(getenv)
	if err != nil {
		return fmt.Errorf("configuration:\n%w", err)
	}
	cfg.Reconcile.DryRun = *dryRun
	log, err := telemetry.NewLogger(stderr, cfg.LogFormat, cfg.LogLevel)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()

	// A row another transaction holds fails its item after DB_LOCK_TIMEOUT
	// (retried next run) instead of stalling the whole run.
	db, err := postgres.Open(cfg.DatabaseURL, postgres.Options{MaxConns: 4, LockTimeout: cfg.DBLockTimeout})
	if err != nil {
		return err
	}
	defer db.Close()
	if err := postgres.Ready(ctx, db); err != nil {
		return fmt.Errorf("database not ready: %w", err)
	}
	store := postgres.NewStore(db)

	reg := prometheus.NewRegistry()
	metrics := reconcile.NewMetrics(reg)
	rec := &reconcile.Reconciler{
		Store: store,
		Service: &ledger.Service{
			Store: store, Decode: clerk.Decode, SignupCredits: cfg.SignupCredits,
			ForfeitOnDelete: cfg.ForfeitOnDelete, MetadataOutbox: cfg.ClerkSecretKey != "",
		},
		Metrics: metrics,
		Log:     log,
		Config:  cfg.Reconcile,
	}
	if cfg.ClerkSecretKey != "" {
		api := clerk.NewAPI(clerk.APIConfig{SecretKey: cfg.ClerkSecretKey, URL: cfg.ClerkAPIURL, RequestsPerSecond: cfg.ClerkRPS})
		rec.Directory, rec.Writer = api, api
	} else {
		log.InfoContext(ctx, "CLERK_SECRET_KEY not set: skipping the Clerk backfill and metadata write-back")
	}

	if *dryRun {
		// No lock, no run record: a dry run reads only.
		sum, err := rec.Run(ctx)
		return report(stdout, sum, err)
	}

	release, ok, err := store.TryReconcileLock(ctx)
	if err != nil {
		return err
	}
	if !ok {
		log.InfoContext(ctx, "another reconciler holds the lock; nothing to do")
		metrics.Finished(postgres.RunSkipped, 0)
		pushMetrics(ctx, cfg, reg, log)
		return report(stdout, reconcile.Summary{Outcome: postgres.RunSkipped, StartedAt: time.Now().UTC()}, nil)
	}
	defer release()
	// Holding the lock, no other run is live: a run still recorded as running
	// was killed before it could record its end.
	abandoned, err := store.AbandonRuns(ctx)
	if err != nil {
		return err
	}
	if abandoned > 0 {
		log.WarnContext(ctx, "marked runs that never recorded their end as abandoned", "runs", abandoned)
	}
	runID, err := store.StartRun(ctx)
	if err != nil {
		return err
	}
	sum, runErr := rec.Run(ctx)
	sum.AbandonedRuns = int(abandoned)
	// Record the end even when the run was cut short.
	fctx, fcancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer fcancel()
	if err := store.FinishRun(fctx, runID, sum.Outcome, sum, runErr); err != nil {
		log.ErrorContext(ctx, "record run", "error", err)
	}
	metrics.Finished(sum.Outcome, sum.Seconds)
	pushMetrics(fctx, cfg, reg, log)
	return report(stdout, sum, runErr)
}

func report(w io.Writer, sum reconcile.Summary, runErr error) error {
	b, err := json.Marshal(sum)
	if err != nil {
		return err
	}
	fmt.Fprintln(w, string(b))
	return runErr
}

// pushMetrics sends the run's metrics to a Pushgateway when one is configured; a
// failure is logged, never fatal.
func pushMetrics(ctx context.Context, cfg config, reg *prometheus.Registry, log interface {
	WarnContext(context.Context, string, ...any)
}) {
	if cfg.PushgatewayURL == "" {
		return
	}
	p := push.New(cfg.PushgatewayURL, "creditgate_reconciler").Gatherer(reg)
	if cfg.Namespace != "" {
		// One group per installation: releases in other namespaces sharing
		// the Pushgateway do not overwrite each other.
		p = p.Grouping("namespace", cfg.Namespace)
	}
	if err := p.PushContext(ctx); err != nil {
		log.WarnContext(ctx, "push metrics to the Pushgateway", "error", err)
	}
}
