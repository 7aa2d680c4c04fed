package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/uptrace/bun"

	"github.com/creditgate/creditgate/pkg/ledger"
)

// maxErrorLen bounds what is kept of an error in webhook_events.last_error.
const maxErrorLen = 2000

// nullable returns nil for "" so that it is stored as NULL.
func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// nullableTime returns nil for the zero time so that it is stored as NULL.
func nullableTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t
}

func truncate(s string) string {
	if len(s) <= maxErrorLen {
		return s
	}
	s = s[:maxErrorLen]
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

// claimEventAndUserSQL records the event as processed, unless its svix id was
// seen before and did not fail, and then upserts the user: a new one is
// inserted with the event's state (a tombstone when the event is a delete), an
// existing one is only locked and returned as stored. Every event of one user
// serializes on that row lock, always taken after the event row's, so
// concurrent deliveries cannot deadlock. xmax = 0 tells an insert from a
// conflict.
const claimEventAndUserSQL = `
WITH ev AS (
	INSERT INTO webhook_events AS w
		(svix_id, event_type, clerk_user_id, payload, raw_body, status, attempts, received_at, processed_at)
	VALUES (?0, ?1, ?2, ?3::jsonb, ?4, 'processed', 1, ?5, now())
	ON CONFLICT (svix_id) DO UPDATE
		SET status = 'processed', attempts = w.attempts + 1, last_error = NULL, processed_at = now()
		WHERE w.status IN ('failed', 'dead')
	RETURNING 1
), u AS (
	INSERT INTO users AS u (clerk_id, email, clerk_updated_at, deleted_at)
	SELECT ?2, ?6, ?7::timestamptz, CASE WHEN ?8 THEN now() END WHERE EXISTS (SELECT 1 FROM ev)
	ON CONFLICT (clerk_id) DO UPDATE SET clerk_id = EXCLUDED.clerk_id
	RETURNING u.id, u.xmax = 0 AS inserted, u.deleted_at IS NOT NULL AS deleted,
		u.clerk_updated_at, u.available_credits
)
SELECT EXISTS (SELECT 1 FROM ev), u.id, u.inserted, u.deleted, u.clerk_updated_at, u.available_credits
FROM (SELECT 1) AS one LEFT JOIN u ON true`

// postEntrySQL appends one ledger entry unless its idempotency key exists, and
// moves the user's balances by it in the same statement. A debit that would
// take available_credits below zero fails the CHECK constraint. When ?7 is
// true, a new entry also queues the Clerk metadata write that reports it
// (the outbox), still in the same statement: a grant and its report exist
// together or not at all.
const postEntrySQL = `
WITH e AS (
	INSERT INTO credit_transactions
		(user_id, clerk_id, amount, type, kind, reason, status, idempotency_key, webhook_event_id)
	VALUES (?0, ?1, ?2, ?3, ?8, ?4, 'completed', ?5, ?6)
	ON CONFLICT (idempotency_key) DO NOTHING
	RETURNING id, user_id, clerk_id, amount, type, idempotency_key
), l AS (
	INSERT INTO credit_lots (user_id, entry_id, amount, remaining)
	SELECT e.user_id, e.id, e.amount, e.amount FROM e WHERE e.type = 'credit'
), o AS (
	INSERT INTO clerk_metadata_outbox (user_id, clerk_id, idempotency_key, public_metadata)
	SELECT e.user_id, e.clerk_id, 'metadata:' || e.idempotency_key,
		jsonb_build_object('creditgate', jsonb_build_object('user_id', e.user_id, 'signup_credits', e.amount))
	FROM e WHERE ?7
	ON CONFLICT (idempotency_key) DO NOTHING
)
UPDATE users SET
	available_credits = available_credits + CASE WHEN e.type = 'credit' THEN e.amount ELSE -e.amount END,
	used_credits = used_credits + CASE WHEN e.type = 'debit' THEN e.amount ELSE 0 END,
	version = version + 1,
	updated_at = now()
FROM e WHERE users.id = e.user_id`

// Entry is one ledger entry to post.
type Entry struct {
	UserID         int64
	ClerkID        string
	Amount         int64
	Type           string
	Reason         string
	IdempotencyKey string
	// WebhookEventID is the svix id that caused the entry, or "".
	WebhookEventID string
	// Outbox queues the Clerk metadata write reporting a new entry.
	Outbox bool
	// Kind is what the entry is (ledger.Kind…). A credit also makes a lot
	// of its amount; a debit through postEntry (a forfeit) must empty the
	// lots and holds itself.
	Kind string
}

// postEntry appends e and moves the balances; it reports false when an entry
// with the same idempotency key already exists (and then changes nothing).
func postEntry(ctx context.Context, db bun.IDB, e Entry) (bool, error) {
	res, err := db.ExecContext(ctx, postEntrySQL,
		e.UserID, e.ClerkID, e.Amount, e.Type, e.Reason, e.IdempotencyKey, nullable(e.WebhookEventID), e.Outbox, e.Kind)
	if err != nil {
		return false, fmt.Errorf("post %s: %w", e.IdempotencyKey, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("post %s: rows affected: %w", e.IdempotencyKey, err)
	}
	return n == 1, nil
}

// claimed is the user row as claimEventAndUserSQL found or made it.
type claimed struct {
	isNew          bool // the svix id was not handled before
	userID         int64
	inserted       bool
	deleted        bool
	clerkUpdatedAt sql.NullTime
	available      int64
}

// newUserSQL is the common case, a first delivery for a user never seen, as
// ONE statement: one round trip and one commit, atomic like any statement.
// The user row is inserted holding its signup credit, the event is recorded
// as processed, the credit appended and the metadata write queued, each step
// only if the one before it happened. It returns no row when the user exists
// (then the general path runs), and fails with division_by_zero, rolling all
// of it back, if the user was new but the event or the credit was not, which
// the schema makes impossible but the ledger must never half-apply. (The
// divisor is the credit count, not a constant: PostgreSQL folds a constant
// 1/0 at plan time, whatever CASE guards it.)
const newUserSQL = `
WITH u AS (
	INSERT INTO users (clerk_id, email, clerk_updated_at, available_credits, version)
	VALUES ($3, $7, $8::timestamptz, $9, 1)
	ON CONFLICT (clerk_id) DO NOTHING
	RETURNING id
), ev AS (
	INSERT INTO webhook_events AS w
		(svix_id, event_type, clerk_user_id, payload, raw_body, status, attempts, received_at, processed_at)
	SELECT $1, $2, $3, $4::jsonb, $5, 'processed', 1, $6, now() FROM u
	ON CONFLICT (svix_id) DO UPDATE
		SET status = 'processed', attempts = w.attempts + 1, last_error = NULL, processed_at = now()
		WHERE w.status IN ('failed', 'dead')
	RETURNING svix_id
), c AS (
	INSERT INTO credit_transactions
		(user_id, clerk_id, amount, type, kind, reason, status, idempotency_key, webhook_event_id)
	SELECT u.id, $3, $9, 'credit', 'signup', 'signup_bonus', 'completed', $10, ev.svix_id FROM u, ev
	RETURNING id, user_id, clerk_id, amount, idempotency_key
), l AS (
	INSERT INTO credit_lots (user_id, entry_id, amount, remaining)
	SELECT c.user_id, c.id, c.amount, c.amount FROM c
), o AS (
	INSERT INTO clerk_metadata_outbox (user_id, clerk_id, idempotency_key, public_metadata)
	SELECT c.user_id, c.clerk_id, 'metadata:' || c.idempotency_key,
		jsonb_build_object('creditgate', jsonb_build_object('user_id', c.user_id, 'signup_credits', c.amount))
	FROM c WHERE $11
)
SELECT u.id, 1 / (SELECT count(*)::int FROM c) FROM u`

// applyNewUser tries newUserSQL; ok is false when the general path must run.
func (s *Store) applyNewUser(ctx context.Context, uc ledger.UserChange, payload, raw any) (ok bool, err error) {
	d, c := uc.Delivery, uc.Change
	var id int64
	var one int
	// Straight to the driver with bound parameters, prepared once per
	// connection (pgx's statement cache): no SQL text built per event, and
	// PostgreSQL plans it once instead of per delivery.
	for attempt := 1; ; attempt++ {
		args := []any{s.mode, d.SvixID, c.EventType, c.ClerkUserID, payload, raw, d.ReceivedAt, nullable(c.Email),
			nullableTime(c.UpdatedAt), uc.SignupCredits, ledger.SignupKey(c.ClerkUserID), uc.Outbox}
		if s.pool != nil {
			// Straight from the pool, past database/sql.
			err = s.pool.QueryRow(ctx, newUserSQL, args...).Scan(&id, &one)
		} else {
			err = s.db.DB.QueryRowContext(ctx, newUserSQL, args...).Scan(&id, &one)
		}
		// The server dropped the connection's prepared statement (a
		// pooler's DISCARD ALL, a DEALLOCATE): pgx has forgotten it now, so
		// once more prepares it again. Nothing ran.
		if attempt == 2 || !staleStatement(err) {
			break
		}
	}
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, sql.ErrNoRows) || errors.Is(err, pgx.ErrNoRows):
		return false, nil // the user exists
	}
	if pgErr, isPg := errors.AsType[*pgconn.PgError](err); isPg && (pgErr.Code == "22012" || isRetryable(err)) {
		return false, nil // nothing was applied; the general path sorts it out
	}
	return false, fmt.Errorf("apply new user %s: %w", c.ClerkUserID, mapError(err))
}

