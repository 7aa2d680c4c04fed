// Package ledger is creditgate's domain: Clerk users, their append-only credit
// ledger, the webhook deliveries that move it, and the policy that decides what
// a delivery does. It imports no adapter; pkg/postgres implements its Store and
// pkg/clerk decodes Clerk's payloads into its Change.
package ledger

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Sentinel errors. Adapters wrap or map their own errors to these, and the HTTP
// layer maps these to statuses in one place.
var (
	// ErrInvalidEvent marks a verified delivery whose content cannot be processed
	// (not JSON, a missing or mistyped field). Retrying it cannot help.
	ErrInvalidEvent = errors.New("invalid event")
	// ErrUnavailable marks a transient failure (database down, timeout,
	// serialization failure) where a later retry can succeed.
	ErrUnavailable = errors.New("temporarily unavailable")
	// ErrInsufficientCredits marks a debit that would take a balance below zero.
	ErrInsufficientCredits = errors.New("insufficient credits")
	// ErrNotFound marks a lookup of something that does not exist.
	ErrNotFound = errors.New("not found")
	// ErrInvalidData marks a value the database refused as a property of the
	// value itself (SQLSTATE classes 22 and 54: out of range, too long for
	// an index, not representable). Retrying the same data cannot help.
	ErrInvalidData = errors.New("invalid data")
)

// EventStatus is the stored state of a webhook_events row.
type EventStatus string

// Stored event states.
const (
	StatusProcessed EventStatus = "processed"
	StatusIgnored   EventStatus = "ignored"
	StatusRejected  EventStatus = "rejected"
	StatusFailed    EventStatus = "failed"
	// StatusStale marks an event that changed nothing because the stored user
	// is newer (an older user.updated) or deleted (a late user.created).
	StatusStale EventStatus = "stale"
)

// Outcome is what one delivery did; it is reported to the sender and counted.
type Outcome string

// Delivery outcomes.
const (
	OutcomeProcessed Outcome = "processed"
	OutcomeDuplicate Outcome = "duplicate"
	OutcomeIgnored   Outcome = "ignored"
	OutcomeRejected  Outcome = "rejected"
	OutcomeStale     Outcome = "stale"
)

// Ledger entry vocabulary.
const (
	TypeCredit = "credit"
	TypeDebit  = "debit"

	ReasonSignupBonus    = "signup_bonus"
	ReasonAccountDeleted = "account_deleted"
)

// Entry kinds: what an entry is, beside its type (credit or debit).
const (
	KindSignup  = "signup"  // credit: the signup grant
	KindGrant   = "grant"   // credit: a top-up, purchase or compensation
	KindRefund  = "refund"  // credit: gives back (part of) a debit or capture
	KindDebit   = "debit"   // debit: credits spent at once
	KindCapture = "capture" // debit: a hold taken
	KindExpiry  = "expiry"  // debit: what was left of an expired grant
	KindForfeit = "forfeit" // debit: what a deleted account held
)

// DefaultSignupCredits is the signup grant when SIGNUP_CREDITS is not set.
const DefaultSignupCredits = 20

// SignupKey is the idempotency key of a Clerk user's signup grant: the one
// cause that makes the grant exist at most once, whichever path creates it.
func SignupKey(clerkUserID string) string { return "signup:" + clerkUserID }

// ForfeitKey is the idempotency key of the debit that forfeits a deleted
// user's remaining credits.
func ForfeitKey(clerkUserID string) string { return "account_deleted:" + clerkUserID }

// Delivery is one verified webhook message: the Svix message id and the exact
// bytes that were signed.
type Delivery struct {
	SvixID     string
	Body       []byte
	ReceivedAt time.Time
}

// ChangeKind says what a Clerk event means to the ledger.
type ChangeKind int

// Change kinds.
const (
	// ChangeOther is an event creditgate stores but does not act on.
	ChangeOther ChangeKind = iota
	// ChangeUserCreated is Clerk's user.created.
	ChangeUserCreated
	// ChangeUserUpdated is Clerk's user.updated.
	ChangeUserUpdated
	// ChangeUserDeleted is Clerk's user.deleted.
	ChangeUserDeleted
)

