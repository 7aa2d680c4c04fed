package postgres

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/pgdialect"

	"github.com/creditgate/creditgate/pkg/ledger"
)

// The reconciler's queries. Each method is one business operation; the ones
// that write take the user's row lock like the webhook does, so they compose
// with live deliveries in any interleaving.

// reconcileLockKey is the advisory lock one reconciler run holds.
const reconcileLockKey = 0x72636e6c // "rcnl"

// TryReconcileLock takes the reconciler's advisory lock (xactLock). ok is
// false when another run holds it; release ends the hold.
func (s *Store) TryReconcileLock(ctx context.Context) (release func(), ok bool, err error) {
	release, ok, err = xactLock(ctx, s.db, reconcileLockKey, false)
	if err != nil {
		return nil, false, fmt.Errorf("reconcile lock: %w", mapError(err))
	}
	return release, ok, nil
}

// xactLock holds the advisory lock key in a transaction of its own, on a
// connection of its own, until release: wait blocks until it is granted,
// otherwise ok says whether it was. A transaction-level lock, unlike a
// session lock, survives a transaction pooler (PgBouncer in transaction
// mode keeps the server connection for as long as the transaction is open,
// and the lock ends with it); the transaction holds no snapshot between
// statements, so it holds back neither vacuum nor other work. A connection
// that dies takes the lock with it.
func xactLock(ctx context.Context, db *bun.DB, key int64, wait bool) (release func(), ok bool, err error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, false, err
	}
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		conn.Close()
		return nil, false, err
	}
	end := func() {
		_ = tx.Rollback()
		conn.Close()
	}
	if wait {
		_, err = tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock(?)", key)
		ok = err == nil
	} else {
		err = tx.QueryRowContext(ctx, "SELECT pg_try_advisory_xact_lock(?)", key).Scan(&ok)
	}
	if err != nil || !ok {
		end()
		return nil, false, err
	}
	return end, true, nil
}

// FailedEvents returns up to limit events left failed and received before
// olderThan, oldest first.
func (s *Store) FailedEvents(ctx context.Context, olderThan time.Time, limit int) ([]ledger.FailedEvent, error) {
	var rows []EventRow
	err := s.db.NewSelect().Model(&rows).
		Column("svix_id", "payload", "raw_body", "attempts", "received_at").
		Where("status = 'failed' AND received_at < ?", olderThan).
		Order("received_at").Limit(int64(limit)).Scan(ctx)
	if err != nil {
		return nil, fmt.Errorf("list failed events: %w", mapError(err))
	}
	out := make([]ledger.FailedEvent, 0, len(rows))
	for _, r := range rows {
		// The bytes Svix signed when they were kept (every failure since
		// they are): the re-run must decode exactly what the webhook did.
		// Older rows hold only jsonb's normalised copy.
		body := r.RawBody
		if body == nil {
			body = r.Payload
		}
		out = append(out, ledger.FailedEvent{
			Delivery: ledger.Delivery{SvixID: r.SvixID, Body: body, ReceivedAt: r.ReceivedAt},
			Attempts: r.Attempts,
		})
	}
	return out, nil
}

