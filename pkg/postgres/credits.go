package postgres

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/uptrace/bun"

	"github.com/creditgate/creditgate/pkg/ledger"
)

// The credits API's writes. Each is one transaction that takes the account's
// row lock first (the one serialization point per account, always taken
// before any lot or hold row of it), answers a repeated idempotency key from
// api_requests, and otherwise applies the operation and stores its answer
// under the key in the same transaction.

// account is a users row, locked.
type account struct {
	ID        int64
	ClerkID   string
	Deleted   bool
	Available int64
	// ExpiredHolds: some active hold of the account is past its expiry and
	// not booked yet (expireHolds has work to do).
	ExpiredHolds bool
}

func lockAccount(ctx context.Context, tx bun.Tx, clerkID string) (account, error) {
	a := account{ClerkID: clerkID}
	err := tx.QueryRowContext(ctx,
		"SELECT id, deleted_at IS NOT NULL, available_credits FROM users WHERE clerk_id = ? FOR UPDATE", clerkID).
		Scan(&a.ID, &a.Deleted, &a.Available)
	if errors.Is(err, sql.ErrNoRows) {
		return a, fmt.Errorf("user %s: %w", clerkID, ledger.ErrNotFound)
	}
	a.ExpiredHolds = true
	return a, err
}

// prepared runs one statement straight through pgx with bound parameters,
// in the handle's statement mode: by default prepared once per connection
// (pgx's statement cache), so PostgreSQL plans it once per connection
// instead of per request, and no SQL text is built per request; behind a
// pooler that cannot keep prepared statements, sent whole each time. The
// API's hot statements go this way.
func (s *Store) prepared(ctx context.Context, tx bun.Tx, query string, args ...any) *sql.Row {
	return tx.Tx.QueryRowContext(ctx, query, append([]any{s.mode}, args...)...)
}

// lockRequestSQL locks the account and reads, in the same round trip, the
// answer stored under the request's key (its bytes, or the entry it made and
// the balance after it) and whether an active hold of the account is past
// its expiry.
//
// The read of api_requests is as of the statement's start: when this waited
// for the lock behind a request with the same key, it does not see that
// request's answer, and the operation then fails on the key's unique index,
// which apiWrite answers by running the request again (see sameKeyRace).
const lockRequestSQL = `
SELECT u.id, u.deleted_at IS NOT NULL, u.available_credits,
	EXISTS (SELECT 1 FROM credit_holds h WHERE h.user_id = u.id AND h.status = 'active' AND h.expires_at <= now()),
	r.fingerprint, r.status, r.response, r.balance_after,
	e.id, e.created_at, e.amount, e.type, e.kind, e.reason, e.reference, e.metadata, e.actor, e.expires_at, e.refund_of, e.hold_id
FROM users u
LEFT JOIN api_requests r ON r.user_id = u.id AND r.idempotency_key = $2
LEFT JOIN credit_transactions e ON e.id = r.entry_id
WHERE u.clerk_id = $1
FOR UPDATE OF u`

// storedAnswer is an api_requests row read by lockRequestSQL.
type storedAnswer struct {
	Fingerprint  []byte
	Status       sql.NullInt32
	Response     []byte
	BalanceAfter sql.NullInt64
	Entry        struct {
		ID                   sql.NullInt64
		CreatedAt, ExpiresAt sql.NullTime
		Amount               sql.NullInt64
		Type, Kind, Reason   sql.NullString
		Reference, Actor     sql.NullString
		Metadata             []byte
		RefundOf, HoldID     sql.NullInt64
	}
}

// scanLockRequest reads lockRequestSQL's row.
func scanLockRequest(row interface{ Scan(...any) error }, clerkID string) (account, storedAnswer, error) {
	a, st := account{ClerkID: clerkID}, storedAnswer{}
	e := &st.Entry
	err := row.Scan(&a.ID, &a.Deleted, &a.Available, &a.ExpiredHolds,
		&st.Fingerprint, &st.Status, &st.Response, &st.BalanceAfter,
		&e.ID, &e.CreatedAt, &e.Amount, &e.Type, &e.Kind, &e.Reason, &e.Reference, &e.Metadata, &e.Actor, &e.ExpiresAt, &e.RefundOf, &e.HoldID)
	if errors.Is(err, sql.ErrNoRows) || errors.Is(err, pgx.ErrNoRows) {
		return a, st, fmt.Errorf("user %s: %w", clerkID, ledger.ErrNotFound)
	}
	return a, st, err
}

// answer is the stored answer to a request with this fingerprint: its bytes,
// or its entry rendered as it was when first sent.
func (st storedAnswer) answer(fingerprint []byte, clerkID string, render ledger.Render) (ledger.Answer, error) {
	if !bytes.Equal(st.Fingerprint, fingerprint) {
		return ledger.Answer{}, ledger.ErrIdempotencyKeyReused
	}
	if st.Response != nil {
		return ledger.Answer{Status: int(st.Status.Int32), Body: st.Response, Replayed: true}, nil
	}
	e := st.Entry
	if !e.ID.Valid || !st.BalanceAfter.Valid {
		return ledger.Answer{}, fmt.Errorf("the answer stored for this key has neither bytes nor an entry")
	}
	ans := render(ledger.EntryView{ID: e.ID.Int64, ClerkID: clerkID, Type: e.Type.String, Kind: e.Kind.String,
		Reason: e.Reason.String, Amount: e.Amount.Int64, Reference: e.Reference.String, Metadata: e.Metadata,
		Actor: e.Actor.String, RefundOf: e.RefundOf.Int64, HoldID: e.HoldID.Int64, ExpiresAt: e.ExpiresAt.Time,
		CreatedAt: e.CreatedAt.Time, BalanceAfter: st.BalanceAfter.Int64}, nil)
	ans.Status, ans.Replayed = int(st.Status.Int32), true
	return ans, nil
}

