//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/uptrace/bun"

	"github.com/creditgate/creditgate/pkg/clerk/clerkfake"
	"github.com/creditgate/creditgate/pkg/metricstest"
	"github.com/creditgate/creditgate/pkg/postgres"
)

// One ordered flow: the disruptive specs (chaos, upgrade) run last, and a
// failure does not skip the rest.
var _ = Describe("creditgate on Kubernetes", Ordered, ContinueOnFailure, func() {
	var s *sender
	BeforeAll(func() {
		s = newSender(env.webhookURL, env.secret, compressedSchedule)
	})

	It("grants 20 credits for a signed user.created and writes Clerk's metadata once", Label(LabelSmoke), func(ctx SpecContext) {
		id := uid("smoke", 0)
		env.fake.AddUser(fakeUser(id))
		a := s.post(ctx, userCreated("msg_"+id, id, id+"@example.com", time.Now().UnixMilli()), time.Now(), nil)
		Expect(a.Err).NotTo(HaveOccurred())
		Expect(a.Status).To(Equal(http.StatusOK), a.Body)
		Expect(a.Body).To(ContainSubstring(`"credits_granted":20`))
		available, signups := creditsOf(ctx, id)
		Expect(available).To(Equal(int64(20)))
		Expect(signups).To(Equal(1))
		Eventually(func() int { return env.fake.MetadataWrites(id) }).Should(Equal(1))
		Consistently(func() int { return env.fake.MetadataWrites(id) }).Should(Equal(1))
		u, _ := env.fake.User(id)
		Expect(u.PublicMetadata).To(HaveKeyWithValue("creditgate", HaveKeyWithValue("signup_credits", BeNumerically("==", 20))))
		Expect(ledgerInvariants(ctx)).To(BeEmpty())
	}, SpecTimeout(5*time.Minute))

	It("keeps the counters on /metrics in step with what was sent", Label(LabelMetrics), func(ctx SpecContext) {
		before := scrapeOutcomes()
		var sent = map[string]int{}
		for i := range 5 {
			id := uid("metrics", i)
			env.fake.AddUser(fakeUser(id))
			a := s.post(ctx, userCreated("msg_"+id, id, "", time.Now().UnixMilli()), time.Now(), nil)
			Expect(a.Status).To(Equal(http.StatusOK), a.Body)
			sent["processed"]++
			a = s.post(ctx, userCreated("msg_"+id, id, "", time.Now().UnixMilli()), time.Now(), nil)
			Expect(a.Status).To(Equal(http.StatusOK), a.Body)
			sent["duplicate"]++
		}
		a := s.post(ctx, message{ID: "msg_metrics_ignored_" + tag(), Body: []byte(`{"type":"session.created","data":{"id":"sess_1"}}`)}, time.Now(), nil)
		Expect(a.Status).To(Equal(http.StatusOK))
		sent["ignored"]++
		a = s.post(ctx, message{ID: "msg_metrics_bad_" + tag(), Body: []byte(`{"type":"user.created","data":{}}`)}, time.Now(), nil)
		Expect(a.Status).To(Equal(http.StatusBadRequest))
		sent["rejected"]++
		a = s.post(ctx, message{ID: "msg_metrics_unauth_" + tag(), Body: []byte(`{}`)}, time.Now().Add(-time.Hour), nil)
		Expect(a.Status).To(Equal(http.StatusUnauthorized))
		sent["unauthorized"]++

		after := scrapeOutcomes()
		for outcome, n := range sent {
			Expect(after[outcome]-before[outcome]).To(Equal(float64(n)), "outcome %s", outcome)
		}
	})

	It("grants one credit for duplicates: sequential, 50 concurrent, and different svix-ids", Label(LabelIdempotency), func(ctx SpecContext) {
		seqUser, concUser, manyUser := uid("dup", 0), uid("dup", 1), uid("dup", 2)
		env.fake.AddUsers(fakeUser(seqUser), fakeUser(concUser), fakeUser(manyUser))
		m := userCreated("msg_"+seqUser, seqUser, "", time.Now().UnixMilli())
		for range 5 {
			Expect(s.post(ctx, m, time.Now(), nil).Status).To(Equal(http.StatusOK))
		}
		concurrently(50, func(i int) attempt {
			return s.post(ctx, userCreated("msg_"+concUser, concUser, "", time.Now().UnixMilli()), time.Now(), nil)
		})
		concurrently(20, func(i int) attempt {
			return s.post(ctx, userCreated(fmt.Sprintf("msg_%s_%d", manyUser, i), manyUser, "", time.Now().UnixMilli()), time.Now(), nil)
		})
		for _, id := range []string{seqUser, concUser, manyUser} {
			available, signups := creditsOf(ctx, id)
			Expect(available).To(Equal(int64(20)), id)
			Expect(signups).To(Equal(1), id)
		}
		Expect(count(ctx, "SELECT count(*) FROM webhook_events WHERE clerk_user_id = ?", manyUser)).To(Equal(20))
		Expect(ledgerInvariants(ctx)).To(BeEmpty())
	})

	It("ends out-of-order lifecycle events in the right state", Label(LabelLifecycle), func(ctx SpecContext) {
		now := time.Now().UnixMilli()
		early, late, moved := uid("life", 0), uid("life", 1), uid("life", 2)
		env.fake.AddUsers(fakeUser(late), fakeUser(moved))
		steps := []message{
			// deleted before created: ends deleted, never credited
			userDeleted("msg_del_"+early, early),
			userCreated("msg_cre_"+early, early, "early@example.com", now),
			// updated before created: newest email wins, one credit
			userUpdated("msg_upd_"+late, late, "new@example.com", now+2000),
			userCreated("msg_cre_"+late, late, "old@example.com", now),
			// created then deleted: credited, then forfeited
			userCreated("msg_cre_"+moved, moved, "moved@example.com", now),
			userDeleted("msg_del_"+moved, moved),
		}
		for _, m := range steps {
			Expect(s.post(ctx, m, time.Now(), nil).Status).To(Equal(http.StatusOK), m.ID)
		}
		type state struct {
			Deleted   bool
			Email     string
			Available int64
			Signups   int
		}
		get := func(id string) state {
			var st state
			var rows []struct {
				Deleted   bool    `bun:"deleted"`
				Email     *string `bun:"email"`
				Available int64   `bun:"available_credits"`
			}
			Expect(env.db.NewRaw("SELECT deleted_at IS NOT NULL AS deleted, email, available_credits FROM users WHERE clerk_id = ?", id).Scan(ctx, &rows)).To(Succeed())
			Expect(rows).To(HaveLen(1))
			st.Deleted, st.Available = rows[0].Deleted, rows[0].Available
			if rows[0].Email != nil {
				st.Email = *rows[0].Email
			}
			_, st.Signups = creditsOf(ctx, id)
			return st
		}
		Expect(get(early)).To(Equal(state{Deleted: true}))
		Expect(get(late)).To(Equal(state{Email: "new@example.com", Available: 20, Signups: 1}))
		Expect(get(moved)).To(Equal(state{Deleted: true, Signups: 1}))
		Expect(ledgerInvariants(ctx)).To(BeEmpty())
	})

	It("refuses bad input over real HTTP and changes nothing", Label(LabelSecurity), func(ctx SpecContext) {
		// Every delivery names a user and a svix-id of its own, and the spec
		// reads what each one did from those rows alone: the webhook pods'
		// outbox workers (and anything else) may write to the same tables
		// meanwhile, and that is not what this spec tests.
		signed := func(i int) (user string, m message) {
			user = uid("sec", i)
			return user, userCreated("msg_"+user, user, "", time.Now().UnixMilli())
		}
		// Each refused delivery is a valid user.created for a new user that
		// would be credited if it got through.
		type refusal struct {
			name   string
			at     time.Time
			mutate func(*http.Request)
			status int
			pad    bool // grow the body past the 1 MiB limit (JSON whitespace)
		}
		refusals := []refusal{
			{"bad signature", time.Now(), func(r *http.Request) {
				r.Header.Set("svix-signature", "v1,"+strings.Repeat("A", 43)+"=")
			}, http.StatusUnauthorized, false},
			{"stale timestamp", time.Now().Add(-10 * time.Minute), nil, http.StatusUnauthorized, false},
			{"future timestamp", time.Now().Add(10 * time.Minute), nil, http.StatusUnauthorized, false},
			{"missing svix-id", time.Now(), func(r *http.Request) { r.Header.Del("svix-id") }, http.StatusBadRequest, false},
			{"missing svix-timestamp", time.Now(), func(r *http.Request) { r.Header.Del("svix-timestamp") }, http.StatusBadRequest, false},
			{"missing svix-signature", time.Now(), func(r *http.Request) { r.Header.Del("svix-signature") }, http.StatusBadRequest, false},
			{"oversized body", time.Now(), nil, http.StatusRequestEntityTooLarge, true},
		}
		type sent struct{ user, svixID string }
		refused := map[string]sent{}
		for i, c := range refusals {
			user, m := signed(i)
			if c.pad {
				m.Body = append(m.Body, bytes.Repeat([]byte(" "), 1<<20)...)
			}
			a := s.post(ctx, m, c.at, c.mutate)
			Expect(a.Err).NotTo(HaveOccurred(), c.name)
			Expect(a.Status).To(Equal(c.status), "%s: %s", c.name, a.Body)
			refused[c.name] = sent{user, m.ID}
		}
		// Nothing stored for any of them, and nothing later either.
		stored := func(ctx context.Context) map[string]map[string][]string {
			out := map[string]map[string][]string{}
			for name, r := range refused {
				if rows := footprint(ctx, []string{r.user}, []string{r.svixID}); len(rows) > 0 {
					out[name] = rows
				}
			}
			return out
		}
		Consistently(ctx, stored).WithTimeout(2*time.Second).WithPolling(250*time.Millisecond).
			Should(BeEmpty(), "refused deliveries stored rows")

		// A signed body that is not JSON: 400, the abort header, and exactly
		// one rejected event holding the bytes received; no user, no credit,
		// no outbox message.
		user, m := signed(len(refusals))
		m.Body = m.Body[:len(m.Body)/2]
		Expect(m.Body).To(ContainSubstring(user))
		a := s.post(ctx, m, time.Now(), nil)
		Expect(a.Err).NotTo(HaveOccurred())
		Expect(a.Status).To(Equal(http.StatusBadRequest), a.Body)
		Expect(a.Header.Get("webhook-delivery")).To(Equal("abort-message"))
		rows := footprint(ctx, []string{user}, []string{m.ID})
		Expect(rows).To(HaveLen(1), "only the event is stored: %v", rows)
		Expect(rows).To(HaveKeyWithValue("webhook_events", HaveLen(1)))
		Expect(count(ctx, "SELECT count(*) FROM webhook_events WHERE svix_id = ? AND status = 'rejected' AND raw_body = ?", m.ID, m.Body)).
			To(Equal(1), "the rejected event keeps the bytes received: %v", rows)
	})

	It("runs as a runtime role that can neither change the schema nor rewrite the ledger", Label(LabelSecurity), func(ctx SpecContext) {
		if env.runtimeRole == "" {
			Skip("one database role (E2E_DATABASE_URL): nothing to check")
		}
		// The pods' connections are the runtime role's (the migrations Job,
		// the schema owner, has finished).
		id := uid("role", 0)
		env.fake.AddUser(fakeUser(id))
		a := s.post(ctx, userCreated("msg_"+id, id, "", time.Now().UnixMilli()), time.Now(), nil)
		Expect(a.Status).To(Equal(http.StatusOK), a.Body)
		var users []string
		Expect(env.db.NewRaw(`SELECT DISTINCT usename FROM pg_stat_activity
			WHERE datname = 'creditgate' AND application_name = 'creditgate' AND usename IS NOT NULL`).Scan(ctx, &users)).To(Succeed())
		Expect(users).To(Equal([]string{env.runtimeRole}))

		// And that role cannot change the schema or the ledger, even
		// directly (not only through the service's statements).
		u, err := url.Parse(env.dbURL)
		Expect(err).NotTo(HaveOccurred())
		u.User = url.User(env.runtimeRole)
		rt, err := postgres.Open(u.String(), postgres.Options{MaxConns: 1})
		Expect(err).NotTo(HaveOccurred())
		defer rt.Close()
		for _, stmt := range []string{
			"CREATE TABLE evil (id int)",
			"ALTER TABLE users DROP CONSTRAINT users_available_credits_check",
			"UPDATE credit_transactions SET amount = amount + 1",
			"DELETE FROM credit_transactions",
			"TRUNCATE credit_transactions",
		} {
			_, err := rt.ExecContext(ctx, stmt)
			pgErr, ok := errors.AsType[*pgconn.PgError](err)
			Expect(ok).To(BeTrue(), "%s: %v", stmt, err)
			Expect(pgErr.Code).To(Equal("42501"), "%s: %v", stmt, err)
		}
		available, signups := creditsOf(ctx, id)
		Expect(available).To(Equal(int64(20)))
		Expect(signups).To(Equal(1))
	})

	It("heals a user without a signup credit and a failed event with a Job from the CronJob", Label(LabelReconciler), func(ctx SpecContext) {
		lost, failed := uid("rec", 0), uid("rec", 1)
		_, err := env.db.ExecContext(ctx, "INSERT INTO users (clerk_id) VALUES (?)", lost)
		Expect(err).NotTo(HaveOccurred())
		body := userCreated("msg_"+failed, failed, failed+"@example.com", time.Now().UnixMilli()).Body
		_, err = env.db.ExecContext(ctx, `INSERT INTO webhook_events (svix_id, event_type, clerk_user_id, payload, status, attempts, last_error, received_at)
			VALUES (?, 'user.created', ?, ?::jsonb, 'failed', 1, 'connection reset (e2e)', now() - interval '1 hour')`, "msg_"+failed, failed, string(body))
		Expect(err).NotTo(HaveOccurred())
		env.fake.AddUser(fakeUser(lost))
		env.fake.AddUser(fakeUser(failed))

		summary := runReconcilerJob("e2e-reconcile-1-" + tag())
		Expect(summary["outcome"]).To(Equal("success"))
		for _, id := range []string{lost, failed} {
			available, signups := creditsOf(ctx, id)
			Expect(available).To(Equal(int64(20)), id)
			Expect(signups).To(Equal(1), id)
		}
		Expect(count(ctx, "SELECT count(*) FROM webhook_events WHERE svix_id = ? AND status = 'processed'", "msg_"+failed)).To(Equal(1))
		// Each grant's Clerk metadata write, by the Job or by a webhook pod's
		// outbox worker, whichever claimed it: once each, and recorded.
		ids := []string{lost, failed}
		metadataWrites := func() []int { return []int{env.fake.MetadataWrites(lost), env.fake.MetadataWrites(failed)} }
		Eventually(metadataWrites).Should(Equal([]int{1, 1}))
		Eventually(ctx, func(ctx context.Context) int {
			return count(ctx, "SELECT count(*) FROM clerk_metadata_outbox WHERE clerk_id IN (?) AND status = 'delivered'", bun.List(ids))
		}).Should(Equal(2))

		// A second run finds nothing to heal: no grant anywhere, and these
		// users' rows exactly as they were (read from their rows alone, so
		// the outbox workers delivering other specs' writes do not count).
		before := footprint(ctx, ids, []string{"msg_" + failed})
		summary = runReconcilerJob("e2e-reconcile-2-" + tag())
		Expect(summary["outcome"]).To(Equal("success"))
		for _, pass := range []string{"events", "backfill", "signup"} {
			Expect(summary[pass]).To(HaveKeyWithValue("done", BeNumerically("==", 0)), "the second reconcile's %s pass", pass)
		}
		Expect(footprint(ctx, ids, []string{"msg_" + failed})).To(Equal(before), "a second reconcile changed the healed users' rows")
		Expect(metadataWrites()).To(Equal([]int{1, 1}), "a second reconcile wrote Clerk's metadata again")
		Expect(ledgerInvariants(ctx)).To(BeEmpty())
	}, SpecTimeout(8*time.Minute))

	It("loses nothing when a webhook pod is deleted, or PostgreSQL restarts, mid-load", Label(LabelChaos), func(ctx SpecContext) {
		for k, disruption := range []struct {
			name string
			do   func()
		}{
			{"delete a webhook pod", func() {
				pods := webhookPods()
				Expect(pods).NotTo(BeEmpty())
				kubectl("delete", "pod", pods[0], "--wait=false")
			}},
			{"restart PostgreSQL", func() { env.restartDB(ctx) }},
		} {
			By(disruption.name + " in the middle of a 2,000-user load")
			const users = 2000
			prefix := fmt.Sprintf("chaos%d", k)
			like := fmt.Sprintf("user_%s_%s_%%", tag(), prefix)
			msgs := make([]message, users)
			for i := range users {
				id := uid(prefix, i)
				env.fake.AddUser(fakeUser(id))
				msgs[i] = userCreated("msg_"+id, id, "", time.Now().UnixMilli())
			}
			cs := newSender(env.webhookURL, env.secret, compressedSchedule)
			var failed []string
			done := make(chan struct{})
			go func() {
				defer GinkgoRecover()
				defer close(done)
				failed = cs.deliverAll(ctx, msgs, 32)
			}()
			// Poll finely: at full speed the whole load takes a couple of seconds,
			// and the disruption must land in its middle, not after it.
			Eventually(func() int64 { return cs.Counts().Attempts }).WithTimeout(time.Minute).WithPolling(5 * time.Millisecond).
				Should(BeNumerically(">", users/3))
			select {
			case <-done:
				Fail(disruption.name + ": the load finished before the disruption began")
			default:
			}
			began := cs.Counts().Attempts
			disruption.do()
			<-done
			Expect(cs.Counts().Attempts).To(BeNumerically(">", began), "no delivery attempt after the disruption began")
			GinkgoWriter.Printf("%s: began after %d of %d attempts\n", disruption.name, began, cs.Counts().Attempts)
			GinkgoWriter.Printf("%s: %d attempts, %d non-2xx, %d transport errors, statuses %v\n",
				disruption.name, cs.Counts().Attempts, cs.Counts().Non2xx, cs.Counts().TransportErrors, cs.Counts().Statuses)
			Expect(failed).To(BeEmpty(), "deliveries that never got a 2xx after Svix-like retries:\n%s", joined(failed))

			summary := runReconcilerJob(fmt.Sprintf("e2e-chaos-%d-%s", k, tag()))
			Expect(summary["outcome"]).To(Or(Equal("success"), Equal("partial")))
			Expect(count(ctx, "SELECT count(*) FROM users WHERE clerk_id LIKE ?", like)).To(Equal(users))
			Expect(count(ctx, "SELECT count(*) FROM credit_transactions WHERE reason = 'signup_bonus' AND clerk_id LIKE ?", like)).
				To(Equal(users), "every user exactly one signup credit")
			Expect(count(ctx, "SELECT count(*) FROM users WHERE clerk_id LIKE ? AND available_credits <> 20", like)).To(Equal(0))
			Expect(ledgerInvariants(ctx)).To(BeEmpty())
			kubectl("wait", "--for=condition=Ready", "pod", "-l", "app.kubernetes.io/component=webhook", "--timeout=180s")
		}
	}, SpecTimeout(20*time.Minute))

	It("rolls out a chart upgrade under steady load with zero non-2xx answers", Label(LabelUpgrade), func(ctx SpecContext) {
		us := newSender(env.webhookURL, env.secret, nil)
		stop := make(chan struct{})
		var sent, noAnswer atomic.Int64
		var wg sync.WaitGroup
		var bad []string
		var mu sync.Mutex
		for w := range 4 {
			wg.Add(1)
			go func() {
				defer GinkgoRecover()
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					id := uid(fmt.Sprintf("upg%d", w), i)
					env.fake.AddUser(fakeUser(id))
					a := us.postAnswered(ctx, userCreated("msg_"+id, id, "", time.Now().UnixMilli()), &noAnswer)
					sent.Add(1)
					if a.Err != nil || a.Status != http.StatusOK {
						mu.Lock()
						bad = append(bad, fmt.Sprintf("%s: %d %v", id, a.Status, a.Err))
						mu.Unlock()
					}
					time.Sleep(20 * time.Millisecond)
				}
			}()
		}
		// The load is flowing before the upgrade starts, and keeps flowing
		// until every old pod has drained and exited, and a while after.
		Eventually(sent.Load).WithTimeout(time.Minute).Should(BeNumerically(">=", 100), "deliveries before the upgrade")
		oldPods := strings.Fields(kubectl("get", "pods", "-o", "name",
			"-l", "app.kubernetes.io/component=webhook,app.kubernetes.io/instance="+env.release))
		Expect(oldPods).NotTo(BeEmpty())
		out := installChart("webhook.podAnnotations.e2e-rollout=" + tag())
		GinkgoWriter.Println(out)
		kubectl("rollout", "status", "deployment/"+env.release, "--timeout=5m")
		kubectl(append([]string{"wait", "--for=delete", "--timeout=3m"}, oldPods...)...)
		after := sent.Load()
		Eventually(sent.Load).WithTimeout(time.Minute).Should(BeNumerically(">=", after+100), "deliveries after the old pods are gone")
		close(stop)
		wg.Wait()
		GinkgoWriter.Printf("upgrade: %d deliveries during the rollout, %d attempts without an answer (retried)\n", sent.Load(), noAnswer.Load())
		Expect(sent.Load()).To(BeNumerically(">", 100))
		Expect(bad).To(BeEmpty(), "non-2xx answers during the rollout:\n%s", joined(bad))
		Expect(ledgerInvariants(ctx)).To(BeEmpty())
	}, SpecTimeout(10*time.Minute))
})