// MarkDead parks a failed event that has used maxAttempts; it reports whether
// the event was parked.
func (s *Store) MarkDead(ctx context.Context, svixID string, maxAttempts int) (bool, error) {
	res, err := s.db.ExecContext(ctx,
		"UPDATE webhook_events SET status = 'dead' WHERE svix_id = ? AND status = 'failed' AND attempts >= ?",
		svixID, maxAttempts)
	if err != nil {
		return false, fmt.Errorf("park event %s: %w", svixID, mapError(err))
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// RequeuedEvent is a dead event set back to failed by a requeue.
type RequeuedEvent struct {
	SvixID     string    `bun:"svix_id"`
	ReceivedAt time.Time `bun:"received_at"`
}

// Requeue is what a requeue of dead events did, or in a dry run would do.
type Requeue struct {
	// Requeued lists the events moved from dead to failed, oldest first.
	Requeued []RequeuedEvent
	// NotDead maps each svix id asked for that is stored but not dead to its
	// status (e.g. failed when an earlier requeue already moved it).
	NotDead map[string]string
	// NotFound lists the svix ids asked for that no event has, in order asked.
	NotFound []string
}

// requeueCTE moves the dead events matching where back to failed with their
// attempts reset, so that the reconciler's failed-events pass re-runs them
// with a full set of attempts; last_error is kept. It is one UPDATE guarded
// by status = 'dead', so a second requeue changes nothing. A dry run selects
// the same rows instead.
func requeueCTE(where string, dryRun bool) string {
	if dryRun {
		return "SELECT w.svix_id, w.received_at FROM webhook_events w WHERE w.status = 'dead' AND " + where
	}
	return "UPDATE webhook_events w SET status = 'failed', attempts = 0 WHERE w.status = 'dead' AND " + where +
		" RETURNING w.svix_id, w.received_at"
}

// RequeueDeadEvents sets the dead events among svixIDs back to failed, in one
// statement, and reports what became of every id asked for. Running it again
// changes nothing: the events are no longer dead.
func (s *Store) RequeueDeadEvents(ctx context.Context, svixIDs []string, dryRun bool) (Requeue, error) {
	var rows []struct {
		SvixID     string         `bun:"svix_id"`
		Requeued   bool           `bun:"requeued"`
		Status     sql.NullString `bun:"status"`
		ReceivedAt sql.NullTime   `bun:"received_at"`
	}
	// The outer SELECT reads webhook_events as it was before the UPDATE, so
	// status is the status that made an id not requeued.
	q := `
WITH asked AS (
	SELECT svix_id, ord FROM unnest(?0::text[]) WITH ORDINALITY AS a(svix_id, ord)
), requeued AS (` + requeueCTE("w.svix_id IN (SELECT svix_id FROM asked)", dryRun) + `)
SELECT a.svix_id, r.svix_id IS NOT NULL AS requeued, w.status, w.received_at
FROM asked a
LEFT JOIN requeued r ON r.svix_id = a.svix_id
LEFT JOIN webhook_events w ON w.svix_id = a.svix_id
ORDER BY w.received_at, a.ord`
	asked := make([]string, 0, len(svixIDs))
	seen := make(map[string]bool, len(svixIDs))
	for _, id := range svixIDs {
		if !seen[id] {
			seen[id] = true
			asked = append(asked, id)
		}
	}
	if err := s.db.NewRaw(q, pgdialect.Array(asked)).Scan(ctx, &rows); err != nil {
		return Requeue{}, fmt.Errorf("requeue %d dead events by svix id: %w", len(svixIDs), mapError(err))
	}
	out := Requeue{Requeued: []RequeuedEvent{}, NotDead: map[string]string{}, NotFound: []string{}}
	for _, r := range rows {
		switch {
		case r.Requeued:
			out.Requeued = append(out.Requeued, RequeuedEvent{SvixID: r.SvixID, ReceivedAt: r.ReceivedAt.Time})
		case r.Status.Valid:
			out.NotDead[r.SvixID] = r.Status.String
		default:
			out.NotFound = append(out.NotFound, r.SvixID)
		}
	}
	return out, nil
}

// RequeueDeadEventsSince sets every dead event received at or after since
// back to failed, in one statement. Running it again changes nothing.
func (s *Store) RequeueDeadEventsSince(ctx context.Context, since time.Time, dryRun bool) (Requeue, error) {
	out := Requeue{Requeued: []RequeuedEvent{}}
	q := "WITH requeued AS (" + requeueCTE("w.received_at >= ?0", dryRun) + ") SELECT svix_id, received_at FROM requeued ORDER BY received_at, svix_id"
	if err := s.db.NewRaw(q, since).Scan(ctx, &out.Requeued); err != nil {
		return Requeue{}, fmt.Errorf("requeue dead events received since %s: %w", since.Format(time.RFC3339), mapError(err))
	}
	if out.Requeued == nil {
		out.Requeued = []RequeuedEvent{}
	}
	return out, nil
}

// usersWithoutSignupSQL finds live users that lack their signup credit. It
// asks for the credit by its key, not for a zero balance: a user who spent
// everything holds 0 credits and must never be credited again.
const usersWithoutSignupSQL = `
SELECT u.id, u.clerk_id FROM users u
WHERE u.deleted_at IS NULL
	AND NOT EXISTS (SELECT 1 FROM credit_transactions t WHERE t.idempotency_key = 'signup:' || u.clerk_id)
ORDER BY u.id LIMIT ?`

// UsersWithoutSignupCredit returns up to limit live users lacking their signup credit.
func (s *Store) UsersWithoutSignupCredit(ctx context.Context, limit int) ([]ledger.UserRef, error) {
	var refs []struct {
		ID      int64  `bun:"id"`
		ClerkID string `bun:"clerk_id"`
	}
	if err := s.db.NewRaw(usersWithoutSignupSQL, limit).Scan(ctx, &refs); err != nil {
		return nil, fmt.Errorf("list users without signup credit: %w", mapError(err))
	}
	out := make([]ledger.UserRef, len(refs))
	for i, r := range refs {
		out[i] = ledger.UserRef{ID: r.ID, ClerkID: r.ClerkID}
	}
	return out, nil
}

// GrantMissingSignup grants the signup credit to a live user that lacks it,
// under the user's row lock; it reports whether it granted.
func (s *Store) GrantMissingSignup(ctx context.Context, u ledger.UserRef, credits int64, outbox bool) (bool, error) {
	var granted bool
	err := s.inTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		var deleted bool
		err := tx.QueryRowContext(ctx, "SELECT deleted_at IS NOT NULL FROM users WHERE id = ? FOR UPDATE", u.ID).Scan(&deleted)
		if err != nil {
			return err
		}
		if deleted {
			granted = false
			return nil
		}
		granted, err = grantSignup(ctx, tx, u.ID, u.ClerkID, credits, "", outbox)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("grant missing signup credit to %s: %w", u.ClerkID, err)
	}
	return granted, nil
}

// SettledClerkUsers returns which of ids need no backfill: known here and
// either deleted or holding their signup credit.
func (s *Store) SettledClerkUsers(ctx context.Context, ids []string) (map[string]bool, error) {
	var settled []string
	err := s.db.NewRaw(`
SELECT u.clerk_id FROM users u
WHERE u.clerk_id IN (?)
	AND (u.deleted_at IS NOT NULL
		OR EXISTS (SELECT 1 FROM credit_transactions t WHERE t.idempotency_key = 'signup:' || u.clerk_id))`,
		bun.List(ids)).Scan(ctx, &settled)
	if err != nil {
		return nil, fmt.Errorf("look up known users: %w", mapError(err))
	}
	m := make(map[string]bool, len(settled))
	for _, id := range settled {
		m[id] = true
	}
	return m, nil
}

// ensureUserSQL inserts a user Clerk lists but we lack, or locks the one we
// have, like claimEventAndUserSQL without an event.
const ensureUserSQL = `
INSERT INTO users AS u (clerk_id, email, clerk_updated_at) VALUES (?0, ?1, ?2::timestamptz)
ON CONFLICT (clerk_id) DO UPDATE SET clerk_id = EXCLUDED.clerk_id
RETURNING u.id, u.xmax = 0, u.deleted_at IS NOT NULL, u.clerk_updated_at, u.available_credits`

// EnsureUser makes a user listed by Clerk exist here with its signup credit,
// exactly as a user.created delivery would (same key, newest email wins); a
// tombstoned user is left alone. It reports whether it granted the credit.
func (s *Store) EnsureUser(ctx context.Context, u ledger.ClerkUser, credits int64, outbox bool) (bool, error) {
	var res ledger.Result
	err := s.inTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		res = ledger.Result{}
		var cl claimed
		if err := tx.QueryRowContext(ctx, ensureUserSQL, u.ID, nullable(u.Email), nullableTime(u.UpdatedAt)).
			Scan(&cl.userID, &cl.inserted, &cl.deleted, &cl.clerkUpdatedAt, &cl.available); err != nil {
			return err
		}
		_, err := applyUpsert(ctx, tx, ledger.UserChange{
			Change:        ledger.Change{Kind: ledger.ChangeUserCreated, ClerkUserID: u.ID, Email: u.Email, UpdatedAt: u.UpdatedAt},
			SignupCredits: credits,
			Outbox:        outbox,
		}, cl, &res)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("backfill user %s: %w", u.ID, err)
	}
	return res.CreditsGranted > 0, nil
}