// sameKeyRace reports whether err is a unique violation of an API request's
// key (its stored answer or its entry's key): another request with the same
// key committed while this one waited for the account's lock.
func sameKeyRace(err error) bool {
	pgErr, ok := errors.AsType[*pgconn.PgError](err)
	return ok && pgErr.Code == "23505" &&
		(pgErr.ConstraintName == "api_requests_pkey" || pgErr.ConstraintName == "credit_transactions_idempotency_key_key")
}

// businessRefusal reports the refusals that are answers: stored under the
// key, replayed, never retried into success.
func businessRefusal(err error) bool {
	for _, e := range []error{ledger.ErrInsufficientCredits, ledger.ErrAccountClosed, ledger.ErrHoldExpired,
		ledger.ErrHoldNotActive, ledger.ErrExceedsRefundable, ledger.ErrNotADebit} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// apiWrite runs op for the request on the locked account of clerkID: a key
// seen before with the same fingerprint answers what it answered; with
// another, ErrIdempotencyKeyReused, nothing changed. A closed account answers
// ErrAccountClosed. op's result, or its business refusal, is rendered and
// stored under the key; any other error rolls everything back and is stored
// nowhere.
func (s *Store) apiWrite(ctx context.Context, clerkID string, r ledger.Request, render ledger.Render,
	op func(ctx context.Context, tx bun.Tx, a account) (any, error),
) (ledger.Answer, error) {
	var ans ledger.Answer
	var err error
	for attempt := 1; attempt <= maxTxAttempts; attempt++ {
		err = s.inTx(ctx, func(ctx context.Context, tx bun.Tx) error {
			a, st, err := scanLockRequest(s.prepared(ctx, tx, lockRequestSQL, clerkID, r.Key), clerkID)
			switch {
			case err != nil:
				return err
			case st.Status.Valid:
				ans, err = st.answer(r.Fingerprint, clerkID, render)
				return err
			}
			var result any
			if a.Deleted {
				err = ledger.ErrAccountClosed
			} else {
				result, err = op(ctx, tx, a)
			}
			if err != nil && !businessRefusal(err) {
				return err
			}
			ans = render(result, err)
			var one int
			return s.prepared(ctx, tx, `INSERT INTO api_requests (user_id, idempotency_key, fingerprint, status, response, actor)
				VALUES ($1, $2, $3, $4, $5, $6) RETURNING 1`, a.ID, r.Key, r.Fingerprint, ans.Status, ans.Body, nullable(r.Actor)).Scan(&one)
		})
		if !sameKeyRace(err) {
			break
		}
	}
	if err != nil {
		return ledger.Answer{}, mapError(err)
	}
	return ans, nil
}

// takeLotsSQL takes ?1 credits from the user's spendable lots in spending
// order (expiring soonest first, then never expiring, oldest first), all or
// nothing: it returns no row when they hold less. Each row is one lot taken
// from, the amount and the lot's expiry.
const takeLotsSQL = `
WITH avail AS (
	SELECT id, remaining, expires_at,
		sum(remaining) OVER (ORDER BY expires_at NULLS LAST, id) - remaining AS before,
		sum(remaining) OVER () AS total
	FROM credit_lots
	WHERE user_id = ?0 AND remaining > 0 AND (expires_at IS NULL OR expires_at > now())
), take AS (
	SELECT id, LEAST(remaining, ?1 - before) AS n, expires_at FROM avail
	WHERE before < ?1 AND total >= ?1
)
UPDATE credit_lots l SET remaining = l.remaining - take.n
FROM take WHERE l.id = take.id
RETURNING l.id, take.n, take.expires_at`

// taken is what takeLots took from one lot.
type taken struct {
	Lot       int64
	Amount    int64
	ExpiresAt sql.NullTime
}

// takeLots takes amount from a's lots or fails with an InsufficientError,
// changing nothing.
func takeLots(ctx context.Context, tx bun.Tx, a account, amount int64) ([]taken, error) {
	rows, err := tx.QueryContext(ctx, takeLotsSQL, a.ID, amount)
	if err != nil {
		return nil, fmt.Errorf("take from lots: %w", err)
	}
	defer rows.Close()
	var out []taken
	var sum int64
	for rows.Next() {
		var t taken
		if err := rows.Scan(&t.Lot, &t.Amount, &t.ExpiresAt); err != nil {
			return nil, err
		}
		sum += t.Amount
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		avail, err := spendable(ctx, tx, a.ID)
		if err != nil {
			return nil, err
		}
		return nil, &ledger.InsufficientError{Available: avail}
	}
	if sum != amount {
		return nil, fmt.Errorf("take from lots: took %d of %d", sum, amount)
	}
	return out, nil
}

// latestExpiry is the expiry credits taken from these lots keep (a refund
// inherits it): the latest, or none if any never expires.
func latestExpiry(ts []taken) sql.NullTime {
	var latest sql.NullTime
	for _, t := range ts {
		if !t.ExpiresAt.Valid {
			return sql.NullTime{}
		}
		if !latest.Valid || t.ExpiresAt.Time.After(latest.Time) {
			latest = t.ExpiresAt
		}
	}
	return latest
}

// spendableSQL is what a debit or hold can take now: the unexpired lots, and
// what expired but unbooked holds will give back to unexpired lots.
const spendableSQL = `
SELECT
	COALESCE((SELECT sum(remaining) FROM credit_lots
		WHERE user_id = ?0 AND remaining > 0 AND (expires_at IS NULL OR expires_at > now())), 0)
	+ COALESCE((SELECT sum((e ->> 1)::bigint) FROM credit_holds h, jsonb_array_elements(h.allocations) e
		JOIN credit_lots l ON l.id = (e ->> 0)::bigint
		WHERE h.user_id = ?0 AND h.status = 'active' AND h.expires_at <= now()
			AND (l.expires_at IS NULL OR l.expires_at > now())), 0)`

func spendable(ctx context.Context, db bun.IDB, userID int64) (int64, error) {
	var n int64
	if err := db.QueryRowContext(ctx, spendableSQL, userID).Scan(&n); err != nil {
		return 0, fmt.Errorf("read spendable credits: %w", err)
	}
	return n, nil
}

// expireHolds books the user's active holds past their expiry: expired, their
// credits back in their lots. Every write runs it first, under the account's
// lock, so that what they give back is spendable at once.
func expireHolds(ctx context.Context, db bun.IDB, a account) error {
	if !a.ExpiredHolds {
		return nil
	}
	_, err := db.ExecContext(ctx, `
WITH x AS (
	UPDATE credit_holds SET status = 'expired', finished_at = now()
	WHERE user_id = ? AND status = 'active' AND expires_at <= now()
	RETURNING allocations
)
UPDATE credit_lots l SET remaining = l.remaining + a.amount
FROM (SELECT (e ->> 0)::bigint AS lot_id, sum((e ->> 1)::bigint) AS amount
      FROM x, jsonb_array_elements(x.allocations) e GROUP BY 1) a
WHERE l.id = a.lot_id`, a.ID)
	if err != nil {
		return fmt.Errorf("expire holds: %w", err)
	}
	return nil
}

// insertEntrySQL appends an API entry and moves the account's balances by
// it, returning the entry and the balance after it.
const insertEntrySQL = `
WITH e AS (
	INSERT INTO credit_transactions
		(user_id, clerk_id, amount, type, kind, reason, status, idempotency_key,
		 reference, metadata, actor, refund_of, hold_id, expires_at)
	VALUES (?0, ?1, ?2, ?3, ?4, ?5, 'completed', ?6, ?7, ?8::jsonb, ?9, ?10, ?11, ?12)
	RETURNING *
), u AS (
	UPDATE users SET
		available_credits = available_credits + CASE WHEN e.type = 'credit' THEN e.amount ELSE -e.amount END,
		used_credits = used_credits + CASE WHEN e.type = 'debit' THEN e.amount ELSE 0 END,
		spent_credits = spent_credits + CASE e.kind WHEN 'debit' THEN e.amount WHEN 'capture' THEN e.amount
			WHEN 'refund' THEN -e.amount ELSE 0 END,
		version = version + 1, updated_at = now()
	FROM e WHERE users.id = e.user_id
	RETURNING users.available_credits
)
SELECT e.id, e.created_at, u.available_credits FROM e, u`

// newEntry is an API entry to append.
type newEntry struct {
	Type, Kind, Reason string
	Amount             int64
	Reference          string
	Metadata           []byte
	Actor              string
	RefundOf, HoldID   int64
	ExpiresAt          sql.NullTime
}

// entryKey is an API entry's one cause: the account and the request's key
// (plus what the request made, when one request makes several entries).
func entryKey(a account, r ledger.Request, what string) string {
	return fmt.Sprintf("api:%d:%s:%s", a.ID, what, r.Key)
}

func insertEntry(ctx context.Context, tx bun.Tx, a account, key string, e newEntry) (ledger.EntryView, error) {
	v := ledger.EntryView{ClerkID: a.ClerkID, Type: e.Type, Kind: e.Kind, Reason: e.Reason, Amount: e.Amount,
		Reference: e.Reference, Metadata: e.Metadata, Actor: e.Actor, RefundOf: e.RefundOf, HoldID: e.HoldID,
		ExpiresAt: e.ExpiresAt.Time}
	var meta any
	if len(e.Metadata) > 0 {
		meta = string(e.Metadata)
	}
	err := tx.QueryRowContext(ctx, insertEntrySQL, a.ID, a.ClerkID, e.Amount, e.Type, e.Kind, e.Reason, key,
		nullable(e.Reference), meta, nullable(e.Actor), nullableID(e.RefundOf), nullableID(e.HoldID), e.ExpiresAt).
		Scan(&v.ID, &v.CreatedAt, &v.BalanceAfter)
	if err != nil {
		return v, fmt.Errorf("append %s entry: %w", e.Kind, err)
	}
	return v, nil
}

func nullableID(id int64) any {
	if id == 0 {
		return nil
	}
	return id
}

// debitSQL is a debit in one statement: it takes $3 from the spendable lots
// of user $1 in spending order (all or nothing, as takeLotsSQL), appends the
// entry (expiring when the latest of the credits it took would have, or
// never if any never expires, so that a refund inherits it) and moves the
// account's balances. It runs after the account's row lock is taken, in a
// statement of its own, so its snapshot sees everything committed before
// the lock was granted. It returns no row, changing nothing, unless the
// request is new (no answer under key $2), the account open and without
// unbooked expired holds, and the lots hold $3: then the general path
// (apiWrite) sorts out which.
const debitCTEs = `
WITH acct AS (
	SELECT u.id FROM users u
	WHERE u.clerk_id = $1 AND u.deleted_at IS NULL
		AND NOT EXISTS (SELECT 1 FROM api_requests r WHERE r.user_id = u.id AND r.idempotency_key = $2)
		AND NOT EXISTS (SELECT 1 FROM credit_holds h WHERE h.user_id = u.id AND h.status = 'active' AND h.expires_at <= now())
), avail AS (
	SELECT l.id, l.remaining, l.expires_at,
		sum(l.remaining) OVER (ORDER BY l.expires_at NULLS LAST, l.id) - l.remaining AS before,
		sum(l.remaining) OVER () AS total
	FROM credit_lots l JOIN acct ON l.user_id = acct.id
	WHERE l.remaining > 0 AND (l.expires_at IS NULL OR l.expires_at > now())
), take AS (
	SELECT id, LEAST(remaining, $3::bigint - before) AS n, expires_at FROM avail
	WHERE before < $3::bigint AND total >= $3::bigint
), lots AS (
	UPDATE credit_lots l SET remaining = l.remaining - take.n
	FROM take WHERE l.id = take.id
	RETURNING take.n, take.expires_at
), e AS (
	INSERT INTO credit_transactions
		(user_id, clerk_id, amount, type, kind, reason, status, idempotency_key, reference, metadata, actor, expires_at)
	SELECT acct.id, $1, $3::bigint, 'debit', 'debit', $4, 'completed', 'api:' || acct.id || ':debit:' || $2, $5, $6::jsonb, $7,
		CASE WHEN bool_and(lots.expires_at IS NOT NULL) THEN max(lots.expires_at) END
	FROM lots, acct GROUP BY acct.id HAVING sum(lots.n) = $3::bigint
	RETURNING id, user_id, created_at, amount, expires_at, metadata
), u AS (
	UPDATE users SET available_credits = available_credits - e.amount, used_credits = used_credits + e.amount,
		spent_credits = spent_credits + e.amount, version = version + 1, updated_at = now()
	FROM e WHERE users.id = e.user_id
	RETURNING users.available_credits
)`

const debitSQL = debitCTEs + `
SELECT e.id, e.created_at, e.expires_at, e.metadata, u.available_credits FROM e, u`

// debitAnsweredSQL is debitSQL that also stores its answer under the key, as
// the entry it made and the balance after it ($8 the request's fingerprint,
// $9 the answer's status), for the pipelined path, which cannot render the
// answer before the statement runs.
const debitAnsweredSQL = debitCTEs + `, answer AS (
	INSERT INTO api_requests (user_id, idempotency_key, fingerprint, status, actor, entry_id, balance_after)
	SELECT e.user_id, $2, $8, $9, $7, e.id, u.available_credits FROM e, u
)
SELECT e.id, e.created_at, e.expires_at, e.metadata, u.available_credits FROM e, u`

// Debit takes credits now, from the lots that expire soonest. The common
// case (a new request, enough credits) costs two round trips (see
// pipelinedDebit); every other case runs the general path.
func (s *Store) Debit(ctx context.Context, r ledger.Request, sp ledger.Spend, render ledger.Render) (ledger.Answer, error) {
	for attempt := 1; attempt <= maxTxAttempts; attempt++ {
		if !pipelinesIn(s.mode) {
			break
		}
		ans, done, err := s.pipelinedDebit(ctx, r, sp, render)
		if err != nil && (isRetryable(err) || sameKeyRace(err) || errors.Is(err, errStaleStatement)) && ctx.Err() == nil {
			continue
		}
		if err != nil {
			return ledger.Answer{}, mapError(err)
		}
		if done {
			return ans, nil
		}
		break
	}
	return s.apiWrite(ctx, r.ClerkID, r, render, func(ctx context.Context, tx bun.Tx, a account) (any, error) {
		if err := expireHolds(ctx, tx, a); err != nil {
			return nil, err
		}
		v, err := scanDebit(s.prepared(ctx, tx, debitSQL, debitArgs(r, sp)...), a.ClerkID, r, sp)
		if errors.Is(err, sql.ErrNoRows) {
			// The request is new and the account open (apiWrite), its
			// expired holds booked: the lots hold too little.
			avail, err := spendable(ctx, tx, a.ID)
			if err != nil {
				return nil, err
			}
			return nil, &ledger.InsufficientError{Available: avail}
		}
		return v, err
	})
}

func debitArgs(r ledger.Request, sp ledger.Spend) []any {
	var meta any
	if len(sp.Metadata) > 0 {
		meta = string(sp.Metadata)
	}
	return []any{r.ClerkID, r.Key, sp.Amount, sp.Reason, nullable(sp.Reference), meta, nullable(r.Actor)}
}

// scanDebit reads debitSQL's row as the entry it appended, its metadata as
// stored (as a replay, rendered from the stored entry, will read it).
func scanDebit(row interface{ Scan(...any) error }, clerkID string, r ledger.Request, sp ledger.Spend) (ledger.EntryView, error) {
	v := ledger.EntryView{ClerkID: clerkID, Type: ledger.TypeDebit, Kind: ledger.KindDebit, Reason: sp.Reason,
		Amount: sp.Amount, Reference: sp.Reference, Actor: r.Actor}
	var exp sql.NullTime
	if err := row.Scan(&v.ID, &v.CreatedAt, &exp, &v.Metadata, &v.BalanceAfter); err != nil {
		if errors.Is(err, sql.ErrNoRows) || errors.Is(err, pgx.ErrNoRows) {
			return v, sql.ErrNoRows
		}
		return v, fmt.Errorf("debit: %w", err)
	}
	v.ExpiresAt = exp.Time
	return v, nil
}

// Grant adds credits, expiring at g.ExpiresAt if set.
func (s *Store) Grant(ctx context.Context, r ledger.Request, g ledger.Grant, render ledger.Render) (ledger.Answer, error) {
	return s.apiWrite(ctx, r.ClerkID, r, render, func(ctx context.Context, tx bun.Tx, a account) (any, error) {
		exp := sql.NullTime{Time: g.ExpiresAt, Valid: !g.ExpiresAt.IsZero()}
		v, err := insertEntry(ctx, tx, a, entryKey(a, r, "grant"), newEntry{
			Type: ledger.TypeCredit, Kind: ledger.KindGrant, Reason: g.Reason, Amount: g.Amount,
			Reference: g.Reference, Actor: r.Actor, ExpiresAt: exp,
		})
		if err != nil {
			return nil, err
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO credit_lots (user_id, entry_id, amount, remaining, expires_at) VALUES (?, ?, ?, ?, ?)",
			a.ID, v.ID, g.Amount, g.Amount, exp); err != nil {
			return nil, fmt.Errorf("add lot: %w", err)
		}
		return v, nil
	})
}

// allocation is [lot id, amount] in a hold's allocations.
type allocation [2]int64

// PlaceHold reserves credits for sp.TTL: taken from the lots now, held
// until captured, voided or expired.
func (s *Store) PlaceHold(ctx context.Context, r ledger.Request, sp ledger.Spend, render ledger.Render) (ledger.Answer, error) {
	return s.apiWrite(ctx, r.ClerkID, r, render, func(ctx context.Context, tx bun.Tx, a account) (any, error) {
		if err := expireHolds(ctx, tx, a); err != nil {
			return nil, err
		}
		ts, err := takeLots(ctx, tx, a, sp.Amount)
		if err != nil {
			return nil, err
		}
		allocs := make([]allocation, len(ts))
		for i, t := range ts {
			allocs[i] = allocation{t.Lot, t.Amount}
		}
		b, _ := json.Marshal(allocs)
		h := ledger.Hold{ClerkID: a.ClerkID, Amount: sp.Amount, Status: ledger.HoldActive, Reason: sp.Reason,
			Reference: sp.Reference, Actor: r.Actor}
		err = tx.QueryRowContext(ctx, `INSERT INTO credit_holds (user_id, clerk_id, amount, allocations, reason, reference, actor, expires_at)
			VALUES (?, ?, ?, ?::jsonb, ?, ?, ?, now() + ? * interval '1 millisecond') RETURNING id, expires_at, created_at`,
			a.ID, a.ClerkID, sp.Amount, string(b), sp.Reason, nullable(sp.Reference), nullable(r.Actor), sp.TTL.Milliseconds()).
			Scan(&h.ID, &h.ExpiresAt, &h.CreatedAt)
		if err != nil {
			return nil, fmt.Errorf("place hold: %w", err)
		}
		if _, err := tx.ExecContext(ctx, "UPDATE users SET version = version + 1, updated_at = now() WHERE id = ?", a.ID); err != nil {
			return nil, err
		}
		return h, nil
	})
}

// holdRow is a credit_holds row with its allocations.
type holdRow struct {
	ledger.Hold
	UserID      int64
	Allocations []allocation
	Expired     bool // active but past its expiry at the read
}

const holdColumns = `id, user_id, clerk_id, amount, captured, status, allocations, reason, reference, actor,
	expires_at, created_at, finished_at, capture_entry_id, status = 'active' AND expires_at <= now()`

func scanHold(row interface{ Scan(...any) error }) (holdRow, error) {
	var h holdRow
	var alloc []byte
	var ref, actor sql.NullString
	var finished sql.NullTime
	var capture sql.NullInt64
	err := row.Scan(&h.ID, &h.UserID, &h.ClerkID, &h.Amount, &h.Captured, &h.Status, &alloc, &h.Reason, &ref, &actor,
		&h.ExpiresAt, &h.CreatedAt, &finished, &capture, &h.Expired)
	if err != nil {
		return h, err
	}
	h.Reference, h.Actor, h.FinishedAt, h.CaptureEntryID = ref.String, actor.String, finished.Time, capture.Int64
	if err := json.Unmarshal(alloc, &h.Allocations); err != nil {
		return h, fmt.Errorf("hold %d allocations: %w", h.ID, err)
	}
	if h.Expired {
		// As of this read: an active hold past its expiry is expired,
		// whether or not the reconciler has booked it yet.
		h.Status, h.FinishedAt = ledger.HoldExpired, h.ExpiresAt
	}
	return h, nil
}

// Hold reads a hold as it is now.
func (s *Store) Hold(ctx context.Context, id int64) (ledger.Hold, error) {
	h, err := scanHold(s.db.QueryRowContext(ctx, "SELECT "+holdColumns+" FROM credit_holds WHERE id = ?", id))
	if errors.Is(err, sql.ErrNoRows) {
		return ledger.Hold{}, fmt.Errorf("hold %d: %w", id, ledger.ErrNotFound)
	}
	if err != nil {
		return ledger.Hold{}, fmt.Errorf("read hold %d: %w", id, mapError(err))
	}
	return h.Hold, nil
}

// holdOwner finds the account a hold belongs to (its lock comes first).
func (s *Store) holdOwner(ctx context.Context, id int64) (string, error) {
	return s.owner(ctx, "credit_holds", "hold", id)
}

// owner reads the clerk_id of a row of table (credit_holds or
// credit_transactions) by id.
func (s *Store) owner(ctx context.Context, table, what string, id int64) (string, error) {
	var clerkID string
	err := s.db.QueryRowContext(ctx, "SELECT clerk_id FROM "+table+" WHERE id = ?", id).Scan(&clerkID)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("%s %d: %w", what, id, ledger.ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("read %s %d: %w", what, id, mapError(err))
	}
	return clerkID, nil
}

// releaseAllocations puts credits back in the lots they were taken from.
func releaseAllocations(ctx context.Context, tx bun.Tx, allocs []allocation) error {
	for _, al := range allocs {
		if al[1] == 0 {
			continue
		}
		if _, err := tx.ExecContext(ctx, "UPDATE credit_lots SET remaining = remaining + ? WHERE id = ?", al[1], al[0]); err != nil {
			return fmt.Errorf("release to lot %d: %w", al[0], err)
		}
	}
	return nil
}

// withActiveHold locks the hold's account, expires the account's holds past
// their expiry, and runs op on the hold if it is still active; an expired
// hold answers ErrHoldExpired, a finished one ErrHoldNotActive.
func (s *Store) withActiveHold(ctx context.Context, holdID int64, r ledger.Request, render ledger.Render,
	op func(ctx context.Context, tx bun.Tx, a account, h holdRow) (any, error),
) (ledger.Answer, error) {
	owner, err := s.holdOwner(ctx, holdID)
	if err != nil {
		return ledger.Answer{}, err
	}
	return s.apiWrite(ctx, owner, r, render, func(ctx context.Context, tx bun.Tx, a account) (any, error) {
		if err := expireHolds(ctx, tx, a); err != nil {
			return nil, err
		}
		h, err := scanHold(tx.QueryRowContext(ctx, "SELECT "+holdColumns+" FROM credit_holds WHERE id = ? FOR UPDATE", holdID))
		if err != nil {
			return nil, fmt.Errorf("read hold %d: %w", holdID, err)
		}
		switch h.Status {
		case ledger.HoldActive:
			return op(ctx, tx, a, h)
		case ledger.HoldExpired:
			return nil, ledger.ErrHoldExpired
		default:
			return nil, ledger.ErrHoldNotActive
		}
	})
}

// CaptureHold takes amount (0: all) of an active hold as a capture entry;
// the rest goes back to the lots it came from.
func (s *Store) CaptureHold(ctx context.Context, holdID int64, amount int64, r ledger.Request, render ledger.Render) (ledger.Answer, error) {
	return s.withActiveHold(ctx, holdID, r, render, func(ctx context.Context, tx bun.Tx, a account, h holdRow) (any, error) {
		if amount == 0 {
			amount = h.Amount
		}
		if amount > h.Amount {
			return nil, fmt.Errorf("%w: capture of %d exceeds the hold's %d", ledger.ErrInvalidRequest, amount, h.Amount)
		}
		// The captured part is taken in the order the credits were taken
		// (soonest expiry first); what is left goes back.
		left := amount
		var capturedExpiry sql.NullTime
		var back []allocation
		var lots []taken
		for _, al := range h.Allocations {
			n := min(al[1], left)
			left -= n
			if n > 0 {
				lots = append(lots, taken{Lot: al[0], Amount: n})
			}
			if al[1]-n > 0 {
				back = append(back, allocation{al[0], al[1] - n})
			}
		}
		if err := lotExpiries(ctx, tx, lots); err != nil {
			return nil, err
		}
		capturedExpiry = latestExpiry(lots)
		// The hold's credits were in available_credits all along (a hold is
		// not an entry): the capture entry takes them out.
		v, err := insertEntry(ctx, tx, a, entryKey(a, r, "capture"), newEntry{
			Type: ledger.TypeDebit, Kind: ledger.KindCapture, Reason: h.Reason, Amount: amount,
			Reference: h.Reference, Actor: r.Actor, HoldID: h.ID, ExpiresAt: capturedExpiry,
		})
		if err != nil {
			return nil, err
		}
		if err := releaseAllocations(ctx, tx, back); err != nil {
			return nil, err
		}
		err = tx.QueryRowContext(ctx, `UPDATE credit_holds SET status = 'captured', captured = ?, capture_entry_id = ?, finished_at = now()
			WHERE id = ? RETURNING finished_at`, amount, v.ID, h.ID).Scan(&h.FinishedAt)
		if err != nil {
			return nil, fmt.Errorf("finish hold: %w", err)
		}
		h.Status, h.Captured, h.CaptureEntryID = ledger.HoldCaptured, amount, v.ID
		return h.Hold, nil
	})
}

// lotExpiries fills in the lots' expiries.
func lotExpiries(ctx context.Context, tx bun.Tx, ts []taken) error {
	for i := range ts {
		if err := tx.QueryRowContext(ctx, "SELECT expires_at FROM credit_lots WHERE id = ?", ts[i].Lot).Scan(&ts[i].ExpiresAt); err != nil {
			return fmt.Errorf("read lot %d: %w", ts[i].Lot, err)
		}
	}
	return nil
}

// VoidHold releases an active hold: all its credits go back to their lots.
func (s *Store) VoidHold(ctx context.Context, holdID int64, r ledger.Request, render ledger.Render) (ledger.Answer, error) {
	return s.withActiveHold(ctx, holdID, r, render, func(ctx context.Context, tx bun.Tx, a account, h holdRow) (any, error) {
		if err := releaseAllocations(ctx, tx, h.Allocations); err != nil {
			return nil, err
		}
		err := tx.QueryRowContext(ctx, "UPDATE credit_holds SET status = 'voided', finished_at = now() WHERE id = ? RETURNING finished_at", h.ID).
			Scan(&h.FinishedAt)
		if err != nil {
			return nil, fmt.Errorf("void hold: %w", err)
		}
		if _, err := tx.ExecContext(ctx, "UPDATE users SET version = version + 1, updated_at = now() WHERE id = ?", a.ID); err != nil {
			return nil, err
		}
		h.Status = ledger.HoldVoided
		return h.Hold, nil
	})
}

// ExtendHold moves an active hold's expiry to ttl from now.
func (s *Store) ExtendHold(ctx context.Context, holdID int64, ttl time.Duration, r ledger.Request, render ledger.Render) (ledger.Answer, error) {
	return s.withActiveHold(ctx, holdID, r, render, func(ctx context.Context, tx bun.Tx, a account, h holdRow) (any, error) {
		err := tx.QueryRowContext(ctx, "UPDATE credit_holds SET expires_at = now() + ? * interval '1 millisecond' WHERE id = ? RETURNING expires_at",
			ttl.Milliseconds(), h.ID).Scan(&h.ExpiresAt)
		if err != nil {
			return nil, fmt.Errorf("extend hold: %w", err)
		}
		return h.Hold, nil
	})
}

// entryOwner finds the account an entry belongs to.
func (s *Store) entryOwner(ctx context.Context, id int64) (string, error) {
	return s.owner(ctx, "credit_transactions", "entry", id)
}

// Refund gives back amount (0: all that is left) of a debit or capture, as
// credits that expire when the credits it took would have.
func (s *Store) Refund(ctx context.Context, entryID int64, amount int64, reason string, r ledger.Request, render ledger.Render) (ledger.Answer, error) {
	owner, err := s.entryOwner(ctx, entryID)
	if err != nil {
		return ledger.Answer{}, err
	}
	return s.apiWrite(ctx, owner, r, render, func(ctx context.Context, tx bun.Tx, a account) (any, error) {
		var kind sql.NullString
		var debit int64
		var exp sql.NullTime
		var refunded int64
		err := tx.QueryRowContext(ctx, `SELECT d.kind, d.amount, d.expires_at,
			COALESCE((SELECT sum(r.amount) FROM credit_transactions r WHERE r.refund_of = d.id), 0)
			FROM credit_transactions d WHERE d.id = ?`, entryID).Scan(&kind, &debit, &exp, &refunded)
		if err != nil {
			return nil, fmt.Errorf("read entry %d: %w", entryID, err)
		}
		if kind.String != ledger.KindDebit && kind.String != ledger.KindCapture {
			return nil, ledger.ErrNotADebit
		}
		left := debit - refunded
		if amount == 0 {
			amount = left
		}
		if amount == 0 || amount > left {
			return nil, &ledger.RefundableError{Refundable: left}
		}
		v, err := insertEntry(ctx, tx, a, entryKey(a, r, "refund"), newEntry{
			Type: ledger.TypeCredit, Kind: ledger.KindRefund, Reason: reason, Amount: amount,
			Actor: r.Actor, RefundOf: entryID, ExpiresAt: exp,
		})
		if err != nil {
			return nil, err
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO credit_lots (user_id, entry_id, amount, remaining, expires_at) VALUES (?, ?, ?, ?, ?)",
			a.ID, v.ID, amount, amount, exp); err != nil {
			return nil, fmt.Errorf("add lot: %w", err)
		}
		return v, nil
	})
}

// balanceSQL reads an account as it is at this instant: holds and lots past
// their expiry no longer count, booked or not.
const balanceSQL = `
SELECT u.deleted_at IS NOT NULL, u.spent_credits, u.version,
	(SELECT COALESCE(sum(amount), 0) FROM credit_holds WHERE user_id = u.id AND status = 'active' AND expires_at > now()),
	n.expires_at, COALESCE(n.amount, 0)
FROM users u
LEFT JOIN LATERAL (
	SELECT l.expires_at, sum(l.remaining) AS amount FROM credit_lots l
	WHERE l.user_id = u.id AND l.remaining > 0 AND l.expires_at > now()
	GROUP BY l.expires_at ORDER BY l.expires_at LIMIT 1
) n ON true
WHERE u.clerk_id = ?`

// Balance reads a user's balance, exact at the instant of the read.
func (s *Store) Balance(ctx context.Context, clerkID string) (ledger.Balance, error) {
	b := ledger.Balance{ClerkID: clerkID}
	var deleted bool
	var next sql.NullTime
	var nextAmount int64
	var userID int64
	err := s.db.RunInTx(ctx, &sql.TxOptions{ReadOnly: true, Isolation: sql.LevelRepeatableRead}, func(ctx context.Context, tx bun.Tx) error {
		if err := tx.QueryRowContext(ctx, "SELECT id FROM users WHERE clerk_id = ?", clerkID).Scan(&userID); err != nil {
			return err
		}
		if err := tx.QueryRowContext(ctx, balanceSQL, clerkID).Scan(&deleted, &b.Used, &b.Version, &b.Held, &next, &nextAmount); err != nil {
			return err
		}
		var err error
		b.Available, err = spendable(ctx, tx, userID)
		return err
	})
	if errors.Is(err, sql.ErrNoRows) {
		return b, fmt.Errorf("user %s: %w", clerkID, ledger.ErrNotFound)
	}
	if err != nil {
		return b, fmt.Errorf("read balance of %s: %w", clerkID, mapError(err))
	}
	if deleted {
		return b, fmt.Errorf("user %s: %w", clerkID, ledger.ErrAccountClosed)
	}
	if next.Valid {
		b.NextExpiry = &ledger.Expiry{Amount: nextAmount, At: next.Time}
	}
	return b, nil
}

// dueExpiriesSQL lists accounts with something to expire: an active hold or a
// lot with credits left, past its expiry (both from partial indexes).
const dueExpiriesSQL = `
SELECT clerk_id FROM users WHERE id IN (
	(SELECT user_id FROM credit_holds WHERE status = 'active' AND expires_at <= now() ORDER BY expires_at LIMIT ?0)
	UNION
	(SELECT user_id FROM credit_lots WHERE remaining > 0 AND expires_at <= now() ORDER BY expires_at LIMIT ?0))
ORDER BY id`

// bookLotExpiriesSQL books what is left in the account's expired lots as
// expiry debits, one per lot and booking (expired counts what was booked
// before, so a lot refilled by a released hold is booked again, once).
const bookLotExpiriesSQL = `
WITH x AS (
	SELECT id, remaining, expired, expires_at FROM credit_lots
	WHERE user_id = ?0 AND remaining > 0 AND expires_at <= now()
	FOR UPDATE
), e AS (
	INSERT INTO credit_transactions (user_id, clerk_id, amount, type, kind, reason, status, idempotency_key, expires_at)
	SELECT ?0, ?1, x.remaining, 'debit', 'expiry', 'expired', 'completed', format('expiry:%s:%s', x.id, x.expired), x.expires_at
	FROM x
	ON CONFLICT (idempotency_key) DO NOTHING
	RETURNING amount
), l AS (
	UPDATE credit_lots SET expired = credit_lots.expired + x.remaining, remaining = 0
	FROM x WHERE credit_lots.id = x.id
)
UPDATE users SET
	available_credits = available_credits - t.total, used_credits = used_credits + t.total,
	version = version + 1, updated_at = now()
FROM (SELECT sum(amount) AS total FROM e) t
WHERE users.id = ?0 AND t.total > 0
RETURNING t.total`

// ExpireDue books, for up to limit accounts, the holds and grants that have
// expired: holds end as expired with their credits back in their lots, then
// what is left in expired lots goes in expiry debits. Each account in its own
// transaction under its row lock; each booking exactly once. It returns the
// accounts handled and the credits expired.
func (s *Store) ExpireDue(ctx context.Context, limit int) (accounts int, credits int64, err error) {
	var ids []string
	if err := s.db.NewRaw(dueExpiriesSQL, limit).Scan(ctx, &ids); err != nil {
		return 0, 0, fmt.Errorf("list due expiries: %w", mapError(err))
	}
	for _, id := range ids {
		var booked int64
		err := s.inTx(ctx, func(ctx context.Context, tx bun.Tx) error {
			booked = 0
			a, err := lockAccount(ctx, tx, id)
			if err != nil {
				return err
			}
			if err := expireHolds(ctx, tx, a); err != nil {
				return err
			}
			err = tx.QueryRowContext(ctx, bookLotExpiriesSQL, a.ID, a.ClerkID).Scan(&booked)
			if errors.Is(err, sql.ErrNoRows) {
				return nil
			}
			return err
		})
		if err != nil {
			return accounts, credits, fmt.Errorf("expire credits of %s: %w", id, err)
		}
		accounts++
		credits += booked
	}
	return accounts, credits, nil
}

// entriesSQL is one page of a user's entries, newest first, below a keyset
// cursor (an entry id; 0: from the newest), each with the balance right after
// it (the running sum of the ledger, which is complete from zero).
const entriesSQL = `
SELECT id, clerk_id, type, kind, reason, amount, reference, metadata, actor, refund_of, hold_id, expires_at, created_at, balance_after
FROM (
	SELECT t.*, sum(CASE WHEN t.type = 'credit' THEN t.amount ELSE -t.amount END) OVER (ORDER BY t.id) AS balance_after
	FROM credit_transactions t WHERE t.user_id = ?0
) e
WHERE ?1 = 0 OR id < ?1
ORDER BY id DESC LIMIT ?2`

// Entries returns up to limit of a user's entries older than the entry
// before (0: the newest), newest first.
func (s *Store) Entries(ctx context.Context, clerkID string, limit int, before int64) ([]ledger.EntryView, error) {
	var userID int64
	err := s.db.QueryRowContext(ctx, "SELECT id FROM users WHERE clerk_id = ?", clerkID).Scan(&userID)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("user %s: %w", clerkID, ledger.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read user %s: %w", clerkID, mapError(err))
	}
	rows, err := s.db.QueryContext(ctx, entriesSQL, userID, before, limit)
	if err != nil {
		return nil, fmt.Errorf("list entries of %s: %w", clerkID, mapError(err))
	}
	defer rows.Close()
	var out []ledger.EntryView
	for rows.Next() {
		var e ledger.EntryView
		var kind, ref, actor sql.NullString
		var refundOf, holdID sql.NullInt64
		var exp sql.NullTime
		if err := rows.Scan(&e.ID, &e.ClerkID, &e.Type, &kind, &e.Reason, &e.Amount, &ref, &e.Metadata, &actor,
			&refundOf, &holdID, &exp, &e.CreatedAt, &e.BalanceAfter); err != nil {
			return nil, fmt.Errorf("list entries of %s: %w", clerkID, err)
		}
		e.Kind, e.Reference, e.Actor = legacyKind(kind, e.Reason, e.Type), ref.String, actor.String
		e.RefundOf, e.HoldID, e.ExpiresAt = refundOf.Int64, holdID.Int64, exp.Time
		out = append(out, e)
	}
	return out, mapError(rows.Err())
}

// legacyKind reads the kind of an entry written before kinds existed: the
// webhook wrote only signup grants and forfeits.
func legacyKind(kind sql.NullString, reason, typ string) string {
	switch {
	case kind.Valid:
		return kind.String
	case reason == ledger.ReasonSignupBonus:
		return ledger.KindSignup
	case typ == ledger.TypeDebit:
		return ledger.KindForfeit
	}
	return ledger.KindGrant
}