// ApplyUserChange implements ledger.Store. A first delivery for a new user
// costs one statement (newUserSQL); everything else runs in a transaction
// that takes the event's and then the user's row lock.
func (s *Store) ApplyUserChange(ctx context.Context, uc ledger.UserChange) (ledger.Result, error) {
	payload, raw := payloadArgsOf(uc.Delivery.Body, true, false) // only decoded events get here
	var res ledger.Result
	err := withPayload(uc.Delivery.Body, payload, raw, func(payload, raw any) error {
		var err error
		res, err = s.applyUserChange(ctx, uc, payload, raw)
		return err
	})
	return res, err
}

func (s *Store) applyUserChange(ctx context.Context, uc ledger.UserChange, payload, raw any) (ledger.Result, error) {
	d, c := uc.Delivery, uc.Change
	isDelete := c.Kind == ledger.ChangeUserDeleted
	if !isDelete {
		ok, err := s.applyNewUser(ctx, uc, payload, raw)
		if err != nil {
			return ledger.Result{}, err
		}
		if ok {
			return ledger.Result{SvixID: d.SvixID, Status: ledger.OutcomeProcessed, EventType: c.EventType,
				ClerkUserID: c.ClerkUserID, CreditsGranted: uc.SignupCredits}, nil
		}
	}
	var updatedAt any
	if !isDelete {
		updatedAt = nullableTime(c.UpdatedAt)
	}
	var res ledger.Result
	var duplicate bool
	err := s.inTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		res = ledger.Result{SvixID: d.SvixID, Status: ledger.OutcomeProcessed, EventType: c.EventType, ClerkUserID: c.ClerkUserID}
		var cl claimed
		var userID sql.NullInt64
		var inserted, deleted sql.NullBool
		var available sql.NullInt64
		email := nullable(c.Email)
		if isDelete {
			email = nil
		}
		if err := tx.QueryRowContext(ctx, claimEventAndUserSQL,
			d.SvixID, c.EventType, c.ClerkUserID, payload, raw, d.ReceivedAt, email, updatedAt, isDelete,
		).Scan(&cl.isNew, &userID, &inserted, &deleted, &cl.clerkUpdatedAt, &available); err != nil {
			return fmt.Errorf("claim event: %w", err)
		}
		if !cl.isNew {
			duplicate = true
			return nil
		}
		if !userID.Valid {
			return errors.New("claim event: user upsert returned no row")
		}
		cl.userID, cl.inserted, cl.deleted, cl.available = userID.Int64, inserted.Bool, deleted.Bool, available.Int64

		var changed bool
		var err error
		if isDelete {
			changed, err = applyDelete(ctx, tx, uc, cl, &res)
		} else {
			changed, err = applyUpsert(ctx, tx, uc, cl, &res)
		}
		if err != nil {
			return err
		}
		if !changed {
			res.Status = ledger.OutcomeStale
			if _, err := tx.ExecContext(ctx, "UPDATE webhook_events SET status = 'stale' WHERE svix_id = ?", d.SvixID); err != nil {
				return fmt.Errorf("mark event stale: %w", err)
			}
		}
		if isDelete || cl.deleted {
			// The user is gone: what Clerk sent about them is erased now,
			// this event's body included (a late event for a deleted user
			// too).
			if err := scrubUser(ctx, tx, c.ClerkUserID); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return ledger.Result{}, fmt.Errorf("apply %s for %s: %w", c.EventType, c.ClerkUserID, err)
	}
	if duplicate {
		return s.storedOutcome(ctx, d.SvixID)
	}
	return res, nil
}