// LiveUsersAfter returns up to limit live users with ids above afterID,
// in id order (the deletion sweep's cursor).
func (s *Store) LiveUsersAfter(ctx context.Context, afterID int64, limit int) ([]ledger.LiveUser, error) {
	var rows []struct {
		ID        int64     `bun:"id"`
		ClerkID   string    `bun:"clerk_id"`
		CreatedAt time.Time `bun:"created_at"`
	}
	if err := s.db.NewRaw(`SELECT id, clerk_id, created_at FROM users WHERE id > ? AND deleted_at IS NULL ORDER BY id LIMIT ?`,
		afterID, limit).Scan(ctx, &rows); err != nil {
		return nil, fmt.Errorf("list live users after %d: %w", afterID, mapError(err))
	}
	out := make([]ledger.LiveUser, len(rows))
	for i, r := range rows {
		out[i] = ledger.LiveUser{UserRef: ledger.UserRef{ID: r.ID, ClerkID: r.ClerkID}, CreatedAt: r.CreatedAt}
	}
	return out, nil
}

// DeleteGoneUser applies, to a user Clerk no longer has, exactly what a
// user.deleted would: tombstone, email cleared, remaining credits forfeited
// (with the same key, account_deleted:<clerk_id>), stored bodies scrubbed.
// It reports the credits forfeited and whether it deleted (false: deleted
// meanwhile).
func (s *Store) DeleteGoneUser(ctx context.Context, u ledger.UserRef, forfeit bool) (forfeited int64, deleted bool, err error) {
	err = s.inTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		forfeited, deleted = 0, false
		cl := claimed{userID: u.ID}
		if err := tx.QueryRowContext(ctx, "SELECT deleted_at IS NOT NULL, available_credits FROM users WHERE id = ? FOR UPDATE", u.ID).
			Scan(&cl.deleted, &cl.available); err != nil {
			return err
		}
		var res ledger.Result
		changed, err := applyDelete(ctx, tx, ledger.UserChange{
			Change:  ledger.Change{Kind: ledger.ChangeUserDeleted, ClerkUserID: u.ClerkID},
			Forfeit: forfeit,
		}, cl, &res)
		if err != nil || !changed {
			return err
		}
		forfeited, deleted = res.CreditsForfeited, true
		return scrubUser(ctx, tx, u.ClerkID)
	})
	if err != nil {
		return 0, false, fmt.Errorf("delete %s, gone from Clerk: %w", u.ClerkID, err)
	}
	return forfeited, deleted, nil
}