// concurrently runs f n times at once and expects every answer to be a 200.
func concurrently(n int, f func(i int) attempt) {
	GinkgoHelper()
	var wg sync.WaitGroup
	answers := make([]attempt, n)
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			answers[i] = f(i)
		}()
	}
	close(start)
	wg.Wait()
	for i, a := range answers {
		Expect(a.Err).NotTo(HaveOccurred(), "request %d", i)
		Expect(a.Status).To(Equal(http.StatusOK), "request %d: %s", i, a.Body)
	}
}

// scrapeOutcomes sums creditgate_webhook_deliveries_total by outcome over
// the ready webhook pods, read with Prometheus' own text parser.
func scrapeOutcomes() map[string]float64 {
	GinkgoHelper()
	sum := map[string]float64{}
	for _, pod := range webhookPods() {
		p := expfmt.NewTextParser(model.UTF8Validation)
		mfs, err := p.TextToMetricFamilies(strings.NewReader(podMetrics(pod)))
		Expect(err).NotTo(HaveOccurred())
		g := prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) { return slices.Collect(maps.Values(mfs)), nil })
		for outcome, v := range metricstest.ByLabel(GinkgoT(), g, "creditgate_webhook_deliveries_total", "outcome") {
			sum[outcome] += v
		}
	}
	return sum
}

func fakeUser(id string) clerkfake.User {
	return clerkfake.User{ID: id, CreatedAt: time.Now().Add(-time.Minute)}
}
