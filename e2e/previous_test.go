//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/creditgate/creditgate/pkg/pgtest"
	"github.com/creditgate/creditgate/pkg/postgres"
)

// An upgrade as users make it: the previous release (its chart and its image,
// built from E2E_PREVIOUS_REF by hack/e2e.sh) serves in a namespace of its
// own, on a database of its own, under steady webhook load; `helm upgrade`
// moves it to this commit's chart and image, whose migrations run while the
// old pods still serve; not one delivery gets a non-2xx, and afterwards the
// credits API serves the users the old and the new pods created.
var _ = Describe("an upgrade from the previous release", Ordered, func() {
	It("serves every delivery and every debit through the upgrade, and the credits API after it", Label(LabelUpgrade, LabelAPI), func(ctx SpecContext) {
		prevImage, prevChart := os.Getenv("E2E_PREVIOUS_IMAGE"), os.Getenv("E2E_PREVIOUS_CHART")
		if prevImage == "" || prevChart == "" || env.pg == nil {
			Skip("E2E_PREVIOUS_IMAGE and E2E_PREVIOUS_CHART (hack/e2e.sh builds them) and the suite's own PostgreSQL are needed")
		}
		ns, release := env.namespace+"-prev", "creditgate"
		hostPort := net.JoinHostPort(env.hostIP, fmt.Sprint(env.pg.Port))
		Expect(env.pg.Psql(ctx, "postgres", "DROP DATABASE IF EXISTS creditgate_prev WITH (FORCE)")).To(Succeed())
		Expect(env.pg.Psql(ctx, "postgres", "CREATE DATABASE creditgate_prev OWNER creditgate_migrator")).To(Succeed())
		ownerURL := fmt.Sprintf("postgres://creditgate_migrator@%s/creditgate_prev?sslmode=disable", hostPort)
		appURL := fmt.Sprintf("postgres://creditgate_app@%s/creditgate_prev?sslmode=disable", hostPort)
		db, err := postgres.Open(strings.Replace(env.pg.URL("creditgate_prev"), "sslmode=disable", "sslmode=disable&application_name=creditgate-e2e", 1), postgres.Options{MaxConns: 2})
		Expect(err).NotTo(HaveOccurred())
		defer db.Close()
		k := func(args ...string) string {
			GinkgoHelper()
			return run(env.kubectl, append([]string{"-n", ns}, args...)...)
		}
		DeferCleanup(func() {
			if env.cleanup {
				out, _ := runE(env.helm, "uninstall", release, "--namespace", ns, "--wait", "--timeout", "3m")
				GinkgoWriter.Println(out)
				out, _ = runE(env.kubectl, "delete", "namespace", ns, "--wait=false")
				GinkgoWriter.Println(out)
			}
		})
		if phase, err := runE(env.kubectl, "get", "namespace", ns, "-o", "jsonpath={.status.phase}"); err == nil && strings.TrimSpace(phase) == "Terminating" {
			run(env.kubectl, "wait", "--for=delete", "namespace/"+ns, "--timeout=5m")
		}

		By("installing the previous release: its chart, its image, one database role")
		prevRepo, prevTag, _ := strings.Cut(prevImage, ":")
		GinkgoWriter.Println(run(env.helm, "upgrade", "--install", release, prevChart, "--namespace", ns, "--create-namespace",
			"--wait", "--timeout", "6m",
			"--set", "image.repository="+prevRepo, "--set", "image.tag="+prevTag, "--set", "image.pullPolicy=IfNotPresent",
			"--set-string", "secret.databaseURL="+ownerURL, "--set-string", "secret.signingSecret="+env.secret,
			"--set-string", "secret.clerkSecretKey="+env.clerkKey, "--set-string", "config.clerk.apiURL="+env.fakeURL,
			"--set", "reconciler.suspend=true"))
		k("rollout", "status", "deployment/"+release, "--timeout=180s")
		ip := strings.TrimSpace(k("get", "service", release, "-o", "jsonpath={.spec.clusterIP}"))
		us := newSender("http://"+net.JoinHostPort(ip, "8080")+"/api/webhooks/clerk", env.secret, nil)

		By("delivering steadily while the upgrade rolls out")
		stop := make(chan struct{})
		var sent, transportErrs atomic.Int64
		var wg sync.WaitGroup
		var mu sync.Mutex
		var bad, users []string
		for w := range 4 {
			wg.Go(func() {
				defer GinkgoRecover()
				tick := time.NewTicker(25 * time.Millisecond) // a steady sender, not a flood
				defer tick.Stop()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					case <-tick.C:
					}
					id := uid(fmt.Sprintf("prev%d", w), i)
					env.fake.AddUser(fakeUser(id))
					a := us.postAnswered(ctx, userCreated("msg_"+id, id, "", time.Now().UnixMilli()), &transportErrs)
					sent.Add(1)
					mu.Lock()
					users = append(users, id)
					if a.Err != nil || a.Status != http.StatusOK {
						bad = append(bad, fmt.Sprintf("%s: %d %v", id, a.Status, a.Err))
					}
					mu.Unlock()
				}
			})
		}
		Eventually(sent.Load).WithTimeout(2 * time.Minute).Should(BeNumerically(">=", 50))
		repo, tag, _ := strings.Cut(env.image, ":")
		upgrade := []string{"upgrade", release, env.chart, "--namespace", ns, "--wait", "--timeout", "6m",
			"--set", "image.repository=" + repo, "--set", "image.tag=" + tag, "--set", "image.pullPolicy=IfNotPresent",
			"--set-string", "secret.databaseURL=" + appURL, "--set-string", "secret.migrationDatabaseURL=" + ownerURL,
			"--set-string", "migrations.runtimeRole=creditgate_app",
			"--set-string", "secret.signingSecret=" + env.secret, "--set-string", "secret.clerkSecretKey=" + env.clerkKey,
			"--set-string", "config.clerk.apiURL=" + env.fakeURL, "--set", "reconciler.suspend=true",
			"--set-string", "secret.creditsAPIKeys=e2e:read+spend+grant:" + env.apiKey}
		if f := os.Getenv("E2E_VALUES"); f != "" {
			upgrade = append(upgrade, "--values", f)
		}
		// The credits API comes with the upgrade (the previous release has
		// none): from its first answer on, through the rest of the rollout
		// (old pods draining, new ones starting) and after, a steady client
		// spends through its Service, and every answer must be a 201.
		mu.Lock()
		spenders := slices.Clone(users[1:]) // each holds 20 credits (users[0] is checked below)
		mu.Unlock()
		var apiOK, apiNoAnswer atomic.Int64
		var apiBad []string
		var lastBefore atomic.Value // the last answer before the API served
		before := map[int]int{}     // answers before it served, by status (0: none)
		lastBefore.Store("no attempt yet (no API Service)")
		wg.Go(func() {
			defer GinkgoRecover()
			client := &http.Client{Timeout: 15 * time.Second}
			var api string
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for i := 0; ; {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				if api == "" {
					if ip, err := runE(env.kubectl, "-n", ns, "get", "service", release+"-api", "-o", "jsonpath={.spec.clusterIP}"); err == nil && strings.TrimSpace(ip) != "" {
						api = "http://" + net.JoinHostPort(strings.TrimSpace(ip), "8081")
					}
					continue
				}
				user, key := spenders[i%len(spenders)], fmt.Sprintf("prev-api-%d", i)
				if apiOK.Load() == 0 {
					// A fresh key per attempt until it serves: an answer
					// stored under a key would be replayed.
					key = fmt.Sprintf("prev-api-first-%d", time.Now().UnixNano())
				}
				status, body, err := debitOnce(ctx, client, api, user, key)
				for retry := 0; err != nil && apiOK.Load() > 0 && retry < 3; retry++ {
					// No answer at all (the idle-close race): an
					// application retries with the same key.
					apiNoAnswer.Add(1)
					status, body, err = debitOnce(ctx, client, api, user, key)
				}
				if apiOK.Load() == 0 && status != http.StatusCreated {
					lastBefore.Store(fmt.Sprintf("%s %s: %d %v %s", user, key, status, err, body))
					mu.Lock()
					before[status]++
					mu.Unlock()
					// Not serving yet: the first pod with the API is still
					// starting, or the node has not routed the new Service's
					// address yet (a connection made then reaches whatever
					// answers that address off the node, here an empty 404,
					// and keep-alive would keep it): start afresh next time.
					client.CloseIdleConnections()
					continue
				}
				i++
				if status == http.StatusCreated {
					apiOK.Add(1)
					continue
				}
				mu.Lock()
				apiBad = append(apiBad, fmt.Sprintf("%s %s: %d %v %s", user, key, status, err, body))
				mu.Unlock()
			}
		})
		GinkgoWriter.Println(run(env.helm, upgrade...))
		k("rollout", "status", "deployment/"+release, "--timeout=5m")
		upgraded := sent.Load()
		Eventually(sent.Load).WithTimeout(2 * time.Minute).Should(BeNumerically(">=", upgraded+50))
		Eventually(apiOK.Load).WithTimeout(2*time.Minute).Should(BeNumerically(">=", 50), func() string {
			return "debits through the API Service; the last answer before any 201: " + lastBefore.Load().(string)
		})
		close(stop)
		wg.Wait()
		GinkgoWriter.Printf("credits API through the upgrade: %d debits answered 201, %d attempts without an answer (retried with the same key); before its first 201: %v (last: %s)\n",
			apiOK.Load(), apiNoAnswer.Load(), before, lastBefore.Load())
		Expect(apiBad).To(BeEmpty(), "credits API answers other than 201 once it served:\n%s", joined(apiBad))
		GinkgoWriter.Printf("upgrade from the previous release: %d deliveries, %d of them after the rollout, %d attempts without an answer (retried)\n",
			sent.Load(), sent.Load()-upgraded, transportErrs.Load())
		Expect(bad).To(BeEmpty(), "non-2xx answers through the upgrade:\n%s", joined(bad))

		By("checking every user, the old pods' and the new ones', and spending through the API")
		var credited int
		Expect(db.NewRaw("SELECT count(*) FROM credit_transactions WHERE reason = 'signup_bonus'").Scan(ctx, &credited)).To(Succeed())
		Expect(credited).To(Equal(len(users)), "one signup credit per user")
		apiIP := strings.TrimSpace(k("get", "service", release+"-api", "-o", "jsonpath={.spec.clusterIP}"))
		api := "http://" + net.JoinHostPort(apiIP, "8081")
		retried := map[int]int{}
		for _, id := range []string{users[0], users[len(users)-1]} { // one from the old pods, one from the new
			status, body := apiCall(ctx, api, "POST", "/v1/users/"+id+"/debits", "prev-"+id, `{"amount":5,"reason":"generation"}`, retried, &mu)
			Expect(status).To(Equal(http.StatusCreated), body)
			Expect(body).To(ContainSubstring(`"balance_after":15`))
		}
		vs, err := pgtest.Invariants(context.Background(), db)
		Expect(err).NotTo(HaveOccurred())
		Expect(vs).To(BeEmpty())
	}, SpecTimeout(20*time.Minute))
})

// debitOnce makes one debit of 1 credit through the API at base, without
// retrying.
func debitOnce(ctx context.Context, client *http.Client, base, user, key string) (int, string, error) {
	return apiOnce(ctx, client, base, http.MethodPost, "/v1/users/"+user+"/debits", `{"amount":1,"reason":"generation"}`, key)
}
