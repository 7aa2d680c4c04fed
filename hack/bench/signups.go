package main

import (
	"cmp"
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/creditgate/creditgate/pkg/clerk"
	"github.com/creditgate/creditgate/pkg/clerk/clerkevent"
	"github.com/creditgate/creditgate/pkg/ledger"
	"github.com/creditgate/creditgate/pkg/webhook/svixsender"
)

// runSignups measures the webhook's hot path (a signed user.created for a new
// user, answered once its signup credits are committed) at each number of
// senders, against pgbench running the statement the service sends.
func (b *bench) runSignups(ctx context.Context) error {
	// The SQL of one new user, as the service sends it: the store's own code
	// run once with the capture on. token varies per new user (svix id, user
	// id, email, signup key, inside the body too): it becomes a variable.
	const token = "capturebench"
	svc := &ledger.Service{Store: b.store, Decode: clerk.Decode, SignupCredits: ledger.DefaultSignupCredits}
	user := "user_" + token
	body := clerkevent.Event{Type: clerkevent.UserCreated, UserID: user, Email: clerkevent.EmailFor(user)}.MustBody()
	stmts, err := b.hook.record(func() error {
		res, err := svc.Process(ctx, ledger.Delivery{SvixID: "msg_" + token, Body: body, ReceivedAt: time.Now()})
		if err == nil && res.CreditsGranted != ledger.DefaultSignupCredits {
			err = fmt.Errorf("the captured delivery granted %d credits: %+v", res.CreditsGranted, res)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("capture a new user: %w", err)
	}
	logf("a new user is %d statement(s) in %d round trip(s)", len(stmts), trips(stmts))
	if err := b.writeScripts(stmts, "signup", "\\set cg_n random(1, 9000000000000000000)\n",
		[]*marker{{value: token, expr: ":cg_n::text", text: true}}); err != nil {
		return err
	}
	service, err := b.startService(ctx, b.script("signup", "prepared"))
	if err != nil || service == nil {
		return err
	}
	defer service.stop()

	var results []result
	for _, n := range b.Senders {
		sender, err := svixsender.New(service.hook, service.secret, svixsender.Options{Conns: n, Lean: b.Client == "lean", Timeout: 30 * time.Second})
		if err != nil {
			return err
		}
		gen := &svixsender.Generator{EventType: clerkevent.UserCreated, InstanceID: clerkevent.NewID("ins"), Unique: true}
		rs, err := b.rows(ctx, service, fmt.Sprintf("%d senders", n), n, http.StatusOK, "signup", fmt.Sprintf("signup-%d", n),
			func(k int, run string) (result, error) {
				// The bodies of measured runs are built before the clock starts.
				lr, err := svixsender.Load(ctx, sender, gen, k, n, run == "run")
				return result{Ops: lr.Sent(), Latencies: lr.Latencies(), Statuses: lr.Statuses(), Elapsed: lr.Elapsed()}, err
			})
		if err != nil {
			return err
		}
		results = append(results, rs...)
	}
	// Every delivery made one user with its signup credits, once (not pgtest's
	// full invariant check: over a run's ~150,000 users it takes many minutes).
	var users, credited, other, entries int
	if err := b.db.QueryRowContext(ctx, `SELECT (SELECT count(*) FROM users),
		(SELECT count(DISTINCT user_id) FROM credit_transactions WHERE reason = 'signup_bonus' AND amount = ?),
		(SELECT count(*) FROM users WHERE available_credits <> ? OR used_credits <> 0),
		(SELECT count(*) FROM credit_transactions)`,
		ledger.DefaultSignupCredits, ledger.DefaultSignupCredits).Scan(&users, &credited, &other, &entries); err != nil ||
		users != credited || entries != users || other != 0 {
		return cmp.Or(err, fmt.Errorf("%d users, %d with a signup credit, %d ledger entries, %d with a balance other than %d",
			users, credited, entries, other, ledger.DefaultSignupCredits))
	}
	return b.report("signups", renderSignupReport(b.config, results, users))
}

// renderSignupReport is the webhook's Markdown: the runs, issue 12's targets.
func renderSignupReport(c config, rs []result, users int) string {
	var b strings.Builder
	writeRuns(&b, c, fmt.Sprintf("senders %v (%s), %d signed user.created per service run", c.Senders, c.Client, c.Requests),
		"senders", "events or tx", "event", "**service** (signed webhook)", 12, rs)
	var peak int64
	for i, s := range rs {
		if s.mode != "" {
			continue
		}
		peak = max(peak, s.PeakRSS)
		cpu := float64(s.ServiceCPU) / float64(time.Microsecond) / float64(s.Ops)
		target(&b, cpu < 150, "%s: service CPU < 150 µs per new event | **%.0f µs**", s.Name, cpu)
		if i+1 < len(rs) && rs[i+1].mode != "" && s.Clients == 16 {
			p := rs[i+1]
			ratio := s.rate() / p.rate()
			target(&b, ratio >= 0.7, "%s: ≥ 0.7 × pgbench `-M prepared` running the same statement | %.0f / %.0f = **%.2f**",
				s.Name, s.rate(), p.rate(), ratio)
		}
		if s.Clients == 64 {
			p99 := s.pct(0.99)
			target(&b, p99 < 50*time.Millisecond, "%s: p99 < 50 ms | **%s ms**", s.Name, ms(p99))
		}
	}
	target(&b, peak < 64e6, "peak RSS < 64 MB | **%.1f MB**", float64(peak)/1e6)
	fmt.Fprintf(&b, "| every event one user with its signup credits, once | %d users, %d signup credits; invariants hold | met |\n", users, users)
	return b.String()
}
