// Package reconcile makes "every Clerk user holds their signup credits, and
// Clerk's metadata says so" true even when webhooks were lost, late or cut
// short. One Run is one bounded pass of every check (a CronJob tick); every
// action is idempotent through the same database constraints the webhook
// relies on, so runs may overlap with live deliveries, with each other, and be
// killed at any point.
package reconcile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/creditgate/creditgate/pkg/ledger"
)

// Store is what the reconciler needs from persistence.
type Store interface {
	FailedEvents(ctx context.Context, olderThan time.Time, limit int) ([]ledger.FailedEvent, error)
	MarkDead(ctx context.Context, svixID string, maxAttempts int) (bool, error)
	UsersWithoutSignupCredit(ctx context.Context, limit int) ([]ledger.UserRef, error)
	GrantMissingSignup(ctx context.Context, u ledger.UserRef, credits int64, outbox bool) (bool, error)
	SettledClerkUsers(ctx context.Context, ids []string) (map[string]bool, error)
	EnsureUser(ctx context.Context, u ledger.ClerkUser, credits int64, outbox bool) (bool, error)
	Watermark(ctx context.Context, name string) (time.Time, bool, error)
	SetWatermark(ctx context.Context, name string, t time.Time) error
	OutboxStore
	DueOutbox(ctx context.Context) (int, error)
	LedgerDrift(ctx context.Context, limit int) ([]ledger.Drift, int, error)
	LiveUsersAfter(ctx context.Context, afterID int64, limit int) ([]ledger.LiveUser, error)
	DeleteGoneUser(ctx context.Context, u ledger.UserRef, forfeit bool) (int64, bool, error)
	State(ctx context.Context, name string) (string, error)
	SetState(ctx context.Context, name, value string) error
	ScrubExpiredPayloads(ctx context.Context, cutoff time.Time, limit int) (int, error)
	ExpireDue(ctx context.Context, limit int) (int, int64, error)
	ExpiredPayloads(ctx context.Context, cutoff time.Time) (int, error)
}

// OutboxStore is what delivering the outbox needs: claim a due message with
// a lease (committed), and record the result of the claim afterwards.
type OutboxStore interface {
	ClaimOutbox(ctx context.Context, lease time.Duration) (ledger.OutboxMessage, bool, error)
	RecordOutbox(ctx context.Context, msg ledger.OutboxMessage, r ledger.OutboxRecord) (bool, error)
}

// Config bounds and tunes one run.
type Config struct {
	SignupCredits int64
	// Grace: a failed event younger than this is left to Svix's own retries.
	Grace time.Duration
	// MaxEventAttempts parks a failed event as dead once it has used them.
	MaxEventAttempts int
	// EventBatch, UserBatch and OutboxBatch bound each pass.
	EventBatch  int
	UserBatch   int
	OutboxBatch int
	// BackfillPageSize and BackfillMaxPages bound the Clerk listing.
	BackfillPageSize int
	BackfillMaxPages int
	// BackfillOverlap re-lists this much before the watermark, for users
	// whose creation became visible late.
	BackfillOverlap time.Duration
	// OutboxMaxAttempts parks a metadata write as dead once it has used them.
	OutboxMaxAttempts int
	// PayloadRetention is how long a finished event keeps its body as
	// received (with the personal data Clerk sends); after it the body is
	// reduced to what audit needs. 0 keeps bodies forever.
	PayloadRetention time.Duration
	// RetentionBatch bounds the bodies scrubbed per run.
	RetentionBatch int
	// SweepInterval is how often the deletion sweep goes through every live
	// user asking Clerk whether it still has them; 0 turns it off.
	SweepInterval time.Duration
	// SweepBatch bounds the users one run asks Clerk about.
	SweepBatch int
	// SweepMaxDeletions stops a run that finds more users gone from Clerk
	// than this before it deletes any more of them: a CLERK_SECRET_KEY of
	// another instance makes every user look gone.
	SweepMaxDeletions int
	// SweepMinAge leaves users younger than this alone (Clerk's list may
	// lag a user just created).
	SweepMinAge time.Duration
	// ForfeitOnDelete forfeits a swept user's credits, as user.deleted does.
	ForfeitOnDelete bool
	DryRun          bool
}