// Change is the decoded meaning of a Clerk event.
type Change struct {
	Kind        ChangeKind
	EventType   string
	ClerkUserID string
	// Email is the primary email address, or "" when the user has none
	// (phone-only or web3 sign-ups).
	Email string
	// UpdatedAt is Clerk's data.updated_at: the version of the user the event
	// carries. Zero when the event has none (user.deleted).
	UpdatedAt time.Time
	// IgnoredFields are fields the ledger does not need that the decoder
	// left out because they could not be used (an email too long to store,
	// say). They never block a grant; they are reported and counted.
	IgnoredFields []IgnoredField
}

// IgnoredField is one field a delivery carried but creditgate left out.
type IgnoredField struct {
	// Field is a short, fixed name (a metric label): "email".
	Field string `json:"field"`
	// Reason says why, without the value (it may be personal data).
	Reason string `json:"reason"`
}

// Versions a delivery may carry: Clerk's data.updated_at is when Clerk
// changed the user, so it cannot be later than the delivery itself (give or
// take clock skew), and Clerk did not exist before 2000. A version outside
// this window is a field the ledger needs and cannot trust: the event is
// rejected. Without the upper bound one event dated 2200 would make every
// later real update of that user stale.
var (
	MinVersion = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	// MaxVersionSkew is how far after its delivery an event's version may be.
	MaxVersionSkew = time.Hour
)

// CheckVersion rejects a change whose version is outside the window that a
// delivery received at receivedAt can carry. It depends only on the stored
// delivery, so a re-run by the reconciler judges the event exactly as the
// webhook did.
func CheckVersion(c Change, receivedAt time.Time) error {
	if c.UpdatedAt.IsZero() {
		return nil
	}
	if c.UpdatedAt.Before(MinVersion) {
		return fmt.Errorf("%w: field \"data.updated_at\" (%s) is before %s",
			ErrInvalidEvent, c.UpdatedAt.Format(time.RFC3339), MinVersion.Format("2006"))
	}
	if limit := receivedAt.Add(MaxVersionSkew); c.UpdatedAt.After(limit) {
		return fmt.Errorf("%w: field \"data.updated_at\" (%s) is later than the delivery (%s) by more than %s",
			ErrInvalidEvent, c.UpdatedAt.Format(time.RFC3339Nano), receivedAt.UTC().Format(time.RFC3339), MaxVersionSkew)
	}
	return nil
}

// Decoder turns a verified body into a Change. Its errors wrap ErrInvalidEvent;
// a Decoder never sees the network or the database.
type Decoder func(body []byte) (Change, error)

// UserChange is the work of a user.created, user.updated or user.deleted
// delivery, applied atomically with the event's record:
//
//   - created/updated: create the user if unknown (Clerk's order is not
//     guaranteed, the create may be late or lost), take the email only from
//     an event newer than the stored version, and grant the signup credit
//     once. A deleted user is never revived or credited.
//   - deleted: mark the user deleted (creating a tombstone if unknown, so a
//     late create cannot revive it) and, if Forfeit, debit what is left.
type UserChange struct {
	Delivery Delivery
	Change   Change
	// SignupCredits is the grant for a new user.
	SignupCredits int64
	// Forfeit debits a deleted user's remaining credits.
	Forfeit bool
	// Outbox writes, with a new signup grant, the Clerk metadata message
	// that reports it.
	Outbox bool
}

// Result is the outcome of one delivery.
type Result struct {
	SvixID         string  `json:"svix_id"`
	Status         Outcome `json:"status"`
	EventType      string  `json:"event_type,omitempty"`
	ClerkUserID    string  `json:"clerk_user_id,omitempty"`
	CreditsGranted int64   `json:"credits_granted"`
	// CreditsForfeited is what a user.deleted debited.
	CreditsForfeited int64 `json:"credits_forfeited,omitempty"`
	// Reason explains a rejection; empty otherwise.
	Reason string `json:"reason,omitempty"`
	// IgnoredFields lists fields left out of an applied event.
	IgnoredFields []IgnoredField `json:"ignored_fields,omitempty"`
}

// Store is what the ledger needs from persistence. Every method is one
// business operation in one transaction.
type Store interface {
	// ApplyUserChange records the delivery and applies its change to the user
	// and the ledger, unless the delivery's svix id was already handled, in
	// which case it returns the stored outcome as a duplicate and changes
	// nothing. Events of one user serialize.
	ApplyUserChange(ctx context.Context, c UserChange) (Result, error)
	// RecordOutcome stores a delivery that moves no credits (ignored or
	// rejected), or returns the earlier outcome of the same svix id.
	RecordOutcome(ctx context.Context, d Delivery, c Change, status EventStatus, reason string) (Result, error)
	// RecordFailure keeps a delivery whose processing failed transiently as
	// failed, with its error, so that a redelivery or the reconciler re-runs it.
	RecordFailure(ctx context.Context, d Delivery, c Change, cause error) error
}

