package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/uptrace/bun"

	"github.com/creditgate/creditgate/pkg/ledger"
)

// UserStory reads everything held about one Clerk user: the users row, the
// ledger entries, the stored events that name the user and the Clerk
// metadata writes owed, each oldest first. It only reads.
func (s *Store) UserStory(ctx context.Context, clerkID string) (ledger.UserStory, error) {
	st := ledger.UserStory{ClerkID: clerkID}
	var u ledger.StoryUser
	var email sql.NullString
	var updated, deleted sql.NullTime
	err := s.db.QueryRowContext(ctx, `SELECT id, email, available_credits, used_credits, created_at, clerk_updated_at, deleted_at
		FROM users WHERE clerk_id = ?`, clerkID).Scan(&u.ID, &email, &u.AvailableCredits, &u.UsedCredits, &u.CreatedAt, &updated, &deleted)
	switch {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return st, fmt.Errorf("read user %s: %w", clerkID, mapError(err))
	default:
		u.Email, u.ClerkUpdatedAt, u.DeletedAt = email.String, updated.Time, deleted.Time
		st.User = &u
	}

	var entries []struct {
		CreatedAt time.Time      `bun:"created_at"`
		Type      string         `bun:"type"`
		Amount    int64          `bun:"amount"`
		Reason    string         `bun:"reason"`
		Key       string         `bun:"idempotency_key"`
		SvixID    sql.NullString `bun:"webhook_event_id"`
	}
	if st.User == nil {
		return st, s.storyEvents(ctx, &st)
	}
	if err := s.db.NewRaw(`SELECT created_at, type, amount, reason, idempotency_key, webhook_event_id
		FROM credit_transactions WHERE user_id = ? ORDER BY id`, u.ID).Scan(ctx, &entries); err != nil {
		return st, fmt.Errorf("read entries of %s: %w", clerkID, mapError(err))
	}
	// Outbox rows are keyed metadata:<the entry's key> (unique index).
	var outboxKeys []string
	for _, e := range entries {
		st.Entries = append(st.Entries, ledger.StoryEntry{CreatedAt: e.CreatedAt, Type: e.Type, Amount: e.Amount,
			Reason: e.Reason, IdempotencyKey: e.Key, SvixID: e.SvixID.String})
		outboxKeys = append(outboxKeys, "metadata:"+e.Key)
	}
	if err := s.storyEvents(ctx, &st); err != nil {
		return st, err
	}
	if len(outboxKeys) == 0 {
		return st, nil
	}
	var outbox []struct {
		Key         string         `bun:"idempotency_key"`
		Status      string         `bun:"status"`
		Attempts    int            `bun:"attempts"`
		LastError   sql.NullString `bun:"last_error"`
		Next        time.Time      `bun:"next_attempt_at"`
		DeliveredAt sql.NullTime   `bun:"delivered_at"`
	}
	if err := s.db.NewRaw(`SELECT idempotency_key, status, attempts, last_error, next_attempt_at, delivered_at
		FROM clerk_metadata_outbox WHERE idempotency_key IN (?) ORDER BY id`, bun.List(outboxKeys)).Scan(ctx, &outbox); err != nil {
		return st, fmt.Errorf("read outbox of %s: %w", clerkID, mapError(err))
	}
	for _, o := range outbox {
		st.Outbox = append(st.Outbox, ledger.StoryOutbox{IdempotencyKey: o.Key, Status: ledger.OutboxStatus(o.Status), Attempts: o.Attempts,
			LastError: o.LastError.String, NextAttemptAt: o.Next, DeliveredAt: o.DeliveredAt.Time})
	}
	return st, nil
}

// storyEvents reads the stored events that name the user (indexed by
// clerk_user_id).
func (s *Store) storyEvents(ctx context.Context, st *ledger.UserStory) error {
	clerkID := st.ClerkID
	var events []struct {
		SvixID      string         `bun:"svix_id"`
		EventType   string         `bun:"event_type"`
		Status      string         `bun:"status"`
		Attempts    int            `bun:"attempts"`
		LastError   sql.NullString `bun:"last_error"`
		ReceivedAt  time.Time      `bun:"received_at"`
		ProcessedAt sql.NullTime   `bun:"processed_at"`
		Scrubbed    bool           `bun:"scrubbed"`
	}
	if err := s.db.NewRaw(`SELECT svix_id, event_type, status, attempts, last_error, received_at, processed_at,
		scrubbed_at IS NOT NULL AS scrubbed FROM webhook_events WHERE clerk_user_id = ? ORDER BY received_at, svix_id`, clerkID).Scan(ctx, &events); err != nil {
		return fmt.Errorf("read events of %s: %w", clerkID, mapError(err))
	}
	for _, e := range events {
		st.Events = append(st.Events, ledger.StoryEvent{SvixID: e.SvixID, EventType: e.EventType, Status: ledger.EventStatus(e.Status),
			Attempts: e.Attempts, LastError: e.LastError.String, ReceivedAt: e.ReceivedAt, ProcessedAt: e.ProcessedAt.Time, Scrubbed: e.Scrubbed})
	}

	return nil
}