// WatermarkBackfill names the backfill's watermark: the created_at of the
// newest Clerk user known to be settled.
const WatermarkBackfill = "backfill_created_at"

// Reconciler runs the passes.
type Reconciler struct {
	Store   Store
	Service *ledger.Service
	// Directory lists Clerk's users; nil skips the backfill.
	Directory ledger.Directory
	// Writer writes Clerk metadata; nil skips the outbox.
	Writer  ledger.MetadataWriter
	Metrics *Metrics
	Log     *slog.Logger
	Config  Config
}

// PassSummary counts one pass's items.
type PassSummary struct {
	Found   int `json:"found"`
	Done    int `json:"done"`
	Skipped int `json:"skipped,omitempty"`
	Failed  int `json:"failed"`
	Dead    int `json:"dead,omitempty"`
	// Error is set when the pass could not run at all.
	Error string `json:"error,omitempty"`
	// Items, in a dry run, names what the pass would act on: Clerk user
	// ids (svix-ids for the events pass), at most maxDryRunItems.
	Items []string `json:"items,omitempty"`
}

// maxDryRunItems bounds the names a dry run lists per pass.
const maxDryRunItems = 100

// note names an item a dry run would act on.
func (p *PassSummary) note(item string) {
	if len(p.Items) < maxDryRunItems {
		p.Items = append(p.Items, item)
	}
}

// Summary is a run's one-line JSON report.
type Summary struct {
	Outcome   string      `json:"outcome"`
	DryRun    bool        `json:"dry_run"`
	StartedAt time.Time   `json:"started_at"`
	Seconds   float64     `json:"duration_seconds"`
	Events    PassSummary `json:"events"`
	Backfill  PassSummary `json:"backfill"`
	Signup    PassSummary `json:"signup"`
	Outbox    PassSummary `json:"outbox"`
	Retention PassSummary `json:"retention"`
	// Expiry counts the accounts whose expired holds and grants were booked.
	Expiry    PassSummary `json:"expiry"`
	Sweep     PassSummary `json:"sweep"`
	Drift     int         `json:"ledger_drift_users"`
	Watermark *time.Time  `json:"backfill_watermark,omitempty"`
	// AbandonedRuns counts the earlier runs this one found still recorded as
	// running (killed before they recorded their end) and marked abandoned.
	AbandonedRuns int `json:"abandoned_runs,omitempty"`
}

// Failures is the number of items that failed in the run.
func (s Summary) Failures() int {
	n := s.Events.Failed + s.Backfill.Failed + s.Signup.Failed + s.Outbox.Failed + s.Retention.Failed + s.Sweep.Failed + s.Expiry.Failed
	for _, p := range []PassSummary{s.Events, s.Backfill, s.Signup, s.Outbox, s.Retention, s.Sweep, s.Expiry} {
		if p.Error != "" {
			n++
		}
	}
	return n
}

// Run does one bounded pass of every check. Item failures are counted in the
// summary (and retried next run); the error is for a run that could not
// proceed at all (the context ended).
func (r *Reconciler) Run(ctx context.Context) (Summary, error) {
	s := Summary{StartedAt: time.Now().UTC(), DryRun: r.Config.DryRun}
	s.Events = r.retryFailedEvents(ctx)
	s.Backfill, s.Watermark = r.backfill(ctx)
	s.Signup = r.grantMissingSignups(ctx)
	s.Outbox = r.deliverOutbox(ctx)
	s.Expiry = r.expireCredits(ctx)
	s.Retention = r.scrubExpired(ctx)
	s.Sweep = r.sweepDeleted(ctx)
	s.Drift = r.audit(ctx)
	s.Seconds = time.Since(s.StartedAt).Seconds()
	s.Outcome = "success"
	if s.Failures() > 0 {
		s.Outcome = "partial"
	}
	if err := ctx.Err(); err != nil {
		s.Outcome = "failed"
		return s, fmt.Errorf("reconcile run cut short: %w", err)
	}
	return s, nil
}

