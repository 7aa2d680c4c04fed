package main

import (
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

// The capture's values that vary per debit; they become pgbench variables.
const (
	captureAmount = 987654
	captureKey    = "capturekey"
)

// runDebits measures the credits API's debit, spread over -users users and
// then all on one, each against pgbench running the same SQL; then the floor
// (the minimal server) and the overdraw check.
func (b *bench) runDebits(ctx context.Context) error {
	load := leanLoad(0)
	if b.Client == "net/http" {
		load = apiLoad
	}
	logf("seeding %d users with 1,000,020 credits each", b.Users)
	if err := seed(ctx, b.store, b.db, b.Users); err != nil {
		return err
	}

	// The SQL of one debit, as the service sends it: the store's own code
	// run once with the capture on, on the last user, with marker values.
	fp := sha256.Sum256([]byte("POST /v1/users/x/debits"))
	stmts, err := b.hook.record(func() error {
		ans, err := b.store.Debit(ctx, ledger.Request{ClerkID: clerkID(b.Users), Actor: "bench", Key: captureKey, Fingerprint: fp[:]},
			ledger.Spend{Amount: captureAmount, Reason: "bench"}, creditsapi.Renderer(http.StatusCreated))
		if err == nil && ans.Status != http.StatusCreated {
			err = fmt.Errorf("the captured debit answered %d: %s", ans.Status, ans.Body)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("capture a debit: %w", err)
	}
	markers := []*marker{
		{value: strconv.Itoa(captureAmount), expr: ":cg_amount"},
		{value: clerkID(b.Users), expr: "'user_bench' || :cg_user::text", text: true},
		{value: captureKey, expr: "'bench-' || :cg_key::text", text: true},
	}
	scenarios := []struct {
		name, file, pgUser string // pgUser: pgbench's expression for the user
		user               func(i int) string
		scripts            map[string]string
	}{
		{fmt.Sprintf("%d users", b.Users), "spread", fmt.Sprintf("random(1, %d)", b.Users), func(i int) string {
			return clerkID(1 + int(uint64(i)*2654435761%uint64(b.Users)))
		}, nil},
		{"one user", "one", "1", func(int) string { return clerkID(1) }, nil},
	}
	for i := range scenarios {
		sc := &scenarios[i]
		header := fmt.Sprintf("\\set cg_user %s\n\\set cg_amount 1\n\\set cg_key random(1, 9000000000000000000)\n", sc.pgUser)
		if sc.scripts, err = b.writeScripts(stmts, "debit-"+sc.file, header, markers); err != nil {
			return err
		}
	}
	logf("a debit is %d statements (BEGIN and COMMIT included) in %d round trip(s); pgbench runs them as %s",
		len(stmts), trips(stmts), scenarios[0].scripts["prepared"])

	if b.Hold {
		logf("holding the seeded database until interrupted: psql %s", b.url)
		<-ctx.Done()
		return nil
	}
	svc, err := b.startService(ctx)
	if err != nil {
		return err
	}
	defer svc.stop()

	var results []result
	for si, sc := range scenarios {
		rs, err := b.rows(ctx, svc, sc.name, b.Clients, http.StatusCreated, sc.scripts, strconv.Itoa(si), func(n int, run string) (result, error) {
			return load(ctx, svc.api, svc.key, run+strconv.Itoa(si), b.Clients, n, sc.user)
		})
		if err != nil {
			return err
		}
		results = append(results, rs...)
		if err := checkInvariants(ctx, b.db); err != nil {
			return err
		}
	}

	if b.Minimal {
		r, err := b.measureMinimal(ctx, load, "")
		if err != nil {
			return err
		}
		results = append(results, r)
		if b.Client == "lean" {
			// The same, held to the service's rate in the spread run: CPU
			// per request falls as the rate rises (more work per wake-up),
			// so this is the floor to compare the service with.
			rate := results[0].rate()
			r, err := b.measureMinimal(ctx, leanLoad(rate), fmt.Sprintf(", held to %.0f/s", rate))
			if err != nil {
				return err
			}
			results = append(results, r)
		}
	}

	drain, err := drainCheck(ctx, b.config, b.store, b.db, svc)
	if err != nil {
		return err
	}
	return b.report("debits", renderReport(b.config, results, drain))
}

// seed creates users 1…n one after another (so user k has id k, which the
// pgbench scripts rely on) with their signup credits, then grants each
// 1,000,000 credits through the store.
func seed(ctx context.Context, store *postgres.Store, db *bun.DB, n int) error {
	now := time.Now()
	for i := 1; i <= n; i++ {
		if _, err := store.EnsureUser(ctx, ledger.ClerkUser{ID: clerkID(i), CreatedAt: now, UpdatedAt: now}, 20, false); err != nil {
			return fmt.Errorf("create %s: %w", clerkID(i), err)
		}
	}
	var wrong int
	if err := db.QueryRowContext(ctx, "SELECT count(*) FROM users WHERE clerk_id <> 'user_bench' || id").Scan(&wrong); err != nil {
		return err
	}
	if wrong > 0 {
		return fmt.Errorf("%d seeded users do not have id k for user_bench<k>", wrong)
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
	ans, err := store.Grant(ctx, ledger.Request{ClerkID: user, Actor: "bench", Key: key, Fingerprint: fp[:]},
		ledger.Grant{Amount: amount, Reason: "bench"}, creditsapi.Renderer(http.StatusCreated))
	if err == nil && ans.Status != http.StatusCreated {
		err = fmt.Errorf("grant answered %d: %s", ans.Status, ans.Body)
	}
	if err != nil {
		return fmt.Errorf("%s %s: %w", key, user, err)
	}
	return nil
}

func checkInvariants(ctx context.Context, db *bun.DB) error {
	vs, err := pgtest.Invariants(ctx, db)
	if err != nil {
		return err
	}
	if len(vs) > 0 {
		return fmt.Errorf("ledger invariants broken: %+v", vs)
	}
	return nil
}

// drainResult is the overdraw check: a user holding Drain credits receives
// 1.5× as many concurrent debits of 1.
type drainResult struct {
	Credits, Requests, Created, Refused, Other int
	Balance                                    int64
}

func drainCheck(ctx context.Context, c config, store *postgres.Store, db *bun.DB, svc *service) (drainResult, error) {
	const user = "user_benchdrain"
	now := time.Now()
	if _, err := store.EnsureUser(ctx, ledger.ClerkUser{ID: user, CreatedAt: now, UpdatedAt: now}, 20, false); err != nil {
		return drainResult{}, err
	}
	if c.Drain > 20 {
		if err := grant(ctx, store, user, "drain", int64(c.Drain-20)); err != nil {
			return drainResult{}, err
		}
	}
	d := drainResult{Credits: max(c.Drain, 20), Requests: max(c.Drain, 20) * 3 / 2}
	logf("overdraw check: %d concurrent debits of 1 against %d credits", d.Requests, d.Credits)
	r, err := apiLoad(ctx, svc.api, svc.key, "drain", c.Clients, d.Requests, func(int) string { return user })
	if err != nil {
		return d, err
	}
	d.Created, d.Refused = r.Statuses[http.StatusCreated], r.Statuses[http.StatusConflict]
	d.Other = d.Requests - d.Created - d.Refused
	if err := db.QueryRowContext(ctx, "SELECT available_credits FROM users WHERE clerk_id = ?", user).Scan(&d.Balance); err != nil {
		return d, err
	}
	if d.Created != d.Credits || d.Refused != d.Requests-d.Credits || d.Balance != 0 {
		return d, fmt.Errorf("overdraw check: %d debits succeeded, %d refused, %d otherwise, balance %d; want %d, %d, 0, 0",
			d.Created, d.Refused, d.Other, d.Balance, d.Credits, d.Requests-d.Credits)
	}
	return d, checkInvariants(ctx, db)
}