// State returns a small named value the reconciler keeps between runs, or ""
// when none is stored.
func (s *Store) State(ctx context.Context, name string) (string, error) {
	var v string
	err := s.db.NewRaw("SELECT value FROM reconcile_state WHERE name = ?", name).Scan(ctx, &v)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read %s: %w", name, mapError(err))
	}
	return v, nil
}

// SetState stores a small named value.
func (s *Store) SetState(ctx context.Context, name, value string) error {
	_, err := s.db.ExecContext(ctx, `
INSERT INTO reconcile_state AS s (name, value) VALUES (?0, ?1)
ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value, updated_at = now()`, name, value)
	if err != nil {
		return fmt.Errorf("store %s: %w", name, mapError(err))
	}
	return nil
}

// Watermark returns a stored time by name; ok is false when none is stored.
func (s *Store) Watermark(ctx context.Context, name string) (t time.Time, ok bool, err error) {
	var v string
	err = s.db.NewRaw("SELECT value FROM reconcile_state WHERE name = ?", name).Scan(ctx, &v)
	if errors.Is(err, sql.ErrNoRows) {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, fmt.Errorf("read watermark %s: %w", name, mapError(err))
	}
	t, err = time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("watermark %s holds %q: %w", name, v, err)
	}
	return t, true, nil
}

