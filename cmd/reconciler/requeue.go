package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/creditgate/creditgate/pkg/postgres"
)

const requeueUsage = `Usage: reconciler requeue (--svix-id ID [--svix-id ID ...] | --since TIME) [--dry-run]

Moves dead webhook events back to failed, with attempts reset to 0 (last_error
is kept), so that the next reconciler run re-runs them through the webhook's
own code path with a full set of RECONCILE_MAX_ATTEMPTS. One UPDATE of dead
rows only: running it twice changes nothing the second time. Prints a one-line
JSON summary on stdout: how many and which events were requeued and, for
--svix-id, which ids were not dead (with their status) or not found.
  --svix-id ID   requeue this event; repeat the flag or separate ids with commas
  --since TIME   requeue every dead event received at or after TIME (RFC 3339,
                 e.g. 2026-11-30T00:00:00Z)
  --dry-run      report what would be requeued and change nothing

It reads the reconciler's environment (see reconciler --help); DATABASE_URL is
required, RECONCILE_GRACE tells which requeued events the next run still leaves
alone (held_by_grace). It exits non-zero only when it could not run.
`

// requeueSummary is requeue's one-line JSON report.
type requeueSummary struct {
	DryRun bool       `json:"dry_run"`
	Since  *time.Time `json:"since,omitempty"`
	// Requeued counts the events moved from dead to failed (in a dry run:
	// that would be); RequeuedIDs names them, oldest first.
	Requeued    int      `json:"requeued"`
	RequeuedIDs []string `json:"requeued_svix_ids"`
	// NotDead and NotFound explain, for --svix-id, the ids not requeued.
	NotDead  map[string]string `json:"not_dead,omitzero"`
	NotFound []string          `json:"not_found,omitzero"`
	// HeldByGrace: requeued events younger than RECONCILE_GRACE, and when the
	// failed-events pass will first take each.
	HeldByGrace map[string]time.Time `json:"held_by_grace,omitempty"`
}

func runRequeue(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("reconciler requeue", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, requeueUsage) }
	var ids []string
	fs.Func("svix-id", "requeue this event (repeatable)", func(v string) error {
		for id := range strings.SplitSeq(v, ",") {
			id = strings.TrimSpace(id)
			if id == "" {
				return errors.New("empty svix id")
			}
			ids = append(ids, id)
		}
		return nil
	})
	var since *time.Time
	fs.Func("since", "requeue every dead event received at or after this RFC 3339 time", func(v string) error {
		if since != nil {
			return errors.New("given twice")
		}
		t, err := time.Parse(time.RFC3339, strings.TrimSpace(v))
		if err != nil {
			return errors.New("want an RFC 3339 time such as 2026-11-30T00:00:00Z")
		}
		t = t.UTC()
		since = &t
		return nil
	})
	dryRun := fs.Bool("dry-run", false, "report what would be requeued and change nothing")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return fmt.Errorf("requeue: %w", err)
	}
	switch {
	case fs.NArg() > 0:
		fmt.Fprint(stderr, requeueUsage)
		return fmt.Errorf("requeue: unexpected arguments %q", fs.Args())
	case len(ids) == 0 && since == nil:
		fmt.Fprint(stderr, requeueUsage)
		return errors.New("requeue: give --svix-id or --since")
	case len(ids) > 0 && since != nil:
		return errors.New("requeue: give --svix-id or --since, not both")
	}

	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cfg, log, store, closeDB, err := openStore(ctx, getenv, stderr)
	if err != nil {
		return err
	}
	defer closeDB()

	// No reconciler lock: the UPDATE touches only dead rows, which nothing
	// else writes, so it is safe beside a run and beside live deliveries.
	var res postgres.Requeue
	if since != nil {
		res, err = store.RequeueDeadEventsSince(ctx, *since, *dryRun)
	} else {
		res, err = store.RequeueDeadEvents(ctx, ids, *dryRun)
	}
	if err != nil {
		return err
	}

	sum := requeueSummary{
		DryRun: *dryRun, Since: since, Requeued: len(res.Requeued), RequeuedIDs: []string{},
		NotDead: res.NotDead, NotFound: res.NotFound,
	}
	// The failed-events pass takes only events received RECONCILE_GRACE ago.
	// An event the reconciler parked was already past it then, so it is taken
	// at once; one parked by hand, or after RECONCILE_GRACE was raised, waits.
	cutoff := time.Now().Add(-cfg.Reconcile.Grace)
	for _, e := range res.Requeued {
		sum.RequeuedIDs = append(sum.RequeuedIDs, e.SvixID)
		if e.ReceivedAt.After(cutoff) {
			if sum.HeldByGrace == nil {
				sum.HeldByGrace = map[string]time.Time{}
			}
			sum.HeldByGrace[e.SvixID] = e.ReceivedAt.Add(cfg.Reconcile.Grace).UTC()
		}
	}
	verb := "requeued dead events"
	if *dryRun {
		verb = "dry run: would requeue dead events"
	}
	log.InfoContext(ctx, verb, "requeued", sum.Requeued, "not_dead", len(sum.NotDead), "not_found", len(sum.NotFound))
	if len(sum.HeldByGrace) > 0 {
		log.WarnContext(ctx, "some requeued events are younger than RECONCILE_GRACE: the reconciler re-runs them only once they are older",
			"events", len(sum.HeldByGrace), "grace", cfg.Reconcile.Grace.String())
	}
	b, err := json.Marshal(sum)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, string(b))
	return nil
}
