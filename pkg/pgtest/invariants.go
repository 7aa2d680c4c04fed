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
// sums of their entries and of what the lots and active holds hold, nothing
// negative, at most one signup grant per user, every entry's clerk_id is its
// user's, spent credits are the spends and captures less the refunds, the
// refunds of a debit never exceed it, and an active hold's allocations add up
// to its amount.
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
FROM credit_transactions t JOIN users u ON u.id = t.user_id WHERE u.clerk_id <> t.clerk_id
UNION ALL
SELECT 'available = lots + active holds', u.clerk_id,
	format('available=%s lots=%s holds=%s', u.available_credits, l.remaining, h.held)
FROM users u
CROSS JOIN LATERAL (SELECT COALESCE(sum(remaining), 0) AS remaining FROM credit_lots WHERE user_id = u.id) l
CROSS JOIN LATERAL (SELECT COALESCE(sum(amount), 0) AS held FROM credit_holds WHERE user_id = u.id AND status = 'active') h
WHERE u.available_credits <> l.remaining + h.held
UNION ALL
SELECT 'spent = spends + captures - refunds', u.clerk_id, format('spent=%s entries=%s', u.spent_credits, s.spent)
FROM users u
CROSS JOIN LATERAL (SELECT COALESCE(sum(CASE WHEN kind IN ('debit', 'capture') THEN amount WHEN kind = 'refund' THEN -amount ELSE 0 END), 0) AS spent
	FROM credit_transactions WHERE user_id = u.id) s
WHERE u.spent_credits <> s.spent
UNION ALL
SELECT 'refunds within their debit', d.clerk_id, format('debit %s of %s refunded %s', d.id, d.amount, sum(r.amount))
FROM credit_transactions r JOIN credit_transactions d ON d.id = r.refund_of
GROUP BY d.id, d.clerk_id, d.amount HAVING sum(r.amount) > d.amount
UNION ALL
SELECT 'hold allocations = amount', h.clerk_id, format('hold %s of %s allocates %s', h.id, h.amount, a.total)
FROM credit_holds h
CROSS JOIN LATERAL (SELECT COALESCE(sum((e ->> 1)::bigint), 0) AS total FROM jsonb_array_elements(h.allocations) e) a
WHERE h.status = 'active' AND a.total <> h.amount`

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