// applyUpsert applies a user.created/user.updated to the claimed user and
// reports whether anything changed.
func applyUpsert(ctx context.Context, tx bun.Tx, uc ledger.UserChange, cl claimed, res *ledger.Result) (bool, error) {
	c := uc.Change
	if cl.deleted {
		return false, nil // a tombstone: never revived, never credited again
	}
	changed := cl.inserted
	if !cl.inserted && newer(c.UpdatedAt, cl.clerkUpdatedAt) {
		if _, err := tx.ExecContext(ctx,
			"UPDATE users SET email = ?, clerk_updated_at = ?::timestamptz, updated_at = now() WHERE id = ?",
			nullable(c.Email), nullableTime(c.UpdatedAt), cl.userID); err != nil {
			return false, fmt.Errorf("update user: %w", err)
		}
		changed = true
	}
	granted, err := grantSignup(ctx, tx, cl.userID, c.ClerkUserID, uc.SignupCredits, uc.Delivery.SvixID, uc.Outbox)
	if err != nil {
		return false, err
	}
	if granted {
		res.CreditsGranted = uc.SignupCredits
		changed = true
	}
	return changed, nil
}

// grantSignup posts the user's signup credit unless it exists; every path
// that grants it (webhook, reconciler, backfill) comes through here, with the
// one key signup:<clerk_id>.
func grantSignup(ctx context.Context, db bun.IDB, userID int64, clerkID string, credits int64, svixID string, outbox bool) (bool, error) {
	return postEntry(ctx, db, Entry{
		UserID:         userID,
		ClerkID:        clerkID,
		Amount:         credits,
		Type:           ledger.TypeCredit,
		Reason:         ledger.ReasonSignupBonus,
		IdempotencyKey: ledger.SignupKey(clerkID),
		WebhookEventID: svixID,
		Outbox:         outbox,
		Kind:           ledger.KindSignup,
	})
}

