//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"

	"github.com/creditgate/creditgate/e2e/promconfig"
	"github.com/creditgate/creditgate/pkg/clerk/clerkfake"
)

// monitoringValues install the chart as a team with kube-prometheus-stack
// would (ServiceMonitor, PrometheusRule, dashboard), with every timing the
// spec waits on shortened through chart values — never by editing a rule:
// scrapes and rule evaluation every 5 s, the backlog gauges re-read every
// 2 s, each driven alert's `for` (and the age alerts' thresholds) cut to
// seconds, the reconciler CronJob every minute with a 5 s grace and its
// metrics pushed to the spec's Pushgateway.
func monitoringValues(pushgateway string) []string {
	overrides := map[string]map[string]any{
		"CreditgateWebhookDown":          {"for": "15s"},
		"CreditgateLedgerDrift":          {"for": "10s"},
		"CreditgateBacklogQueryFailing":  {"for": "15s"},
		"CreditgateWebhookErrors":        {"for": "10s"},
		"CreditgateAPIErrors":            {"for": "10s"},
		"CreditgateWebhookEventsFailed":  {"for": "10s"},
		"CreditgateWebhookEventStuck":    {"for": "10s", "threshold": 20},
		"CreditgateOutboxBacklog":        {"for": "10s", "threshold": 20},
		"CreditgateReconcilerStale":      {"for": "10s", "threshold": 120},
		"CreditgateCreditsExpiryBacklog": {"for": "10s"},
	}
	b, err := json.Marshal(overrides)
	Expect(err).NotTo(HaveOccurred())
	return []string{
		"--set", "monitoring.serviceMonitor.enabled=true",
		"--set", "monitoring.serviceMonitor.interval=5s",
		"--set", "monitoring.serviceMonitor.scrapeTimeout=4s",
		"--set", "monitoring.prometheusRule.enabled=true",
		"--set", "monitoring.prometheusRule.interval=5s",
		"--set", "monitoring.grafanaDashboard.enabled=true",
		"--set-json", "monitoring.alerts.overrides=" + string(b),
		// No kube-state-metrics in this cluster: its one alert is left out
		// the way docs/chart.md tells such users to.
		"--set-json", `monitoring.alerts.disabled=["CreditgateReconcilerCronJobStale"]`,
		"--set", "config.backlogRefresh=2s",
		"--set", "reconciler.suspend=false",
		"--set-string", "reconciler.schedule=* * * * *",
		"--set", "reconciler.config.grace=5s",
		"--set-string", "reconciler.config.pushgatewayURL=http://" + pushgateway,
	}
}