func (r *Reconciler) count(pass, result string, n int) {
	if r.Metrics != nil && n > 0 && !r.Config.DryRun {
		r.Metrics.items.WithLabelValues(pass, result).Add(float64(n))
	}
}

// retryFailedEvents re-runs stored failed events through the webhook's own
// code path, oldest first, and parks those out of attempts as dead.
func (r *Reconciler) retryFailedEvents(ctx context.Context) PassSummary {
	var p PassSummary
	evs, err := r.Store.FailedEvents(ctx, time.Now().Add(-r.Config.Grace), r.Config.EventBatch)
	if err != nil {
		p.Error = err.Error()
		r.Log.ErrorContext(ctx, "list failed events", "error", err)
		return p
	}
	p.Found = len(evs)
	if r.Config.DryRun {
		for _, ev := range evs {
			p.note(ev.Delivery.SvixID)
		}
		return p
	}
	for _, ev := range evs {
		res, err := r.Service.Process(ctx, ev.Delivery)
		switch {
		case err == nil, errors.Is(err, ledger.ErrInvalidEvent):
			// Processed, or now known to be invalid: either way final.
			p.Done++
			r.Log.InfoContext(ctx, "failed event re-run", "svix_id", ev.Delivery.SvixID, "outcome", res.Status)
		default:
			p.Failed++
			dead, derr := r.Store.MarkDead(ctx, ev.Delivery.SvixID, r.Config.MaxEventAttempts)
			if derr != nil {
				r.Log.ErrorContext(ctx, "park event", "svix_id", ev.Delivery.SvixID, "error", derr)
			}
			if dead {
				p.Dead++
				r.Log.ErrorContext(ctx, "event parked as dead", "svix_id", ev.Delivery.SvixID, "attempts", ev.Attempts+1, "error", err)
			} else {
				r.Log.WarnContext(ctx, "failed event re-run failed", "svix_id", ev.Delivery.SvixID, "error", err)
			}
		}
	}
	r.count("events", resultDone, p.Done)
	r.count("events", resultFailed, p.Failed)
	r.count("events", resultDead, p.Dead)
	return p
}

// grantMissingSignups credits live users that lack their signup credit.
func (r *Reconciler) grantMissingSignups(ctx context.Context) PassSummary {
	var p PassSummary
	users, err := r.Store.UsersWithoutSignupCredit(ctx, r.Config.UserBatch)
	if err != nil {
		p.Error = err.Error()
		r.Log.ErrorContext(ctx, "list users without signup credit", "error", err)
		return p
	}
	p.Found = len(users)
	if r.Config.DryRun {
		for _, u := range users {
			p.note(u.ClerkID)
		}
		return p
	}
	for _, u := range users {
		granted, err := r.Store.GrantMissingSignup(ctx, u, r.Config.SignupCredits, r.Writer != nil)
		switch {
		case err != nil:
			p.Failed++
			r.Log.ErrorContext(ctx, "grant missing signup credit", "clerk_user_id", u.ClerkID, "error", err)
		case granted:
			p.Done++
			r.Log.InfoContext(ctx, "missing signup credit granted", "clerk_user_id", u.ClerkID, "credits", r.Config.SignupCredits)
		default:
			p.Skipped++ // granted meanwhile by a delivery, or deleted
		}
	}
	r.count("signup", resultDone, p.Done)
	r.count("signup", resultSkipped, p.Skipped)
	r.count("signup", resultFailed, p.Failed)
	return p
}

