package postgres

import (
	"database/sql"
	"time"

	"github.com/uptrace/bun"
)

// UserRow is a row of users.
type UserRow struct {
	bun.BaseModel `bun:"table:users"`

	ID               int64          `bun:"id,pk,autoincrement"`
	ClerkID          string         `bun:"clerk_id"`
	Email            sql.NullString `bun:"email"`
	AvailableCredits int64          `bun:"available_credits"`
	UsedCredits      int64          `bun:"used_credits"`
	CreatedAt        time.Time      `bun:"created_at"`
	UpdatedAt        time.Time      `bun:"updated_at"`
}

// TransactionRow is a row of credit_transactions.
type TransactionRow struct {
	bun.BaseModel `bun:"table:credit_transactions"`

	ID             int64          `bun:"id,pk,autoincrement"`
	UserID         int64          `bun:"user_id"`
	ClerkID        string         `bun:"clerk_id"`
	Amount         int64          `bun:"amount"`
	Type           string         `bun:"type"`
	Reason         string         `bun:"reason"`
	Status         string         `bun:"status"`
	IdempotencyKey string         `bun:"idempotency_key"`
	WebhookEventID sql.NullString `bun:"webhook_event_id"`
	CreatedAt      time.Time      `bun:"created_at"`
}

// EventRow is a row of webhook_events.
type EventRow struct {
	bun.BaseModel `bun:"table:webhook_events"`

	SvixID      string         `bun:"svix_id,pk"`
	EventType   string         `bun:"event_type"`
	ClerkUserID sql.NullString `bun:"clerk_user_id"`
	Payload     []byte         `bun:"payload,type:jsonb"`
	RawBody     []byte         `bun:"raw_body"`
	Status      string         `bun:"status"`
	Attempts    int            `bun:"attempts"`
	LastError   sql.NullString `bun:"last_error"`
	ReceivedAt  time.Time      `bun:"received_at"`
	ProcessedAt sql.NullTime   `bun:"processed_at"`
}
