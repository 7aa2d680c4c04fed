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
)

// EventStatus is the stored state of a webhook_events row.
type EventStatus string

// Stored event states.
const (
	StatusProcessed EventStatus = "processed"
	StatusIgnored   EventStatus = "ignored"
	StatusRejected  EventStatus = "rejected"
	StatusFailed    EventStatus = "failed"
)

// Outcome is what one delivery did; it is reported to the sender and counted.
type Outcome string

// Delivery outcomes.
const (
	OutcomeProcessed Outcome = "processed"
	OutcomeDuplicate Outcome = "duplicate"
	OutcomeIgnored   Outcome = "ignored"
	OutcomeRejected  Outcome = "rejected"
)

// Ledger entry vocabulary.
const (
	TypeCredit = "credit"
	TypeDebit  = "debit"

	ReasonSignupBonus = "signup_bonus"
)

// DefaultSignupCredits is the signup grant when SIGNUP_CREDITS is not set.
const DefaultSignupCredits = 20

// SignupKey is the idempotency key of a Clerk user's signup grant: the one
// cause that makes the grant exist at most once, whichever path creates it.
func SignupKey(clerkUserID string) string { return "signup:" + clerkUserID }

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
)

// Change is the decoded meaning of a Clerk event.
type Change struct {
	Kind        ChangeKind
	EventType   string
	ClerkUserID string
	// Email is the primary email address, or "" when the user has none
	// (phone-only or web3 sign-ups).
	Email string
}

// Decoder turns a verified body into a Change. Its errors wrap ErrInvalidEvent;
// a Decoder never sees the network or the database.
type Decoder func(body []byte) (Change, error)

// Signup is the work of a user.created delivery: upsert the user, grant the
// signup credit once, and record the event as processed, atomically.
type Signup struct {
	Delivery    Delivery
	EventType   string
	ClerkUserID string
	Email       string
	Credits     int64
}

// Result is the outcome of one delivery.
type Result struct {
	SvixID         string  `json:"svix_id"`
	Status         Outcome `json:"status"`
	EventType      string  `json:"event_type,omitempty"`
	ClerkUserID    string  `json:"clerk_user_id,omitempty"`
	CreditsGranted int64   `json:"credits_granted"`
	// Reason explains a rejection; empty otherwise.
	Reason string `json:"reason,omitempty"`
}

// Store is what the ledger needs from persistence. Every method is one
// business operation in one transaction.
type Store interface {
	// ApplySignup records the delivery and grants the signup credit unless the
	// delivery's svix id was already handled, in which case it returns the
	// stored outcome as a duplicate and changes nothing.
	ApplySignup(ctx context.Context, s Signup) (Result, error)
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
}

// Process decodes and applies one verified delivery. An invalid event is
// stored as rejected and returned with ErrInvalidEvent; a transient failure is
// stored as failed where possible and returned wrapping ErrUnavailable.
func (s *Service) Process(ctx context.Context, d Delivery) (Result, error) {
	change, err := s.Decode(d.Body)
	if err != nil {
		res, serr := s.Store.RecordOutcome(ctx, d, change, StatusRejected, err.Error())
		if serr != nil {
			return Result{}, fmt.Errorf("record rejected event %s: %w", d.SvixID, serr)
		}
		return res, fmt.Errorf("event %s: %w", d.SvixID, err)
	}

	var res Result
	switch change.Kind {
	case ChangeUserCreated:
		res, err = s.Store.ApplySignup(ctx, Signup{
			Delivery:    d,
			EventType:   change.EventType,
			ClerkUserID: change.ClerkUserID,
			Email:       change.Email,
			Credits:     s.SignupCredits,
		})
	default:
		res, err = s.Store.RecordOutcome(ctx, d, change, StatusIgnored, "")
	}
	if err != nil {
		// Keep the event for the reconciler. Best effort: when the database
		// is down this fails too, and the sender's retry keeps the event.
		_ = s.Store.RecordFailure(ctx, d, change, err)
		return Result{}, fmt.Errorf("apply %s %s: %w", change.EventType, d.SvixID, err)
	}
	if res.Status == OutcomeRejected {
		// A redelivery of an event rejected before: same answer as the first time.
		return res, fmt.Errorf("event %s: %w: %s", d.SvixID, ErrInvalidEvent, res.Reason)
	}
	return res, nil
}
