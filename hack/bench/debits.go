package main

import (
	"cmp"
	"context"
	"crypto/sha256"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/uptrace/bun"
	"golang.org/x/sync/errgroup"

	"github.com/creditgate/creditgate/pkg/creditsapi"
	"github.com/creditgate/creditgate/pkg/ledger"
	"github.com/creditgate/creditgate/pkg/pgtest"
	"github.com/creditgate/creditgate/pkg/postgres"
)

func clerkID(n int) string { return "user_bench" + strconv.Itoa(n) }

// runDebits measures the credits API's debit, spread over -users users and
// then all on one, each against pgbench running the same SQL; then the floor
// (the minimal server) and the overdraw check.
func (b *bench) runDebits(ctx context.Context) error {
	logf("seeding %d users with 1,000,020 credits each", b.Users)
	if err := seed(ctx, b.store, b.db, b.Users); err != nil {
		return err
	}
	// The SQL of one debit, as the service sends it: the store's own code
	// run once with the capture on, on the last user, with marker values
	// (amount, key) that become pgbench variables.
	fp := sha256.Sum256([]byte("POST /v1/users/x/debits"))
	stmts, err := b.hook.record(func() error {
		return created(b.store.Debit(ctx, ledger.Request{ClerkID: clerkID(b.Users), Actor: "bench", Key: "capturekey", Fingerprint: fp[:]},
			ledger.Spend{Amount: 987654, Reason: "bench"}, creditsapi.Renderer(http.StatusCreated)))
	})
	if err != nil {
		return fmt.Errorf("capture a debit: %w", err)
	}
	markers := []*marker{
		{value: "987654", expr: ":cg_amount"},
		{value: clerkID(b.Users), expr: "'user_bench' || :cg_user::text", text: true},
		{value: "capturekey", expr: "'bench-' || :cg_key::text", text: true},
	}
	scenarios := []struct {
		name, script, pgUser string // pgUser: pgbench's expression for the user
		user                 func(i int) string
	}{
		{fmt.Sprintf("%d users", b.Users), "debit-spread", fmt.Sprintf("random(1, %d)", b.Users), func(i int) string {
			return clerkID(1 + int(uint64(i)*2654435761%uint64(b.Users)))
		}},
		{"one user", "debit-one", "1", func(int) string { return clerkID(1) }},
	}
	for _, sc := range scenarios {
		header := fmt.Sprintf("\\set cg_user %s\n\\set cg_amount 1\n\\set cg_key random(1, 9000000000000000000)\n", sc.pgUser)
		if err := b.writeScripts(stmts, sc.script, header, markers); err != nil {
			return err
		}
	}
	script := b.script("debit-spread", "prepared")
	logf("a debit is %d statements (BEGIN and COMMIT included) in %d round trip(s); pgbench runs them as %s", len(stmts), trips(stmts), script)
	svc, err := b.startService(ctx, script)
	if err != nil || svc == nil {
		return err
	}
	defer svc.stop()

	var results []result
	for si, sc := range scenarios {
		rs, err := b.rows(ctx, svc, sc.name, b.Clients, http.StatusCreated, sc.script, strconv.Itoa(si), func(n int, run string) (result, error) {
			return b.debits(ctx, b.Client, 0, svc.api, svc.key, run+strconv.Itoa(si), n, sc.user)
		})
		if err != nil {
			return err
		}
		results = append(results, rs...)
		if err := checkInvariants(ctx, b.db); err != nil {
			return err
		}
	}
	// The floor, then (lean client) held to the spread run's rate: CPU per
	// request falls as the rate rises (more work per wake-up).
	for i, rate := range []float64{0, results[0].rate()} {
		if !b.Minimal || i > 0 && b.Client != "lean" {
			break
		}
		r, err := b.measureMinimal(ctx, rate)
		if err != nil {
			return err
		}
		results = append(results, r)
	}
	drain, err := b.drainCheck(ctx, svc)
	if err != nil {
		return err
	}
	return b.report("debits", renderReport(b.config, results, drain))
}