// newer reports whether an event's version is newer than the stored one. An
// event without a version never overrides a stored one.
func newer(event time.Time, stored sql.NullTime) bool {
	if event.IsZero() {
		return !stored.Valid
	}
	return !stored.Valid || event.After(stored.Time)
}

// applyDelete applies a user.deleted to the claimed user and reports whether
// anything changed. An unknown user was just inserted as a tombstone.
func applyDelete(ctx context.Context, tx bun.Tx, uc ledger.UserChange, cl claimed, res *ledger.Result) (bool, error) {
	if cl.inserted {
		return true, nil
	}
	if cl.deleted {
		return false, nil
	}
	// The address is personal data and may move to another account; the
	// credit rows stay, keyed by clerk_id.
	if _, err := tx.ExecContext(ctx,
		"UPDATE users SET deleted_at = now(), email = NULL, updated_at = now() WHERE id = ?", cl.userID); err != nil {
		return false, fmt.Errorf("delete user: %w", err)
	}
	// A closed account holds nothing: its active holds end, voided, their
	// credits back in their lots; with Forfeit every credit left (spendable
	// or expired and not yet booked) goes in one debit.
	if _, err := tx.ExecContext(ctx, voidUserHoldsSQL, cl.userID); err != nil {
		return false, fmt.Errorf("void holds: %w", err)
	}
	if uc.Forfeit && cl.available > 0 {
		if _, err := postEntry(ctx, tx, Entry{
			UserID:         cl.userID,
			ClerkID:        uc.Change.ClerkUserID,
			Amount:         cl.available,
			Type:           ledger.TypeDebit,
			Reason:         ledger.ReasonAccountDeleted,
			IdempotencyKey: ledger.ForfeitKey(uc.Change.ClerkUserID),
			WebhookEventID: uc.Delivery.SvixID,
			Kind:           ledger.KindForfeit,
		}); err != nil {
			return false, err
		}
		if _, err := tx.ExecContext(ctx, "UPDATE credit_lots SET remaining = 0 WHERE user_id = ? AND remaining > 0", cl.userID); err != nil {
			return false, fmt.Errorf("empty lots: %w", err)
		}
		res.CreditsForfeited = cl.available
	}
	return true, nil
}