// SetWatermark stores a time by name, never moving it backwards.
func (s *Store) SetWatermark(ctx context.Context, name string, t time.Time) error {
	_, err := s.db.ExecContext(ctx, `
INSERT INTO reconcile_state AS s (name, value) VALUES (?0, ?1)
ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value, updated_at = now()
	WHERE s.value::timestamptz < EXCLUDED.value::timestamptz`, name, t.UTC().Format(time.RFC3339Nano))
	if err != nil {
		return fmt.Errorf("set watermark %s: %w", name, mapError(err))
	}
	return nil
}

// claimOutboxSQL claims the oldest due message: the lease moves it out of
// the queue until the call's deadline has long passed, and claim numbers the
// claim so that only the current one records a result. SKIP LOCKED lets
// workers and reconcilers claim side by side without waiting for each other.
const claimOutboxSQL = `
UPDATE clerk_metadata_outbox o
SET next_attempt_at = now() + ?0 * interval '1 millisecond', claim = o.claim + 1
WHERE o.id = (
	SELECT id FROM clerk_metadata_outbox
	WHERE status = 'pending' AND next_attempt_at <= now()
	ORDER BY next_attempt_at, id LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING o.id, o.clerk_id, o.public_metadata, o.attempts, o.claim`

// ClaimOutbox claims the oldest due outbox message for lease, in a statement
// of its own (committed before Clerk is called: no transaction, and no pool
// connection, is held across the call). ok is false when none is due. A
// message whose result is never recorded (its process died mid-call) is due
// again when the lease runs out; its write is then made once more, which is
// harmless: Clerk merges the same values.
func (s *Store) ClaimOutbox(ctx context.Context, lease time.Duration) (msg ledger.OutboxMessage, ok bool, err error) {
	var meta []byte
	err = s.db.QueryRowContext(ctx, claimOutboxSQL, lease.Milliseconds()).
		Scan(&msg.ID, &msg.ClerkUserID, &meta, &msg.Attempts, &msg.Claim)
	if errors.Is(err, sql.ErrNoRows) {
		return msg, false, nil
	}
	if err != nil {
		return msg, false, fmt.Errorf("claim outbox message: %w", mapError(err))
	}
	msg.PublicMetadata = json.RawMessage(meta)
	return msg, true, nil
}