// A real Prometheus scraping the release as its ServiceMonitor says and
// evaluating its PrometheusRule: every critical alert and the backlog ones go
// pending, firing and resolved under the real fault; then every dashboard
// panel's query returns data.
var _ = Describe("alerts and dashboard against a real Prometheus", Ordered, ContinueOnFailure, Label(LabelMonitoring), func() {
	var (
		prom     *promServer
		timeline *alertTimeline
		s        *sender
		started  time.Time
		cycles   []alertCycle
		cyclesMu sync.Mutex
		crit     []string
	)
	driven := []string{
		"CreditgateWebhookDown", "CreditgateLedgerDrift", "CreditgateBacklogQueryFailing",
		"CreditgateWebhookErrors", "CreditgateAPIErrors", "CreditgateWebhookEventsFailed",
		"CreditgateWebhookEventStuck", "CreditgateOutboxBacklog", "CreditgateReconcilerStale",
		"CreditgateCreditsExpiryBacklog",
	}

	// quiet waits until the alerts are inactive (a cause must start from
	// there; an earlier phase's may still be resolving).
	quiet := func(ctx context.Context, names ...string) {
		GinkgoHelper()
		Eventually(func() []string {
			var active []string
			for _, n := range names {
				if timeline.State(n) != "inactive" {
					active = append(active, n+"="+timeline.State(n))
				}
			}
			return active
		}).WithContext(ctx).WithTimeout(4*time.Minute).WithPolling(time.Second).Should(BeEmpty(), "alerts still active before the cause")
	}
	// firing waits until each alert fires, having gone pending first, after
	// the cause.
	firing := func(ctx context.Context, cause time.Time, timeout time.Duration, names ...string) {
		GinkgoHelper()
		Eventually(func() map[string]string {
			states := map[string]string{}
			for _, n := range names {
				if st := timeline.State(n); st != "firing" {
					states[n] = st
				}
			}
			return states
		}).WithContext(ctx).WithTimeout(timeout).WithPolling(time.Second).Should(BeEmpty(), "alerts not firing")
		for _, n := range names {
			p, okP := timeline.First(n, "pending", cause)
			f, okF := timeline.First(n, "firing", cause)
			Expect(okP && okF && !f.Before(p)).To(BeTrue(), "%s: want pending then firing after the cause, got pending %v (%v) firing %v (%v)", n, p, okP, f, okF)
		}
	}
	// resolved waits until each alert is inactive again after the heal, and
	// records its cycle.
	resolved := func(ctx context.Context, cause, healed time.Time, what string, timeout time.Duration, names ...string) {
		GinkgoHelper()
		Eventually(func() []string {
			var active []string
			for _, n := range names {
				if timeline.State(n) != "inactive" {
					active = append(active, n)
				}
			}
			return active
		}).WithContext(ctx).WithTimeout(timeout).WithPolling(time.Second).Should(BeEmpty(), "alerts not resolved")
		cyclesMu.Lock()
		defer cyclesMu.Unlock()
		for _, n := range names {
			p, _ := timeline.First(n, "pending", cause)
			f, _ := timeline.First(n, "firing", cause)
			r, ok := timeline.First(n, "inactive", healed)
			Expect(ok).To(BeTrue(), "%s never went inactive after the heal", n)
			cycles = append(cycles, alertCycle{Alert: n, Cause: what, CausedAt: cause, Pending: p, Firing: f, HealedAt: healed, Resolved: r})
		}
	}

	BeforeAll(func(ctx SpecContext) {
		promBin, pgwBin, crds := os.Getenv("E2E_PROMETHEUS"), os.Getenv("E2E_PUSHGATEWAY"), os.Getenv("E2E_OPERATOR_CRDS")
		if promBin == "" || pgwBin == "" || crds == "" {
			Skip("E2E_PROMETHEUS, E2E_PUSHGATEWAY and E2E_OPERATOR_CRDS are not set (hack/e2e.sh sets them)")
		}
		if env.pg == nil || env.runtimeRole == "" {
			Skip("the monitoring spec stops the suite's own PostgreSQL and changes its runtime role's grants; an external E2E_DATABASE_URL has neither")
		}
		started = time.Now()
		s = newSender(env.webhookURL, env.secret, compressedSchedule)
		dir := GinkgoT().TempDir()

		By("applying the Prometheus Operator's CRDs (from its Go module)")
		run(env.kubectl, "apply", "--server-side", "-f", crds+"/monitoring.coreos.com_servicemonitors.yaml",
			"-f", crds+"/monitoring.coreos.com_prometheusrules.yaml")
		run(env.kubectl, "wait", "--for=condition=established", "--timeout=60s",
			"crd/servicemonitors.monitoring.coreos.com", "crd/prometheusrules.monitoring.coreos.com")

		By("starting a Pushgateway where the reconciler's pods reach it")
		pgw := freeAddr(env.hostIP)
		startProcess(pgwBin, dir+"/pushgateway.log", "--web.listen-address="+pgw)

		By("installing the chart with monitoring on")
		installChartFlags(monitoringValues(pgw)...)
		DeferCleanup(func() {
			By("restoring the suite's chart values")
			installChart()
		})

		By("starting Prometheus with the cluster's ServiceMonitor and PrometheusRule, translated")
		prom = startPrometheus(ctx, promBin, dir, promconfig.ScrapeConfig{
			JobName: "pushgateway", HonorLabels: true, ScrapeInterval: "5s", ScrapeTimeout: "4s",
			StaticConfigs: []promconfig.StaticConfig{{Targets: []string{pgw}}},
		})
		watchCtx, stop := context.WithCancel(context.Background())
		DeferCleanup(stop)
		timeline = watchAlerts(watchCtx, prom)
		DeferCleanup(func() {
			GinkgoWriter.Printf("\nalert cycles:\n%s", formatCycles(cycles))
			AddReportEntry("alert cycles", formatCycles(cycles))
		})

		// The PrometheusRule's critical alerts must all be driven here.
		var prs monitoringv1.PrometheusRuleList
		Expect(json.Unmarshal([]byte(kubectl("get", "prometheusrules.monitoring.coreos.com", "-l", "app.kubernetes.io/instance="+env.release, "-o", "json")), &prs)).To(Succeed())
		for _, g := range prs.Items[0].Spec.Groups {
			for _, r := range g.Rules {
				if r.Labels["severity"] == "critical" {
					crit = append(crit, r.Alert)
				}
			}
		}
		Expect(crit).NotTo(BeEmpty())
		for _, c := range crit {
			Expect(driven).To(ContainElement(c), "critical alert %s has no fault in this spec", c)
		}

		By("waiting until Prometheus scrapes every webhook pod, labelled as the alerts select")
		Eventually(func(g Gomega) {
			ts, err := prom.targets(ctx)
			g.Expect(err).NotTo(HaveOccurred())
			up := 0
			for _, t := range ts {
				if t.Labels["job"] == env.release && t.Labels["namespace"] == env.namespace && t.Health == "up" {
					up++
				}
			}
			g.Expect(up).To(Equal(len(webhookPods())), "targets: %+v", ts)
		}).WithContext(ctx).WithTimeout(2 * time.Minute).WithPolling(time.Second).Should(Succeed())
		By("waiting for a reconciler run from the CronJob, pushed to the Pushgateway")
		Eventually(func() (int, error) {
			_, n, err := prom.queryRange(ctx, `creditgate_reconcile_last_success_timestamp_seconds{namespace="`+env.namespace+`",job="`+env.release+`"}`, time.Now().Add(-time.Minute), time.Now(), 5*time.Second)
			return n, err
		}).WithContext(ctx).WithTimeout(3 * time.Minute).WithPolling(2 * time.Second).Should(BeNumerically(">", 0))
		GinkgoWriter.Printf("alerts active after setup: %v\n", timeline.Active())
	}, NodeTimeout(10*time.Minute))

	It("fires and resolves CreditgateWebhookDown when no webhook pod runs", func(ctx SpecContext) {
		quiet(ctx, "CreditgateWebhookDown")
		replicas := strings.TrimSpace(kubectl("get", "deployment", env.release, "-o", "jsonpath={.spec.replicas}"))
		cause := time.Now()
		kubectl("scale", "deployment/"+env.release, "--replicas=0")
		DeferCleanup(func() { kubectl("scale", "deployment/"+env.release, "--replicas="+replicas) })
		firing(ctx, cause, 3*time.Minute, "CreditgateWebhookDown")
		healed := time.Now()
		kubectl("scale", "deployment/"+env.release, "--replicas="+replicas)
		kubectl("rollout", "status", "deployment/"+env.release, "--timeout=180s")
		resolved(ctx, cause, healed, "deployment scaled to 0", 3*time.Minute, "CreditgateWebhookDown")
	}, SpecTimeout(8*time.Minute))

	It("fires and resolves CreditgateLedgerDrift when a balance is changed behind the ledger", func(ctx SpecContext) {
		quiet(ctx, "CreditgateLedgerDrift")
		id := uid("mon_drift", 0)
		env.fake.AddUser(fakeUser(id))
		a := s.post(ctx, userCreated("msg_"+id, id, "", time.Now().UnixMilli()), time.Now(), nil)
		Expect(a.Status).To(Equal(http.StatusOK), a.Body)
		// What the replaced Next.js route did: SQL on the balance, no entry.
		drift := func(by int) {
			_, err := env.db.ExecContext(ctx, "UPDATE users SET available_credits = available_credits + ? WHERE clerk_id = ?", by, id)
			Expect(err).NotTo(HaveOccurred())
		}
		cause := time.Now()
		drift(7)
		undone := false
		DeferCleanup(func() {
			if !undone {
				_, _ = env.db.ExecContext(context.Background(), "UPDATE users SET available_credits = available_credits - 7 WHERE clerk_id = ?", id)
			}
		})
		firing(ctx, cause, 3*time.Minute, "CreditgateLedgerDrift")
		healed := time.Now()
		drift(-7)
		undone = true
		resolved(ctx, cause, healed, "UPDATE users behind the ledger", 3*time.Minute, "CreditgateLedgerDrift")
		Expect(ledgerInvariants(ctx)).To(BeEmpty())
	}, SpecTimeout(8*time.Minute))

	It("fires and resolves CreditgateBacklogQueryFailing while PostgreSQL is stopped", func(ctx SpecContext) {
		quiet(ctx, "CreditgateBacklogQueryFailing")
		cause := time.Now()
		Expect(env.pg.Stop()).To(Succeed())
		running := false
		DeferCleanup(func() {
			if !running {
				_ = env.pg.Restart(context.Background())
			}
		})
		firing(ctx, cause, 3*time.Minute, "CreditgateBacklogQueryFailing")
		// The pods are unready but still scraped: no webhook-down page for a
		// database outage (a scrape missed on a busy machine may make it
		// pending for a moment; firing is the page).
		_, paged := timeline.First("CreditgateWebhookDown", "firing", cause)
		Expect(paged).To(BeFalse(), "CreditgateWebhookDown fired while only PostgreSQL was down")
		healed := time.Now()
		Expect(env.pg.Restart(ctx)).To(Succeed())
		running = true
		resolved(ctx, cause, healed, "PostgreSQL stopped", 3*time.Minute, "CreditgateBacklogQueryFailing")
		Eventually(webhookPods).WithContext(ctx).WithTimeout(2 * time.Minute).Should(HaveLen(2))
	}, SpecTimeout(8*time.Minute))

	It("fires and resolves the error-rate and backlog alerts: failing writes, a failing Clerk API, a stopped reconciler", func(ctx SpecContext) {
		backlog := []string{"CreditgateWebhookErrors", "CreditgateAPIErrors", "CreditgateWebhookEventsFailed",
			"CreditgateWebhookEventStuck", "CreditgateOutboxBacklog", "CreditgateReconcilerStale", "CreditgateCreditsExpiryBacklog"}
		quiet(ctx, backlog...)
		api := apiURL()
		client := &http.Client{Timeout: 15 * time.Second}
		call := func(method, path, body string) (int, string) {
			GinkgoHelper()
			status, b, err := apiOnce(ctx, client, api, method, path, body, newSecret())
			Expect(err).NotTo(HaveOccurred())
			return status, b
		}
		holder := uid("mon_hold", 0)
		env.fake.AddUser(fakeUser(holder))
		Expect(s.post(ctx, userCreated("msg_"+holder, holder, "", time.Now().UnixMilli()), time.Now(), nil).Status).To(Equal(http.StatusOK))

		cronjob := "cronjob/" + env.release + "-reconciler"
		suspend := func(on bool) {
			kubectl("patch", cronjob, "--type=merge", "-p", fmt.Sprintf(`{"spec":{"suspend":%t}}`, on))
		}
		grant := func(sql string) {
			_, err := env.db.ExecContext(context.Background(), fmt.Sprintf(sql, env.runtimeRole))
			Expect(err).NotTo(HaveOccurred())
		}
		healed := false
		DeferCleanup(func() {
			if !healed {
				grant("GRANT INSERT ON credit_transactions TO %s")
				env.fake.Reset()
				suspend(false)
			}
		})

		By("the reconciler stops (CronJob suspended), Clerk's API answers 500, a hold expires, and the runtime role loses INSERT on the ledger")
		cause := time.Now()
		suspend(true)
		env.fake.FailNext("PATCH /v1/users/", slices.Repeat([]clerkfake.Fault{{Status: http.StatusInternalServerError}}, 10000)...)
		outboxUser := uid("mon_outbox", 0)
		env.fake.AddUser(fakeUser(outboxUser))
		Expect(s.post(ctx, userCreated("msg_"+outboxUser, outboxUser, "", time.Now().UnixMilli()), time.Now(), nil).Status).To(Equal(http.StatusOK))
		status, body := call(http.MethodPost, "/v1/users/"+holder+"/holds", `{"amount":1,"ttl_seconds":1,"reason":"e2e_expiry"}`)
		Expect(status).To(Equal(http.StatusCreated), body)
		grant("REVOKE INSERT ON credit_transactions FROM %s")

		// Failing traffic until the error alerts fire: signups (which
		// Svix would retry) and debits, each answered 5xx.
		failedDeliveries, failedDebits := 0, 0
		errorAlerts := []string{"CreditgateWebhookErrors", "CreditgateAPIErrors", "CreditgateWebhookEventsFailed", "CreditgateWebhookEventStuck"}
		for i := 0; ; i++ {
			id := uid("mon_fail", i)
			env.fake.AddUser(fakeUser(id))
			a := s.post(ctx, userCreated("msg_"+id, id, "", time.Now().UnixMilli()), time.Now(), nil)
			Expect(a.Status).To(BeNumerically(">=", 500), "a signup while the ledger refuses inserts: %s", a.Body)
			failedDeliveries++
			st, b := call(http.MethodPost, "/v1/users/"+holder+"/debits", `{"amount":1,"reason":"generation"}`)
			Expect(st).To(BeNumerically(">=", 500), "a debit while the ledger refuses inserts: %s", b)
			failedDebits++
			firingNow := 0
			for _, n := range errorAlerts {
				if timeline.State(n) == "firing" {
					firingNow++
				}
			}
			if firingNow == len(errorAlerts) {
				break
			}
			Expect(time.Since(cause)).To(BeNumerically("<", 3*time.Minute), "error alerts not firing: %v", timeline.Active())
			select {
			case <-ctx.Done():
				Fail("interrupted")
			case <-time.After(1500 * time.Millisecond):
			}
		}
		GinkgoWriter.Printf("failing traffic: %d signups and %d debits answered 5xx\n", failedDeliveries, failedDebits)
		firing(ctx, cause, 4*time.Minute, backlog...)

		By("healing: INSERT granted back, Clerk answers again, the CronJob resumes; healthy traffic until every alert resolves")
		heal := time.Now()
		grant("GRANT INSERT ON credit_transactions TO %s")
		env.fake.Reset()
		suspend(false)
		healed = true
		// Production keeps sending until the 5-minute error ratios fall
		// under 5 % and the rest resolves, every answer 2xx now: debits, and
		// Clerk events for 4 users (profile updates, which write nothing to
		// Clerk, plus a signup every 2 s: new users each queue a metadata
		// write, and more of them than Clerk's rate limit drains would keep
		// the outbox backlog growing, as it would in production).
		spender := uid("mon_spend", 0)
		env.fake.AddUser(fakeUser(spender))
		Expect(s.post(ctx, userCreated("msg_"+spender, spender, "", time.Now().UnixMilli()), time.Now(), nil).Status).To(Equal(http.StatusOK))
		status, body = call(http.MethodPost, "/v1/users/"+spender+"/grants", `{"amount":1000000,"reason":"top_up"}`)
		Expect(status).To(Equal(http.StatusCreated), body)
		trafficCtx, stopTraffic := context.WithCancel(ctx)
		var wg sync.WaitGroup
		var healthyEvents, healthyDebits atomic.Int64
		// A steady rate (at most ~40 events and ~40 debits a second), not a
		// flood: two busy cores also run Prometheus, PostgreSQL and the
		// cluster, and a flood would slow the scrapes past their timeout.
		pause := func(ctx context.Context) {
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
		deliver := func(m message) {
			GinkgoHelper()
			a := s.post(trafficCtx, m, time.Now(), nil)
			if trafficCtx.Err() == nil {
				Expect(a.Status).To(Equal(http.StatusOK), a.Body)
				healthyEvents.Add(1)
			}
		}
		wg.Add(1)
		go func() {
			defer GinkgoRecover()
			defer wg.Done()
			for i := 0; trafficCtx.Err() == nil; i++ {
				id := uid("mon_ok", i)
				env.fake.AddUser(fakeUser(id))
				deliver(userCreated("msg_"+id, id, "", time.Now().UnixMilli()))
				select {
				case <-trafficCtx.Done():
				case <-time.After(2 * time.Second):
				}
			}
		}()
		for w := range 4 {
			id := uid("mon_profile", w)
			env.fake.AddUser(fakeUser(id))
			Expect(s.post(ctx, userCreated("msg_"+id, id, "", time.Now().UnixMilli()), time.Now(), nil).Status).To(Equal(http.StatusOK))
			wg.Add(2)
			go func() {
				defer GinkgoRecover()
				defer wg.Done()
				for i := 0; trafficCtx.Err() == nil; i++ {
					deliver(userUpdated(fmt.Sprintf("msg_%s_u%d", id, i), id, fmt.Sprintf("%s+%d@example.com", id, i), time.Now().UnixMilli()))
					pause(trafficCtx)
				}
			}()
			go func() {
				defer GinkgoRecover()
				defer wg.Done()
				for trafficCtx.Err() == nil {
					st, b, err := debitOnce(trafficCtx, client, api, spender, newSecret())
					if trafficCtx.Err() != nil {
						return
					}
					Expect(err).NotTo(HaveOccurred())
					Expect(st).To(Equal(http.StatusCreated), b)
					healthyDebits.Add(1)
					pause(trafficCtx)
				}
			}()
		}
		DeferCleanup(func() { stopTraffic(); wg.Wait() })
		resolved(ctx, cause, heal, "INSERT revoked, Clerk 500, CronJob suspended, hold expired", 5*time.Minute, backlog...)
		stopTraffic()
		wg.Wait()
		GinkgoWriter.Printf("healthy traffic until resolved: %d Clerk events and %d debits, all 2xx\n", healthyEvents.Load(), healthyDebits.Load())

		// The failed signups were re-run by the reconciler: each user holds
		// its signup credit, and no event of this spec is left unfinished.
		Expect(count(ctx, "SELECT count(*) FROM webhook_events WHERE clerk_user_id LIKE ? AND status IN ('failed', 'dead')", fmt.Sprintf("user_%s_mon%%", tag()))).To(Equal(0))
		for i := range failedDeliveries {
			available, signups := creditsOf(ctx, uid("mon_fail", i))
			Expect(available).To(Equal(int64(20)))
			Expect(signups).To(Equal(1))
		}
		Expect(env.fake.MetadataWrites(outboxUser)).To(BeNumerically(">=", 1))
		Expect(ledgerInvariants(ctx)).To(BeEmpty())
	}, SpecTimeout(15*time.Minute))

	It("has data for every panel of the Grafana dashboard", func(ctx SpecContext) {
		cms := kubectl("get", "configmap", env.release+"-dashboard", "-o", "json")
		var cm struct {
			Data map[string]string `json:"data"`
		}
		Expect(json.Unmarshal([]byte(cms), &cm)).To(Succeed())
		Expect(cm.Data).To(HaveLen(1))
		var dash dashboard
		for _, v := range cm.Data {
			Expect(json.Unmarshal([]byte(v), &dash)).To(Succeed())
		}
		// The dashboard's variables resolve to this release.
		ns, err := prom.labelValues(ctx, "namespace", "creditgate_http_requests_total")
		Expect(err).NotTo(HaveOccurred())
		Expect(ns).To(ContainElement(env.namespace))
		jobs, err := prom.labelValues(ctx, "job", `creditgate_http_requests_total{namespace="`+env.namespace+`"}`)
		Expect(err).NotTo(HaveOccurred())
		Expect(jobs).To(ContainElement(env.release))

		end := time.Now()
		vars := strings.NewReplacer("$namespace", env.namespace, "$job", env.release,
			"$__rate_interval", "1m", "$__range", fmt.Sprintf("%ds", int(end.Sub(started).Seconds())+1))
		var empty []string
		n := 0
		for _, p := range dash.allPanels() {
			for _, t := range p.Targets {
				if t.Expr == "" {
					continue
				}
				n++
				expr := vars.Replace(t.Expr)
				Expect(expr).NotTo(ContainSubstring("$"), "a dashboard variable the spec does not substitute")
				numbers, series, err := prom.queryRange(ctx, expr, started, end, 15*time.Second)
				Expect(err).NotTo(HaveOccurred(), "%s: %s", p.Title, expr)
				GinkgoWriter.Printf("panel %-45q %3d series %4d samples  %s\n", p.Title, series, numbers, expr)
				if numbers == 0 {
					empty = append(empty, fmt.Sprintf("%s: %s", p.Title, expr))
				}
			}
		}
		Expect(n).To(BeNumerically(">", 10))
		Expect(empty).To(BeEmpty(), "dashboard panels with no data from the live Prometheus")
	}, SpecTimeout(3*time.Minute))
})

// dashboard is the part of a Grafana dashboard the spec reads.
type dashboard struct {
	Panels []dashboardPanel `json:"panels"`
}

type dashboardPanel struct {
	Title   string           `json:"title"`
	Panels  []dashboardPanel `json:"panels"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
}

// allPanels flattens rows.
func (d dashboard) allPanels() []dashboardPanel {
	var out []dashboardPanel
	var walk func([]dashboardPanel)
	walk = func(ps []dashboardPanel) {
		for _, p := range ps {
			out = append(out, p)
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out
}
