package pgtest

import (
	"context"
	"testing"

	"github.com/uptrace/bun"
)

// Violation is one broken ledger invariant, for a readable failure message.
type Violation struct {
	Check   string `bun:"check"`
	ClerkID string `bun:"clerk_id"`
	Detail  string `bun:"detail"`
}

// invariantsSQL lists every violation of the money rules: balances equal the
// sums of their entries, nothing negative, at most one signup grant per user,
// and every entry's clerk_id is its user's.
const invariantsSQL = `
WITH sums AS (
	SELECT u.id, u.clerk_id, u.available_credits, u.used_credits,
		COALESCE(SUM(t.amount) FILTER (WHERE t.type = 'credit'), 0) AS credits,
		COALESCE(SUM(t.amount) FILTER (WHERE t.type = 'debit'), 0) AS debits
	FROM users u LEFT JOIN credit_transactions t ON t.user_id = u.id
	GROUP BY u.id
)
SELECT 'available = credits - debits' AS check, clerk_id,
	format('available=%s credits=%s debits=%s', available_credits, credits, debits) AS detail
FROM sums WHERE available_credits <> credits - debits
UNION ALL
SELECT 'used = debits', clerk_id, format('used=%s debits=%s', used_credits, debits)
FROM sums WHERE used_credits <> debits
UNION ALL
SELECT 'non-negative balance', clerk_id, format('available=%s used=%s', available_credits, used_credits)
FROM sums WHERE available_credits < 0 OR used_credits < 0
UNION ALL
SELECT 'one signup_bonus per user', clerk_id, format('%s signup_bonus entries', count(*))
FROM credit_transactions WHERE reason = 'signup_bonus' GROUP BY clerk_id HAVING count(*) > 1
UNION ALL
SELECT 'entry clerk_id matches user', t.clerk_id, format('entry %s on user %s', t.id, u.clerk_id)
FROM credit_transactions t JOIN users u ON u.id = t.user_id WHERE u.clerk_id <> t.clerk_id`

// Invariants returns every violation of the ledger invariants in db.
func Invariants(ctx context.Context, db bun.IDB) ([]Violation, error) {
	var vs []Violation
	err := db.NewRaw(invariantsSQL).Scan(ctx, &vs)
	return vs, err
}

// CheckInvariants fails t when any ledger invariant is broken.
func CheckInvariants(t testing.TB, db bun.IDB) {
	t.Helper()
	vs, err := Invariants(context.Background(), db)
	if err != nil {
		t.Fatalf("check ledger invariants: %v", err)
	}
	for _, v := range vs {
		t.Errorf("ledger invariant %q broken for %s: %s", v.Check, v.ClerkID, v.Detail)
	}
}
