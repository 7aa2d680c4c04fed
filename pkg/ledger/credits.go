package ledger

import (
	"errors"
	"fmt"
	"time"
)

// The credits API's refusals. Each is a business answer: stored under the
// request's idempotency key, so that a retry with the same key gets it again.
var (
	// ErrAccountClosed: the user was deleted (user.deleted); nothing moves.
	ErrAccountClosed = errors.New("account closed")
	// ErrHoldExpired: the hold ran out before it was captured or voided.
	ErrHoldExpired = errors.New("hold expired")
	// ErrHoldNotActive: the hold was captured or voided already.
	ErrHoldNotActive = errors.New("hold not active")
	// ErrExceedsRefundable: more than what is left of the debit to refund.
	ErrExceedsRefundable = errors.New("exceeds what is refundable")
	// ErrNotADebit: a refund of an entry that is not a debit or a capture.
	ErrNotADebit = errors.New("not a debit")
	// ErrIdempotencyKeyReused: the key was used before for another request.
	// Not stored: the first request's answer stands.
	ErrIdempotencyKeyReused = errors.New("idempotency key reused")
	// ErrInvalidRequest: a request the ledger cannot carry out as asked
	// (a capture above its hold, an expiry in the past). Not stored.
	ErrInvalidRequest = errors.New("invalid request")
)

// InsufficientError is ErrInsufficientCredits with what was available.
type InsufficientError struct {
	Available int64
}

func (e *InsufficientError) Error() string {
	return fmt.Sprintf("%v: %d available", ErrInsufficientCredits, e.Available)
}

// Is makes errors.Is(err, ErrInsufficientCredits) hold.
func (e *InsufficientError) Is(target error) bool { return target == ErrInsufficientCredits }

// RefundableError is ErrExceedsRefundable with what is left to refund.
type RefundableError struct {
	Refundable int64
}

func (e *RefundableError) Error() string {
	return fmt.Sprintf("%v: %d refundable", ErrExceedsRefundable, e.Refundable)
}

// Is makes errors.Is(err, ErrExceedsRefundable) hold.
func (e *RefundableError) Is(target error) bool { return target == ErrExceedsRefundable }

// Balance is an account at the instant of a read.
type Balance struct {
	ClerkID string
	// Available is what a debit or hold can take right now.
	Available int64
	// Held is the credits in active, unexpired holds.
	Held int64
	// Used is the credits spent (debits and captures) less refunds.
	Used int64
	// NextExpiry is the available credits that expire first; nil if none do.
	NextExpiry *Expiry
	// Version grows with every change to the account.
	Version int64
}

// Expiry is an amount of credits and when it expires.
type Expiry struct {
	Amount int64
	At     time.Time
}

// EntryView is one ledger entry as the API shows it.
type EntryView struct {
	ID        int64
	ClerkID   string
	Type      string // credit or debit
	Kind      string
	Reason    string
	Amount    int64
	Reference string
	Metadata  []byte // JSON, or nil
	Actor     string
	// BalanceAfter is the account's available_credits (spendable and held)
	// right after the entry.
	BalanceAfter int64
	RefundOf     int64 // for a refund, its debit
	HoldID       int64 // for a capture, its hold
	ExpiresAt    time.Time
	CreatedAt    time.Time
}

// Hold states.
const (
	HoldActive   = "active"
	HoldCaptured = "captured"
	HoldVoided   = "voided"
	HoldExpired  = "expired"
)

// Hold is a reservation of credits, as it is at the instant of a read: an
// active hold past its expiry reads expired, booked or not.
type Hold struct {
	ID             int64
	ClerkID        string
	Amount         int64
	Captured       int64
	Status         string
	Reason         string
	Reference      string
	Actor          string
	ExpiresAt      time.Time
	CreatedAt      time.Time
	FinishedAt     time.Time
	CaptureEntryID int64
}

// Request is what every write of the API carries besides its operation: who
// asks, and the client's idempotency key with a fingerprint of the request.
type Request struct {
	ClerkID string
	Actor   string
	Key     string
	// Fingerprint identifies the request (method, path, body) under its key.
	Fingerprint []byte
}

// Answer is an API answer as stored under an idempotency key, and replayed
// byte for byte for the same key and request.
type Answer struct {
	Status int
	Body   []byte
	// Replayed is set on an answer read back from an earlier request.
	Replayed bool
}

// Render turns an operation's result or business refusal into the answer
// stored with it. It must not do I/O: it runs inside the transaction.
type Render func(result any, err error) Answer

// Spend is a debit or a hold to make.
type Spend struct {
	Amount    int64
	Reason    string
	Reference string
	Metadata  []byte
	// TTL is a hold's lifetime; zero for a debit.
	TTL time.Duration
}

// Grant is credits to add.
type Grant struct {
	Amount    int64
	Reason    string
	Reference string
	// ExpiresAt, if set, is when the credits stop being spendable.
	ExpiresAt time.Time
}