// voidUserHoldsSQL ends a user's active holds as voided and puts their
// credits back in the lots they came from, in one statement.
const voidUserHoldsSQL = `
WITH v AS (
	UPDATE credit_holds SET status = 'voided', finished_at = now()
	WHERE user_id = ? AND status = 'active'
	RETURNING allocations
)
UPDATE credit_lots l SET remaining = l.remaining + a.amount
FROM (SELECT (e ->> 0)::bigint AS lot_id, sum((e ->> 1)::bigint) AS amount
      FROM v, jsonb_array_elements(v.allocations) e GROUP BY 1) a
WHERE l.id = a.lot_id`

// scrubUserSQL reduces every stored body of a user to what audit needs
// (creditgate_scrubbed_payload: type, ids, times) and drops the exact bytes.
const scrubUserSQL = `
UPDATE webhook_events
SET payload = creditgate_scrubbed_payload(payload, event_type), raw_body = NULL, scrubbed_at = now()
WHERE clerk_user_id = ? AND scrubbed_at IS NULL`

// scrubUser erases the personal data of a deleted user's stored events.
func scrubUser(ctx context.Context, db bun.IDB, clerkID string) error {
	if _, err := db.ExecContext(ctx, scrubUserSQL, clerkID); err != nil {
		return fmt.Errorf("scrub stored events of %s: %w", clerkID, err)
	}
	return nil
}

// recordOutcomeSQL stores an event that moves no credits; a failed earlier
// attempt of the same svix id is overwritten, anything else is kept.
const recordOutcomeSQL = `
INSERT INTO webhook_events AS w
	(svix_id, event_type, clerk_user_id, payload, raw_body, status, attempts, last_error, received_at, processed_at)
VALUES (?0, ?1, ?2, ?3::jsonb, ?4, ?5, 1, ?6, ?7, now())
ON CONFLICT (svix_id) DO UPDATE
	SET status = EXCLUDED.status, attempts = w.attempts + 1, last_error = EXCLUDED.last_error,
		event_type = EXCLUDED.event_type, clerk_user_id = EXCLUDED.clerk_user_id, processed_at = now()
	WHERE w.status IN ('failed', 'dead')`

