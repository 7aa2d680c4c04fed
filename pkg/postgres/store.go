package postgres

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/uptrace/bun"

	"github.com/creditgate/creditgate/pkg/ledger"
)

// maxErrorLen bounds what is kept of an error in webhook_events.last_error.
const maxErrorLen = 2000

// payloadArgs returns the verified body as the jsonb payload, or, when
// PostgreSQL's jsonb cannot hold it byte-for-byte meaningfully (not JSON,
// invalid UTF-8, a \u0000 escape), as raw bytes, so that no body is lost.
func payloadArgs(body []byte) (payload, raw any) {
	if utf8.Valid(body) && json.Valid(body) && !bytes.Contains(body, []byte(`\u0000`)) {
		return string(body), nil
	}
	return nil, body
}

// nullable returns nil for "" so that it is stored as NULL.
func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
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
// seen before and did not fail, and then upserts the user, taking the user's
// row lock: every event of one user serializes on it, always after the event
// row, so concurrent deliveries cannot deadlock.
const claimEventAndUserSQL = `
WITH ev AS (
	INSERT INTO webhook_events AS w
		(svix_id, event_type, clerk_user_id, payload, raw_body, status, attempts, received_at, processed_at)
	VALUES (?0, ?1, ?2, ?3::jsonb, ?4, 'processed', 1, ?5, now())
	ON CONFLICT (svix_id) DO UPDATE
		SET status = 'processed', attempts = w.attempts + 1, last_error = NULL, processed_at = now()
		WHERE w.status = 'failed'
	RETURNING 1
), u AS (
	INSERT INTO users AS u (clerk_id, email)
	SELECT ?2, ?6 WHERE EXISTS (SELECT 1 FROM ev)
	ON CONFLICT (clerk_id) DO UPDATE SET clerk_id = EXCLUDED.clerk_id
	RETURNING u.id
)
SELECT EXISTS (SELECT 1 FROM ev), (SELECT id FROM u)`

// postEntrySQL appends one ledger entry unless its idempotency key exists, and
// moves the user's balances by it in the same statement. A debit that would
// take available_credits below zero fails the CHECK constraint.
const postEntrySQL = `
WITH e AS (
	INSERT INTO credit_transactions
		(user_id, clerk_id, amount, type, reason, status, idempotency_key, webhook_event_id)
	VALUES (?0, ?1, ?2, ?3, ?4, 'completed', ?5, ?6)
	ON CONFLICT (idempotency_key) DO NOTHING
	RETURNING user_id, amount, type
)
UPDATE users SET
	available_credits = available_credits + CASE WHEN e.type = 'credit' THEN e.amount ELSE -e.amount END,
	used_credits = used_credits + CASE WHEN e.type = 'debit' THEN e.amount ELSE 0 END,
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
}

// postEntry appends e and moves the balances; it reports false when an entry
// with the same idempotency key already exists (and then changes nothing).
func postEntry(ctx context.Context, db bun.IDB, e Entry) (bool, error) {
	res, err := db.ExecContext(ctx, postEntrySQL,
		e.UserID, e.ClerkID, e.Amount, e.Type, e.Reason, e.IdempotencyKey, nullable(e.WebhookEventID))
	if err != nil {
		return false, fmt.Errorf("post %s: %w", e.IdempotencyKey, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("post %s: rows affected: %w", e.IdempotencyKey, err)
	}
	return n == 1, nil
}

// ApplySignup implements ledger.Store. A new event costs one transaction of
// two statements and one commit.
func (s *Store) ApplySignup(ctx context.Context, su ledger.Signup) (ledger.Result, error) {
	d := su.Delivery
	res := ledger.Result{
		SvixID:      d.SvixID,
		Status:      ledger.OutcomeProcessed,
		EventType:   su.EventType,
		ClerkUserID: su.ClerkUserID,
	}
	payload, raw := payloadArgs(d.Body)
	var duplicate bool
	err := s.inTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		var isNew bool
		var userID sql.NullInt64
		if err := tx.QueryRowContext(ctx, claimEventAndUserSQL,
			d.SvixID, su.EventType, su.ClerkUserID, payload, raw, d.ReceivedAt, nullable(su.Email),
		).Scan(&isNew, &userID); err != nil {
			return fmt.Errorf("claim event: %w", err)
		}
		if !isNew {
			duplicate = true
			return nil
		}
		if !userID.Valid {
			return errors.New("claim event: user upsert returned no id")
		}
		granted, err := postEntry(ctx, tx, Entry{
			UserID:         userID.Int64,
			ClerkID:        su.ClerkUserID,
			Amount:         su.Credits,
			Type:           ledger.TypeCredit,
			Reason:         ledger.ReasonSignupBonus,
			IdempotencyKey: ledger.SignupKey(su.ClerkUserID),
			WebhookEventID: d.SvixID,
		})
		if err != nil {
			return err
		}
		if granted {
			res.CreditsGranted = su.Credits
		} else {
			res.CreditsGranted = 0
		}
		return nil
	})
	if err != nil {
		return ledger.Result{}, fmt.Errorf("apply signup %s: %w", su.ClerkUserID, err)
	}
	if duplicate {
		return s.storedOutcome(ctx, d.SvixID)
	}
	return res, nil
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
	WHERE w.status = 'failed'`

// RecordOutcome implements ledger.Store.
func (s *Store) RecordOutcome(ctx context.Context, d ledger.Delivery, c ledger.Change, status ledger.EventStatus, reason string) (ledger.Result, error) {
	payload, raw := payloadArgs(d.Body)
	var n int64
	err := s.inTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		r, err := tx.ExecContext(ctx, recordOutcomeSQL,
			d.SvixID, c.EventType, nullable(c.ClerkUserID), payload, raw, string(status),
			nullable(truncate(reason)), d.ReceivedAt)
		if err != nil {
			return err
		}
		n, err = r.RowsAffected()
		return err
	})
	if err != nil {
		return ledger.Result{}, fmt.Errorf("record %s event %s: %w", status, d.SvixID, err)
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
	SET attempts = w.attempts + 1, last_error = EXCLUDED.last_error
	WHERE w.status = 'failed'`

// RecordFailure implements ledger.Store.
func (s *Store) RecordFailure(ctx context.Context, d ledger.Delivery, c ledger.Change, cause error) error {
	payload, raw := payloadArgs(d.Body)
	_, err := s.db.ExecContext(ctx, recordFailureSQL,
		d.SvixID, c.EventType, nullable(c.ClerkUserID), payload, raw, truncate(cause.Error()), d.ReceivedAt)
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