// seed creates users 1…n one after another (user k has id k: the scripts rely
// on it) with their signup credits, then grants each 1,000,000 through the store.
func seed(ctx context.Context, store *postgres.Store, db *bun.DB, n int) error {
	now := time.Now()
	for i := 1; i <= n; i++ {
		if _, err := store.EnsureUser(ctx, ledger.ClerkUser{ID: clerkID(i), CreatedAt: now, UpdatedAt: now}, 20, false); err != nil {
			return fmt.Errorf("create %s: %w", clerkID(i), err)
		}
	}
	var wrong int
	q := "SELECT count(*) FROM users WHERE clerk_id <> 'user_bench' || id"
	if err := db.QueryRowContext(ctx, q).Scan(&wrong); err != nil || wrong > 0 {
		return cmp.Or(err, fmt.Errorf("%d seeded users do not have id k for user_bench<k>", wrong))
	}
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i := 1; i <= n; i++ {
		g.Go(func() error { return grant(ctx, store, clerkID(i), "fund", 1_000_000) })
	}
	return g.Wait()
}

// grant gives user amount credits through the store, under idempotency key key.
func grant(ctx context.Context, store *postgres.Store, user, key string, amount int64) error {
	fp := sha256.Sum256([]byte(key))
	if err := created(store.Grant(ctx, ledger.Request{ClerkID: user, Actor: "bench", Key: key, Fingerprint: fp[:]},
		ledger.Grant{Amount: amount, Reason: "bench"}, creditsapi.Renderer(http.StatusCreated))); err != nil {
		return fmt.Errorf("grant %s %s: %w", key, user, err)
	}
	return nil
}

// created is err, or an error if the store answered other than 201.
func created(ans ledger.Answer, err error) error {
	if err == nil && ans.Status != http.StatusCreated {
		err = fmt.Errorf("answered %d: %s", ans.Status, ans.Body)
	}
	return err
}

func checkInvariants(ctx context.Context, db *bun.DB) error {
	vs, err := pgtest.Invariants(ctx, db)
	if err == nil && len(vs) > 0 {
		err = fmt.Errorf("ledger invariants broken: %+v", vs)
	}
	return err
}

// drainCheck is the overdraw check: a user holding -drain credits receives
// 1.5× as many concurrent debits of 1. It returns its row of the targets.
func (b *bench) drainCheck(ctx context.Context, svc *service) (string, error) {
	const user = "user_benchdrain"
	now := time.Now()
	if _, err := b.store.EnsureUser(ctx, ledger.ClerkUser{ID: user, CreatedAt: now, UpdatedAt: now}, 20, false); err != nil {
		return "", err
	}
	if b.Drain > 20 {
		if err := grant(ctx, b.store, user, "drain", int64(b.Drain-20)); err != nil {
			return "", err
		}
	}
	credits := max(b.Drain, 20)
	n := credits * 3 / 2
	logf("overdraw check: %d concurrent debits of 1 against %d credits", n, credits)
	r, err := b.debits(ctx, "net/http", 0, svc.api, svc.key, "drain", n, func(int) string { return user })
	if err != nil {
		return "", err
	}
	var balance int64
	ok, refused := r.Statuses[http.StatusCreated], r.Statuses[http.StatusConflict]
	if err := b.db.QueryRowContext(ctx, "SELECT available_credits FROM users WHERE clerk_id = ?", user).Scan(&balance); err != nil ||
		ok != credits || refused != n-credits || balance != 0 {
		return "", cmp.Or(err, fmt.Errorf("overdraw check: %d debits succeeded, %d refused, %d otherwise, balance %d; want %d, %d, 0, 0",
			ok, refused, n-ok-refused, balance, credits, n-credits))
	}
	return fmt.Sprintf("| never overdrawn: %d concurrent debits of 1 against %d credits | %d succeeded, %d `insufficient_credits`, "+
		"0 other; balance 0; invariants hold | met |\n", n, credits, ok, refused), checkInvariants(ctx, b.db)
}