// Service applies verified deliveries to the ledger. Both the webhook and the
// reconciler go through Process, so a re-run is exactly a redelivery.
type Service struct {
	Store         Store
	Decode        Decoder
	SignupCredits int64
	// ForfeitOnDelete debits a deleted user's remaining credits
	// (reason account_deleted).
	ForfeitOnDelete bool
	// MetadataOutbox queues a Clerk metadata write with every signup grant.
	MetadataOutbox bool

	// users lets one delivery per user at a time reach the store.
	users keyedMutex
}

// recordTimeout bounds storing the outcome of a delivery whose own deadline
// has passed: the trace must be kept even when the delivery timed out.
const recordTimeout = 3 * time.Second

// Process decodes and applies one verified delivery. An invalid event is
// stored as rejected and returned with ErrInvalidEvent; a transient failure is
// stored as failed where possible and returned wrapping ErrUnavailable.
//
// Deliveries of one user take turns here, before they reach the store: the
// store serializes them on the user's row lock anyway, and a dozen of them
// waiting on that lock would each hold a database connection that every
// other user needs (a user whose row is locked for a minute took the whole
// pool). Waiting here costs a goroutine, not a connection.
func (s *Service) Process(ctx context.Context, d Delivery) (Result, error) {
	change, err := s.Decode(d.Body)
	if err == nil {
		err = CheckVersion(change, d.ReceivedAt)
	}
	if err != nil {
		return s.reject(ctx, d, change, err)
	}

	var res Result
	switch change.Kind {
	case ChangeUserCreated, ChangeUserUpdated, ChangeUserDeleted:
		var release func()
		if release, err = s.users.lock(ctx, change.ClerkUserID); err != nil {
			err = fmt.Errorf("%w: wait for the user's other deliveries: %w", ErrUnavailable, err)
			break
		}
		res, err = s.Store.ApplyUserChange(ctx, UserChange{
			Delivery:      d,
			Change:        change,
			SignupCredits: s.SignupCredits,
			Forfeit:       s.ForfeitOnDelete,
			Outbox:        s.MetadataOutbox,
		})
		release()
	default:
		res, err = s.Store.RecordOutcome(ctx, d, change, StatusIgnored, "")
	}
	if errors.Is(err, ErrInvalidData) {
		// A property of the body (a value PostgreSQL cannot hold): final.
		return s.reject(ctx, d, change, fmt.Errorf("%w: %w", ErrInvalidEvent, err))
	}
	if err != nil {
		// Keep the event for the reconciler, with a deadline of its own: the
		// delivery's may be what just expired. Best effort: when the
		// database is down this fails too, and the sender's retry keeps the
		// event.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
		_ = s.Store.RecordFailure(rctx, d, change, err)
		cancel()
		return Result{SvixID: d.SvixID, EventType: change.EventType, ClerkUserID: change.ClerkUserID},
			fmt.Errorf("apply %s %s: %w", change.EventType, d.SvixID, err)
	}
	if res.Status == OutcomeRejected {
		// A redelivery of an event rejected before: same answer as the first time.
		return res, fmt.Errorf("event %s: %w: %s", d.SvixID, ErrInvalidEvent, res.Reason)
	}
	if res.Status != OutcomeDuplicate {
		res.IgnoredFields = change.IgnoredFields
	}
	return res, nil
}

// reject stores a delivery as rejected for cause (which wraps
// ErrInvalidEvent) and returns cause, or the earlier outcome of the same svix
// id.
func (s *Service) reject(ctx context.Context, d Delivery, change Change, cause error) (Result, error) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	res, err := s.Store.RecordOutcome(rctx, d, change, StatusRejected, cause.Error())
	if err != nil {
		return Result{SvixID: d.SvixID}, fmt.Errorf("record rejected event %s: %w", d.SvixID, err)
	}
	if res.Status != OutcomeRejected {
		// The svix id was handled before, by an earlier delivery of other
		// bytes (a sender reusing ids): that outcome stands.
		return res, nil
	}
	return res, fmt.Errorf("event %s: %w", d.SvixID, cause)
}