// backfill lists Clerk users created since the watermark (less the overlap)
// and makes each one missing here exist with its signup credit. The
// watermark moves only past users that are settled, so a failure is retried
// next run.
func (r *Reconciler) backfill(ctx context.Context) (PassSummary, *time.Time) {
	var p PassSummary
	if r.Directory == nil {
		return p, nil
	}
	mark, ok, err := r.Store.Watermark(ctx, WatermarkBackfill)
	if err != nil {
		p.Error = err.Error()
		r.Log.ErrorContext(ctx, "read backfill watermark", "error", err)
		return p, nil
	}
	var after time.Time
	if ok {
		after = mark.Add(-r.Config.BackfillOverlap)
	}
	newest, clean := mark, true
	for page := 0; page < r.Config.BackfillMaxPages && clean; page++ {
		users, err := r.Directory.ListUsers(ctx, after, r.Config.BackfillPageSize, page*r.Config.BackfillPageSize)
		if err != nil {
			p.Error = err.Error()
			r.Log.ErrorContext(ctx, "list Clerk users", "error", err)
			break
		}
		ids := make([]string, len(users))
		for i, u := range users {
			ids[i] = u.ID
		}
		settled := map[string]bool{}
		if len(ids) > 0 {
			if settled, err = r.Store.SettledClerkUsers(ctx, ids); err != nil {
				p.Error = err.Error()
				break
			}
		}
		for _, u := range users {
			if settled[u.ID] {
				if clean && u.CreatedAt.After(newest) {
					newest = u.CreatedAt
				}
				continue
			}
			p.Found++
			if r.Config.DryRun {
				p.note(u.ID)
				continue
			}
			granted, err := r.Store.EnsureUser(ctx, u, r.Config.SignupCredits, r.Writer != nil)
			if err != nil {
				p.Failed++
				clean = false // the watermark must not pass this user
				r.Log.ErrorContext(ctx, "backfill user", "clerk_user_id", u.ID, "error", err)
				continue
			}
			if granted {
				p.Done++
				r.Log.InfoContext(ctx, "backfilled user missing from webhooks", "clerk_user_id", u.ID)
			} else {
				p.Skipped++
			}
			if clean && u.CreatedAt.After(newest) {
				newest = u.CreatedAt
			}
		}
		if len(users) < r.Config.BackfillPageSize {
			break
		}
	}
	r.count("backfill", resultDone, p.Done)
	r.count("backfill", resultSkipped, p.Skipped)
	r.count("backfill", resultFailed, p.Failed)
	if r.Config.DryRun || newest.IsZero() {
		return p, nil
	}
	if newest.After(mark) {
		if err := r.Store.SetWatermark(ctx, WatermarkBackfill, newest); err != nil {
			p.Error = err.Error()
			r.Log.ErrorContext(ctx, "store backfill watermark", "error", err)
			return p, nil
		}
	}
	return p, &newest
}

// deliverOutbox writes due Clerk metadata messages.
func (r *Reconciler) deliverOutbox(ctx context.Context) PassSummary {
	var p PassSummary
	if r.Writer == nil {
		return p
	}
	if r.Config.DryRun {
		n, err := r.Store.DueOutbox(ctx)
		if err != nil {
			p.Error = err.Error()
		}
		p.Found = n
		return p
	}
	d := &Deliverer{Store: r.Store, Writer: r.Writer, Metrics: r.Metrics, Log: r.Log, MaxAttempts: r.Config.OutboxMaxAttempts}
	for i := 0; i < r.Config.OutboxBatch; i++ {
		res, err := d.DeliverOne(ctx)
		if err != nil {
			p.Error = err.Error()
			break
		}
		if !res.Found {
			break
		}
		p.Found++
		switch {
		case res.Delivered:
			p.Done++
		case res.Skipped:
			p.Skipped++
		case res.Dead:
			p.Dead++
			p.Failed++
		default:
			p.Failed++
		}
	}
	r.count("outbox", resultDone, p.Done)
	r.count("outbox", resultSkipped, p.Skipped)
	r.count("outbox", resultFailed, p.Failed)
	return p
}

