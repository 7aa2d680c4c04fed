package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/creditgate/creditgate/pkg/clerk"
	"github.com/creditgate/creditgate/pkg/ledger"
	"github.com/creditgate/creditgate/pkg/postgres"
	"github.com/creditgate/creditgate/pkg/reconcile"
	"github.com/creditgate/creditgate/pkg/telemetry"
)

const explainUsage = `Usage: reconciler explain [--json] CLERK_USER_ID

Prints one user's story, for support questions: the balance, the ledger
entries, the stored events with their statuses and reasons, the Clerk
metadata writes, and what the next reconciler run would do about the user.
It changes nothing. The email address is shown masked.
`

// runExplain implements `reconciler explain`.
func runExplain(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("reconciler explain", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, explainUsage) }
	asJSON := fs.Bool("json", false, "print the story as one JSON object")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 || fs.Arg(0) == "" {
		fs.Usage()
		return fmt.Errorf("explain takes one Clerk user id, got %q", fs.Args())
	}
	clerkID := fs.Arg(0)
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cfg, log, store, closeDB, err := openStore(ctx, getenv, stderr)
	if err != nil {
		return err
	}
	defer closeDB()
	st, err := store.UserStory(ctx, clerkID)
	if err != nil {
		return err
	}
	rec := &reconcile.Reconciler{Store: store, Log: log, Config: cfg.Reconcile}
	if cfg.ClerkSecretKey != "" {
		rec.Directory = clerk.NewAPI(clerk.APIConfig{SecretKey: cfg.ClerkSecretKey, URL: cfg.ClerkAPIURL, RequestsPerSecond: cfg.ClerkRPS})
	}
	do := rec.Explain(ctx, st)
	if st.User != nil {
		st.User.Email = maskEmail(st.User.Email)
	}
	if *asJSON {
		return json.NewEncoder(stdout).Encode(struct {
			ledger.UserStory
			WouldDo []string
		}{st, do})
	}
	writeStory(stdout, st, do)
	return nil
}

// maskEmail keeps an address recognisable to whoever knows it and nothing
// more: a***@example.com.
func maskEmail(e string) string {
	local, domain, ok := strings.Cut(e, "@")
	if !ok || local == "" {
		return strings.Repeat("*", min(len(e), 3))
	}
	return local[:1] + "***@" + domain
}

func writeStory(w io.Writer, st ledger.UserStory, do []string) {
	ts := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.UTC().Format(time.RFC3339)
	}
	u := st.User
	switch {
	case u == nil:
		fmt.Fprintf(w, "%s: not held by creditgate\n", st.ClerkID)
	default:
		state := "live"
		if !u.DeletedAt.IsZero() {
			state = "deleted " + ts(u.DeletedAt)
		}
		email := u.Email
		if email == "" {
			email = "none"
		}
		fmt.Fprintf(w, "%s (users.id %d): %s, created %s, Clerk version %s, email %s\n",
			st.ClerkID, u.ID, state, ts(u.CreatedAt), ts(u.ClerkUpdatedAt), email)
		credits, debits := st.Credits()
		fmt.Fprintf(w, "balance: %d available, %d used (entries: %d credits, %d debits)\n", u.AvailableCredits, u.UsedCredits, credits, debits)
	}
	fmt.Fprintln(w, "ledger entries:")
	if len(st.Entries) == 0 {
		fmt.Fprintln(w, "  none")
	}
	for _, e := range st.Entries {
		svix := ""
		if e.SvixID != "" {
			svix = " (event " + e.SvixID + ")"
		}
		fmt.Fprintf(w, "  %s  %-6s %8d  %-16s %s%s\n", ts(e.CreatedAt), e.Type, e.Amount, e.Reason, e.IdempotencyKey, svix)
	}
	fmt.Fprintln(w, "events:")
	if len(st.Events) == 0 {
		fmt.Fprintln(w, "  none")
	}
	for _, e := range st.Events {
		fmt.Fprintf(w, "  %s  %s  %s  %s, attempts %d", ts(e.ReceivedAt), e.SvixID, e.EventType, e.Status, e.Attempts)
		if e.Scrubbed {
			fmt.Fprint(w, ", body scrubbed")
		}
		if e.LastError != "" {
			fmt.Fprintf(w, "\n      reason: %s", e.LastError)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w, "Clerk metadata writes:")
	if len(st.Outbox) == 0 {
		fmt.Fprintln(w, "  none")
	}
	for _, o := range st.Outbox {
		fmt.Fprintf(w, "  %s  %s, attempts %d", o.IdempotencyKey, o.Status, o.Attempts)
		if !o.DeliveredAt.IsZero() {
			fmt.Fprintf(w, ", delivered %s", ts(o.DeliveredAt))
		}
		if o.LastError != "" {
			fmt.Fprintf(w, "\n      last error: %s", o.LastError)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w, "the next reconciler run would:")
	for _, d := range do {
		fmt.Fprintln(w, "  "+d)
	}
}

// openStore is the set-up of the reconciler's one-off subcommands: the
// configuration, a logger, and a store on a small pool over a database that
// holds this binary's migrations.
func openStore(ctx context.Context, getenv func(string) string, stderr io.Writer) (config, *slog.Logger, *postgres.Store, func(), error) {
	cfg, _, err := loadConfig(getenv)
	if err != nil {
		return cfg, nil, nil, nil, fmt.Errorf("configuration:\n%w", err)
	}
	log, err := telemetry.NewLogger(stderr, cfg.LogFormat, cfg.LogLevel)
	if err != nil {
		return cfg, nil, nil, nil, err
	}
	db, err := postgres.Open(cfg.DatabaseURL, postgres.Options{MaxConns: 2, LockTimeout: cfg.DBLockTimeout})
	if err != nil {
		return cfg, nil, nil, nil, fmt.Errorf("DATABASE_URL: %w", err)
	}
	if err := postgres.Ready(ctx, db); err != nil {
		db.Close()
		return cfg, nil, nil, nil, fmt.Errorf("database not ready: %w", err)
	}
	return cfg, log, postgres.NewStore(db), func() { db.Close() }, nil
}
