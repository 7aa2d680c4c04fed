package ledger

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// OutboxMessage is one Clerk public-metadata write owed to Clerk. It is
// written in the transaction that grants the credit it reports, so it exists
// exactly when the grant does.
type OutboxMessage struct {
	ID          int64
	ClerkUserID string
	// PublicMetadata is merged into the user's public metadata (Clerk deep-
	// merges objects): {"creditgate":{"user_id":…,"signup_credits":…}}.
	PublicMetadata []byte
	Attempts       int
	// Claim numbers the claim that handed the message out; only that
	// claim may record its result.
	Claim int64
}

// OutboxStatus is the state of an outbox message.
type OutboxStatus string

// Outbox message states.
const (
	OutboxPending   OutboxStatus = "pending"
	OutboxDelivered OutboxStatus = "delivered"
	// OutboxDead: the write failed OUTBOX_MAX_ATTEMPTS times; an operator
	// looks at it (it pages).
	OutboxDead OutboxStatus = "dead"
	// OutboxSkipped: Clerk refused the write for good (the user is gone,
	// or the request itself is refused); nothing to page about.
	OutboxSkipped OutboxStatus = "skipped"
)

// OutboxRecord is the result of one claimed attempt, to be recorded.
type OutboxRecord struct {
	Status OutboxStatus
	// Err is the attempt's error, if any.
	Err error
	// After is when a pending message is due again.
	After time.Duration
	// CountAttempt uses up one of the message's attempts (a rate limit or
	// an interrupted call does not).
	CountAttempt bool
}

// ErrPermanent marks an answer from Clerk that no retry can change: 404 or
// 410 (the user is gone), 400 or 422 (the request itself is refused).
var ErrPermanent = errors.New("refused for good")

// OutboxResult is what became of one attempt to deliver an outbox message.
type OutboxResult struct {
	// Found is false when no message was due.
	Found     bool
	Delivered bool
	// Dead means the message used its attempts and was parked.
	Dead bool
	// Skipped means Clerk refused the write for good (ErrPermanent).
	Skipped bool
	// Err is the delivery's error, if any.
	Err error
}

// MetadataWriter delivers public metadata to Clerk (a merge-PATCH).
type MetadataWriter interface {
	WriteMetadata(ctx context.Context, clerkUserID string, publicMetadata []byte) error
}

// ClerkUser is a user as Clerk's Backend API lists it.
type ClerkUser struct {
	ID        string
	Email     string
	CreatedAt time.Time
	UpdatedAt time.Time
}

// Directory is Clerk's list of users.
type Directory interface {
	// ListUsers lists users created strictly after a time, oldest first.
	ListUsers(ctx context.Context, createdAfter time.Time, limit, offset int) ([]ClerkUser, error)
	// ExistingUsers reports which of ids (at most SweepPage) Clerk still has.
	ExistingUsers(ctx context.Context, ids []string) (map[string]bool, error)
}

// SweepPage is how many users the deletion sweep asks Clerk about at once.
const SweepPage = 100

// LiveUser is a user creditgate holds as live, for the deletion sweep.
type LiveUser struct {
	UserRef
	CreatedAt time.Time
}

// RateLimitedError is Clerk answering 429; RetryAfter is its Retry-After.
type RateLimitedError struct {
	RetryAfter time.Duration
	Err        error
}

func (e *RateLimitedError) Error() string {
	return fmt.Sprintf("rate limited by Clerk (retry after %s): %v", e.RetryAfter, e.Err)
}

func (e *RateLimitedError) Unwrap() error { return e.Err }

// RetryAfter returns how long err asks the caller to wait, if it is a rate limit.
func RetryAfter(err error) (time.Duration, bool) {
	if rl, ok := errors.AsType[*RateLimitedError](err); ok {
		return rl.RetryAfter, true
	}
	return 0, false
}

// FailedEvent is a stored delivery whose processing failed, to be re-run.
type FailedEvent struct {
	Delivery Delivery
	Attempts int
}

// UserRef names a user by both ids.
type UserRef struct {
	ID      int64
	ClerkID string
}

// Drift is a user whose balances differ from the sums of their ledger rows.
type Drift struct {
	ClerkID          string
	AvailableCredits int64
	UsedCredits      int64
	Credits          int64
	Debits           int64
}

// Backlog is the state the alerts watch, read from the database.
type Backlog struct {
	EventsFailed             int64
	EventsDead               int64
	OldestUnfinishedEventAge time.Duration
	UsersWithoutSignupCredit int64
	OutboxPending            int64
	OutboxDead               int64
	OldestOutboxAge          time.Duration
	LedgerDriftUsers         int64
	LastSuccessfulReconcile  time.Time
	// ActiveHolds and HeldCredits count the credits API's unexpired holds.
	ActiveHolds int64
	HeldCredits int64
	// ExpiryBacklog counts holds and grants past their expiry, not booked.
	ExpiryBacklog int64
}

// UserStory is everything creditgate holds about one Clerk user, for support
// questions ("why does this user have 0 credits?").
type UserStory struct {
	ClerkID string
	// User is nil when creditgate holds no row for the user.
	User    *StoryUser
	Entries []StoryEntry
	Events  []StoryEvent
	Outbox  []StoryOutbox
}

// StoryUser is the users row.
type StoryUser struct {
	ID               int64
	Email            string
	AvailableCredits int64
	UsedCredits      int64
	CreatedAt        time.Time
	ClerkUpdatedAt   time.Time
	DeletedAt        time.Time
}

// StoryEntry is one ledger entry.
type StoryEntry struct {
	CreatedAt      time.Time
	Type           string
	Amount         int64
	Reason         string
	IdempotencyKey string
	SvixID         string
}

// StoryEvent is one stored webhook event naming the user.
type StoryEvent struct {
	SvixID      string
	EventType   string
	Status      EventStatus
	Attempts    int
	LastError   string
	ReceivedAt  time.Time
	ProcessedAt time.Time
	Scrubbed    bool
}

// StoryOutbox is one Clerk metadata write owed for the user.
type StoryOutbox struct {
	IdempotencyKey string
	Status         OutboxStatus
	Attempts       int
	LastError      string
	NextAttemptAt  time.Time
	DeliveredAt    time.Time
}

// Credits and Debits sum the user's ledger entries.
func (s UserStory) Credits() (credits, debits int64) {
	for _, e := range s.Entries {
		if e.Type == TypeCredit {
			credits += e.Amount
		} else {
			debits += e.Amount
		}
	}
	return credits, debits
}