// expireCredits books the holds and grants that have expired (a read already
// leaves them out; the booking makes the ledger say so): expired holds give
// their credits back, what is left in expired grants goes in one expiry debit
// per grant, exactly once.
func (r *Reconciler) expireCredits(ctx context.Context) PassSummary {
	var p PassSummary
	if r.Config.DryRun {
		return p
	}
	n, credits, err := r.Store.ExpireDue(ctx, max(r.Config.UserBatch, 1))
	p.Found, p.Done = n, n
	if err != nil {
		p.Error = err.Error()
		p.Failed++
		r.Log.ErrorContext(ctx, "book expired holds and grants", "error", err)
	}
	if n > 0 {
		r.Log.InfoContext(ctx, "expired holds and grants booked", "accounts", n, "credits_expired", credits)
	}
	r.count("expiry", resultDone, n)
	return p
}

// StateSweep names the deletion sweep's state in reconcile_state.
const StateSweep = "deletion_sweep"

// sweepState is where the deletion sweep stands: the last user id it asked
// Clerk about in the current round, and when that round started.
type sweepState struct {
	AfterID      int64     `json:"after_id"`
	RoundStarted time.Time `json:"round_started"`
}

// sweepDeleted finds users held here as live whom Clerk no longer has (a
// user.deleted Svix gave up on, or never sent) and deletes them exactly as
// user.deleted would. It walks every live user in id order, SweepPage at a
// time, at most SweepBatch per run, one round every SweepInterval; a run that
// fails keeps its place and the next one carries on.
func (r *Reconciler) sweepDeleted(ctx context.Context) PassSummary {
	var p PassSummary
	if r.Directory == nil || r.Config.SweepInterval <= 0 {
		return p
	}
	var st sweepState
	if raw, err := r.Store.State(ctx, StateSweep); err != nil {
		p.Error = err.Error()
		return p
	} else if raw != "" {
		if err := json.Unmarshal([]byte(raw), &st); err != nil {
			r.Log.WarnContext(ctx, "deletion sweep state unreadable; starting a new round", "error", err)
			st = sweepState{}
		}
	}
	now := time.Now()
	if st.AfterID == 0 {
		if !st.RoundStarted.IsZero() && now.Sub(st.RoundStarted) < r.Config.SweepInterval {
			return p // this round is done; the next is not due yet
		}
		st.RoundStarted = now
	}
	asked := 0
	for asked < max(r.Config.SweepBatch, 1) && ctx.Err() == nil {
		users, err := r.Store.LiveUsersAfter(ctx, st.AfterID, ledger.SweepPage)
		if err != nil {
			p.Error = err.Error()
			break
		}
		if len(users) == 0 {
			st.AfterID = 0 // round complete
			r.Log.InfoContext(ctx, "deletion sweep round complete", "started", st.RoundStarted)
			break
		}
		ids := make([]string, len(users))
		for i, u := range users {
			ids[i] = u.ClerkID
		}
		exist, err := r.Directory.ExistingUsers(ctx, ids)
		if err != nil {
			p.Error = err.Error()
			r.Log.ErrorContext(ctx, "deletion sweep: ask Clerk", "error", err)
			break
		}
		var gone []ledger.LiveUser
		for _, u := range users {
			if !exist[u.ClerkID] && now.Sub(u.CreatedAt) >= r.Config.SweepMinAge {
				gone = append(gone, u)
			}
		}
		if p.Found+len(gone) > r.Config.SweepMaxDeletions {
			p.Found += len(gone)
			p.Error = fmt.Sprintf("refusing to delete: %d users gone from Clerk in one run, more than SWEEP_MAX_DELETIONS (%d); "+
				"check that CLERK_SECRET_KEY belongs to this instance, then raise the limit", p.Found, r.Config.SweepMaxDeletions)
			r.Log.ErrorContext(ctx, "deletion sweep stopped", "error", p.Error)
			break
		}
		p.Found += len(gone)
		for _, u := range gone {
			if r.Config.DryRun {
				p.note(u.ClerkID)
				continue
			}
			forfeited, deleted, err := r.Store.DeleteGoneUser(ctx, u.UserRef, r.Config.ForfeitOnDelete)
			switch {
			case err != nil:
				p.Failed++
				r.Log.ErrorContext(ctx, "deletion sweep: delete user", "clerk_user_id", u.ClerkID, "error", err)
			case deleted:
				p.Done++
				r.Log.InfoContext(ctx, "deleted a user Clerk no longer has", "clerk_user_id", u.ClerkID, "credits_forfeited", forfeited)
			default:
				p.Skipped++ // deleted meanwhile by a delivery
			}
		}
		if p.Failed > 0 {
			break // keep the place: the next run retries this page
		}
		asked += len(users)
		st.AfterID = users[len(users)-1].ID
	}
	r.count("sweep", resultDone, p.Done)
	r.count("sweep", resultSkipped, p.Skipped)
	r.count("sweep", resultFailed, p.Failed)
	if r.Config.DryRun || p.Error != "" && st.AfterID == 0 {
		return p
	}
	b, _ := json.Marshal(st)
	if err := r.Store.SetState(ctx, StateSweep, string(b)); err != nil {
		p.Error = err.Error()
	}
	return p
}