// RecordOutbox records what became of a claimed message, in a short
// statement of its own, if the claim is still the current one; it reports
// whether it was (a claim whose lease ran out and was taken over records
// nothing: the newer claim decides).
func (s *Store) RecordOutbox(ctx context.Context, msg ledger.OutboxMessage, r ledger.OutboxRecord) (bool, error) {
	var errText any
	if r.Err != nil {
		errText = truncate(r.Err.Error())
	}
	attempt := 0
	if r.CountAttempt {
		attempt = 1
	}
	res, err := s.db.ExecContext(ctx, `
UPDATE clerk_metadata_outbox SET status = ?2, attempts = attempts + ?3, last_error = ?4,
	next_attempt_at = now() + ?5 * interval '1 millisecond',
	delivered_at = CASE WHEN ?2 = 'delivered' THEN now() END
WHERE id = ?0 AND claim = ?1 AND status = 'pending'`,
		msg.ID, msg.Claim, string(r.Status), attempt, errText, r.After.Milliseconds())
	if err != nil {
		return false, fmt.Errorf("record outbox message %d: %w", msg.ID, mapError(err))
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// DueOutbox counts outbox messages due now (for dry runs).
func (s *Store) DueOutbox(ctx context.Context) (int, error) {
	var n int
	err := s.db.NewRaw("SELECT count(*) FROM clerk_metadata_outbox WHERE status = 'pending' AND next_attempt_at <= now()").Scan(ctx, &n)
	return n, mapError(err)
}

// driftSQL lists users whose balances differ from their ledger rows.
const driftSQL = `
SELECT u.clerk_id, u.available_credits, u.used_credits, s.credits, s.debits
FROM users u
LEFT JOIN LATERAL (
	SELECT COALESCE(SUM(amount) FILTER (WHERE type = 'credit'), 0) AS credits,
		COALESCE(SUM(amount) FILTER (WHERE type = 'debit'), 0) AS debits
	FROM credit_transactions t WHERE t.user_id = u.id
) s ON true
WHERE u.available_credits <> s.credits - s.debits OR u.used_credits <> s.debits
ORDER BY u.id`

// LedgerDrift returns up to limit users whose balances differ from the sums
// of their ledger rows, and how many there are in all. It only reports: a
// drift is a fact to investigate, never to overwrite.
func (s *Store) LedgerDrift(ctx context.Context, limit int) ([]ledger.Drift, int, error) {
	var rows []struct {
		ClerkID          string `bun:"clerk_id"`
		AvailableCredits int64  `bun:"available_credits"`
		UsedCredits      int64  `bun:"used_credits"`
		Credits          int64  `bun:"credits"`
		Debits           int64  `bun:"debits"`
	}
	if err := s.db.NewRaw(driftSQL).Scan(ctx, &rows); err != nil {
		return nil, 0, fmt.Errorf("audit ledger: %w", mapError(err))
	}
	out := make([]ledger.Drift, 0, min(limit, len(rows)))
	for _, r := range rows[:min(limit, len(rows))] {
		out = append(out, ledger.Drift(r))
	}
	return out, len(rows), nil
}

// scrubExpiredSQL reduces the bodies of finished events received before a
// cutoff to what audit needs, oldest first, a bounded batch at a time. Events
// still to be re-run (failed, dead) keep their bytes.
const scrubExpiredSQL = `
UPDATE webhook_events w
SET payload = creditgate_scrubbed_payload(w.payload, w.event_type), raw_body = NULL, scrubbed_at = now()
FROM (
	SELECT svix_id FROM webhook_events
	WHERE scrubbed_at IS NULL AND received_at < ?0 AND status IN ('processed', 'stale', 'ignored', 'rejected')
	ORDER BY received_at LIMIT ?1 FOR UPDATE SKIP LOCKED
) batch
WHERE w.svix_id = batch.svix_id`

// ScrubExpiredPayloads strips the personal data from up to limit finished
// events received before cutoff and returns how many it scrubbed.
func (s *Store) ScrubExpiredPayloads(ctx context.Context, cutoff time.Time, limit int) (int, error) {
	res, err := s.db.ExecContext(ctx, scrubExpiredSQL, cutoff, limit)
	if err != nil {
		return 0, fmt.Errorf("scrub payloads received before %s: %w", cutoff.Format(time.RFC3339), mapError(err))
	}
	n, err := res.RowsAffected()
	return int(n), err
}

// ExpiredPayloads counts finished events received before cutoff whose
// bodies are not scrubbed yet (for dry runs).
func (s *Store) ExpiredPayloads(ctx context.Context, cutoff time.Time) (int, error) {
	var n int
	err := s.db.NewRaw(`SELECT count(*) FROM webhook_events WHERE scrubbed_at IS NULL AND received_at < ?
		AND status IN ('processed', 'stale', 'ignored', 'rejected')`, cutoff).Scan(ctx, &n)
	return n, mapError(err)
}

// Run outcomes recorded in reconcile_runs.
const (
	RunRunning   = "running"
	RunSuccess   = "success"
	RunPartial   = "partial"
	RunFailed    = "failed"
	RunSkipped   = "skipped"
	RunAbandoned = "abandoned"
)

// abandonedRunError is the error recorded on a run marked abandoned.
const abandonedRunError = "abandoned: the run never recorded its end (its process was killed " +
	"without a chance to, e.g. SIGKILL on OOM or after a deadline's grace period, or its last write failed); " +
	"marked by the next run, so finished_at is when that run started"

// AbandonRuns marks every run still recorded as running abandoned, in one
// statement, and returns how many it marked. Call it only while holding the
// reconciler's lock (TryReconcileLock) and before StartRun: then no other run
// is live, so a running row is one whose process died without recording its
// end.
func (s *Store) AbandonRuns(ctx context.Context) (int64, error) {
	res, err := s.db.ExecContext(ctx,
		"UPDATE reconcile_runs SET outcome = ?, finished_at = now(), error = ? WHERE outcome = ?",
		RunAbandoned, abandonedRunError, RunRunning)
	if err != nil {
		return 0, fmt.Errorf("mark abandoned runs: %w", mapError(err))
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("mark abandoned runs: rows affected: %w", err)
	}
	return n, nil
}

// StartRun records the start of a reconciler run and returns its id.
func (s *Store) StartRun(ctx context.Context) (int64, error) {
	var id int64
	if err := s.db.QueryRowContext(ctx, "INSERT INTO reconcile_runs DEFAULT VALUES RETURNING id").Scan(&id); err != nil {
		return 0, fmt.Errorf("record run start: %w", mapError(err))
	}
	return id, nil
}

// FinishRun records a run's end, outcome and summary.
func (s *Store) FinishRun(ctx context.Context, id int64, outcome string, summary any, runErr error) error {
	b, err := json.Marshal(summary)
	if err != nil {
		return err
	}
	var errText any
	if runErr != nil {
		errText = truncate(runErr.Error())
	}
	_, err = s.db.ExecContext(ctx,
		"UPDATE reconcile_runs SET finished_at = now(), outcome = ?, summary = ?::jsonb, error = ? WHERE id = ?",
		outcome, string(b), errText, id)
	if err != nil {
		return fmt.Errorf("record run end: %w", mapError(err))
	}
	return nil
}

// backlogSQL reads every alerting gauge in one round trip.
const backlogSQL = `
SELECT
	(SELECT count(*) FROM webhook_events WHERE status = 'failed'),
	(SELECT count(*) FROM webhook_events WHERE status = 'dead'),
	COALESCE((SELECT extract(epoch FROM now() - min(received_at)) FROM webhook_events WHERE status = 'failed'), 0),
	(SELECT count(*) FROM users u WHERE u.deleted_at IS NULL
		AND NOT EXISTS (SELECT 1 FROM credit_transactions t WHERE t.idempotency_key = 'signup:' || u.clerk_id)),
	(SELECT count(*) FROM clerk_metadata_outbox WHERE status = 'pending'),
	(SELECT count(*) FROM clerk_metadata_outbox WHERE status = 'dead'),
	COALESCE((SELECT extract(epoch FROM now() - min(created_at)) FROM clerk_metadata_outbox WHERE status = 'pending'), 0),
	(SELECT count(*) FROM (` + driftSQL + `) d),
	(SELECT max(finished_at) FROM reconcile_runs WHERE outcome = 'success'),
	(SELECT count(*) FROM credit_holds WHERE status = 'active' AND expires_at > now()),
	(SELECT COALESCE(sum(amount), 0) FROM credit_holds WHERE status = 'active' AND expires_at > now()),
	(SELECT count(*) FROM credit_holds WHERE status = 'active' AND expires_at <= now())
		+ (SELECT count(*) FROM credit_lots WHERE remaining > 0 AND expires_at <= now())`

// Backlog reads the state the alerts watch. It scans the ledger to count
// drift, so callers cache it (the webhook refreshes it at most every 30 s).
func (s *Store) Backlog(ctx context.Context) (ledger.Backlog, error) {
	var b ledger.Backlog
	var oldestEvent, oldestOutbox float64
	var last sql.NullTime
	err := s.db.QueryRowContext(ctx, backlogSQL).Scan(&b.EventsFailed, &b.EventsDead, &oldestEvent,
		&b.UsersWithoutSignupCredit, &b.OutboxPending, &b.OutboxDead, &oldestOutbox, &b.LedgerDriftUsers, &last,
		&b.ActiveHolds, &b.HeldCredits, &b.ExpiryBacklog)
	if err != nil {
		return b, fmt.Errorf("read backlog: %w", mapError(err))
	}
	b.OldestUnfinishedEventAge = time.Duration(oldestEvent * float64(time.Second))
	b.OldestOutboxAge = time.Duration(oldestOutbox * float64(time.Second))
	if last.Valid {
		b.LastSuccessfulReconcile = last.Time
	}
	return b, nil
}