// RecordOutcome implements ledger.Store.
func (s *Store) RecordOutcome(ctx context.Context, d ledger.Delivery, c ledger.Change, status ledger.EventStatus, reason string) (ledger.Result, error) {
	// A rejected body is kept byte for byte: it is the evidence.
	payload, raw := payloadArgs(d.Body, status == ledger.StatusRejected)
	var n int64
	err := withPayload(d.Body, payload, raw, func(payload, raw any) error {
		r, err := s.db.ExecContext(ctx, recordOutcomeSQL,
			d.SvixID, c.EventType, nullable(c.ClerkUserID), payload, raw, string(status),
			nullable(truncate(reason)), d.ReceivedAt)
		if err != nil {
			return err
		}
		n, err = r.RowsAffected()
		return err
	})
	if err != nil {
		return ledger.Result{}, fmt.Errorf("record %s event %s: %w", status, d.SvixID, mapError(err))
	}
	if n == 0 {
		return s.storedOutcome(ctx, d.SvixID)
	}
	out := ledger.OutcomeIgnored
	if status == ledger.StatusRejected {
		out = ledger.OutcomeRejected
	}
	return ledger.Result{
		SvixID: d.SvixID, Status: out, EventType: c.EventType, ClerkUserID: c.ClerkUserID, Reason: reason,
	}, nil
}

// recordFailureSQL keeps a delivery whose processing failed; it never
// overwrites an event that reached a final state.
const recordFailureSQL = `
INSERT INTO webhook_events AS w
	(svix_id, event_type, clerk_user_id, payload, raw_body, status, attempts, last_error, received_at)
VALUES (?0, ?1, ?2, ?3::jsonb, ?4, 'failed', 1, ?5, ?6)
ON CONFLICT (svix_id) DO UPDATE
	SET status = 'failed', attempts = w.attempts + 1, last_error = EXCLUDED.last_error,
		raw_body = COALESCE(w.raw_body, EXCLUDED.raw_body)
	WHERE w.status IN ('failed', 'dead')`

// RecordFailure implements ledger.Store.
func (s *Store) RecordFailure(ctx context.Context, d ledger.Delivery, c ledger.Change, cause error) error {
	// The exact bytes too: the reconciler re-runs the event from them.
	payload, raw := payloadArgs(d.Body, true)
	err := withPayload(d.Body, payload, raw, func(payload, raw any) error {
		_, err := s.db.ExecContext(ctx, recordFailureSQL,
			d.SvixID, c.EventType, nullable(c.ClerkUserID), payload, raw, truncate(cause.Error()), d.ReceivedAt)
		return err
	})
	if err != nil {
		return fmt.Errorf("record failed event %s: %w", d.SvixID, mapError(err))
	}
	return nil
}

// storedOutcome answers a redelivery with what the first delivery did.
func (s *Store) storedOutcome(ctx context.Context, svixID string) (ledger.Result, error) {
	var ev EventRow
	err := s.db.NewSelect().Model(&ev).
		Column("svix_id", "event_type", "clerk_user_id", "status", "last_error").
		Where("svix_id = ?", svixID).Scan(ctx)
	if err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return ledger.Result{}, fmt.Errorf("stored outcome of %s: %w", svixID, ledger.ErrNotFound)
		}
		return ledger.Result{}, fmt.Errorf("stored outcome of %s: %w", svixID, mapError(err))
	}
	res := ledger.Result{
		SvixID:      svixID,
		Status:      ledger.OutcomeDuplicate,
		EventType:   ev.EventType,
		ClerkUserID: ev.ClerkUserID.String,
	}
	if ledger.EventStatus(ev.Status) == ledger.StatusRejected {
		res.Status = ledger.OutcomeRejected
		res.Reason = ev.LastError.String
	}
	return res, nil
}