// scrubExpired reduces the bodies of events finished longer than
// PayloadRetention ago to what audit needs (ids, types, times).
func (r *Reconciler) scrubExpired(ctx context.Context) PassSummary {
	var p PassSummary
	if r.Config.PayloadRetention <= 0 {
		return p
	}
	cutoff := time.Now().Add(-r.Config.PayloadRetention)
	if r.Config.DryRun {
		n, err := r.Store.ExpiredPayloads(ctx, cutoff)
		if err != nil {
			p.Error = err.Error()
		}
		p.Found = n
		return p
	}
	n, err := r.Store.ScrubExpiredPayloads(ctx, cutoff, max(r.Config.RetentionBatch, 1))
	if err != nil {
		p.Error = err.Error()
		r.Log.ErrorContext(ctx, "scrub expired payloads", "error", err)
		return p
	}
	p.Found, p.Done = n, n
	if n > 0 {
		r.Log.InfoContext(ctx, "stored bodies past retention scrubbed", "events", n, "retention", r.Config.PayloadRetention.String())
	}
	r.count("retention", resultDone, n)
	return p
}

// audit reports users whose balances differ from their ledger rows. It never
// changes them: a drift is evidence to investigate, not to overwrite.
func (r *Reconciler) audit(ctx context.Context) int {
	drift, total, err := r.Store.LedgerDrift(ctx, 20)
	if err != nil {
		r.Log.ErrorContext(ctx, "audit ledger", "error", err)
		return 0
	}
	for _, d := range drift {
		r.Log.ErrorContext(ctx, "ledger drift: balances differ from the ledger rows", "clerk_user_id", d.ClerkID,
			"available_credits", d.AvailableCredits, "used_credits", d.UsedCredits, "ledger_credits", d.Credits, "ledger_debits", d.Debits)
	}
	return total
}

// Deliverer delivers outbox messages one at a time; the webhook's worker and
// the reconciler share it.
type Deliverer struct {
	Store       OutboxStore
	Writer      ledger.MetadataWriter
	Metrics     *Metrics
	Log         *slog.Logger
	MaxAttempts int
}

// Outbox call bounds: a call to Clerk is cut off after callTimeout; a claim
// lasts outboxLease, well past it, so a message is never claimed twice while
// its first call can still be running.
const (
	callTimeout   = 20 * time.Second
	outboxLease   = 2 * callTimeout
	recordTimeout = 5 * time.Second
)

// DeliverOne delivers the oldest due message, if any, the way job queues do
// it: claim it (committed), call Clerk with no transaction open, record the
// result in a short statement of its own.
func (d *Deliverer) DeliverOne(ctx context.Context) (ledger.OutboxResult, error) {
	msg, ok, err := d.Store.ClaimOutbox(ctx, outboxLease)
	if err != nil || !ok {
		return ledger.OutboxResult{}, err
	}
	res := ledger.OutboxResult{Found: true}
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	res.Err = d.Writer.WriteMetadata(cctx, msg.ClerkUserID, msg.PublicMetadata)
	cancel()
	rec := d.outcome(ctx, msg, res.Err)
	res.Delivered = rec.Status == ledger.OutboxDelivered
	res.Dead = rec.Status == ledger.OutboxDead
	res.Skipped = rec.Status == ledger.OutboxSkipped

	// Recorded even when ctx ended meanwhile (shutdown): the result of a
	// call that happened must not be lost, and an interrupted one is due
	// again at once rather than after the lease.
	rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer rcancel()
	current, err := d.Store.RecordOutbox(rctx, msg, rec)
	if err != nil {
		return res, err
	}
	result := string(rec.Status)
	switch _, limited := ledger.RetryAfter(res.Err); {
	case !current:
		result = "superseded"
		d.Log.WarnContext(ctx, "Clerk metadata write outlived its lease; a newer claim decides", "clerk_user_id", msg.ClerkUserID)
	case res.Delivered:
	case res.Dead:
		d.Log.ErrorContext(ctx, "Clerk metadata write parked as dead", "clerk_user_id", msg.ClerkUserID, "error", res.Err)
	case res.Skipped:
		d.Log.WarnContext(ctx, "Clerk metadata write skipped: Clerk refused it for good", "clerk_user_id", msg.ClerkUserID, "error", res.Err)
	case limited:
		result = "rate_limited"
		d.Log.WarnContext(ctx, "Clerk metadata write rate limited", "error", res.Err)
	default:
		result = "failed"
		d.Log.WarnContext(ctx, "Clerk metadata write failed; will retry", "clerk_user_id", msg.ClerkUserID, "error", res.Err)
	}
	if d.Metrics != nil {
		d.Metrics.outbox.WithLabelValues(result).Inc()
	}
	return res, nil
}

// outcome decides what an attempt's error means for the message: delivered;
// skipped for good (ErrPermanent: the user is gone, or the request refused);
// a 429's Retry-After, which does not use up an attempt, and neither does a
// call cut short by this process shutting down; else exponential backoff from
// 1 s, capped at an hour, with jitter, and dead after MaxAttempts. The 1 s
// floor also keeps every user far below Clerk's 10 requests per 10 s per user.
func (d *Deliverer) outcome(ctx context.Context, m ledger.OutboxMessage, err error) ledger.OutboxRecord {
	switch {
	case err == nil:
		return ledger.OutboxRecord{Status: ledger.OutboxDelivered, CountAttempt: true}
	case errors.Is(err, ledger.ErrPermanent):
		return ledger.OutboxRecord{Status: ledger.OutboxSkipped, Err: err, CountAttempt: true}
	case ctx.Err() != nil:
		return ledger.OutboxRecord{Status: ledger.OutboxPending, Err: err}
	}
	if wait, ok := ledger.RetryAfter(err); ok {
		return ledger.OutboxRecord{Status: ledger.OutboxPending, Err: err, After: max(wait, time.Second)}
	}
	attempts := m.Attempts + 1
	if attempts >= d.MaxAttempts {
		return ledger.OutboxRecord{Status: ledger.OutboxDead, Err: err, CountAttempt: true}
	}
	return ledger.OutboxRecord{Status: ledger.OutboxPending, Err: err, After: Backoff(attempts), CountAttempt: true}
}

// Backoff is the wait before attempt n+1 after n failures: 2^(n-1) s (1 s,
// 2 s, 4 s …) capped at one hour, plus up to 20% jitter.
func Backoff(n int) time.Duration {
	base := time.Hour
	if n < 13 {
		base = time.Second << max(n-1, 0)
	}
	return base + time.Duration(rand.Int64N(int64(base/5)+1))
}
