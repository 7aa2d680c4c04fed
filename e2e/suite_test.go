//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

func TestE2E(t *testing.T) {
	RegisterFailHandler(Fail)
	SetDefaultEventuallyTimeout(3 * time.Minute)
	SetDefaultEventuallyPollingInterval(time.Second)
	SetDefaultConsistentlyDuration(5 * time.Second)
	suiteConfig, reporterConfig := GinkgoConfiguration()
	// E2E_REPEAT=N runs every selected spec N times in a row, each attempt
	// required to pass (Ginkgo's MustPassRepeatedly; its -repeat flag exists
	// only in the ginkgo CLI, which `go test` does not use).
	if v := os.Getenv("E2E_REPEAT"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("E2E_REPEAT=%q: want a whole number of runs, at least 1", v)
		}
		suiteConfig.MustPassRepeatedly = n
	}
	RunSpecs(t, "creditgate e2e", suiteConfig, reporterConfig)
}

var _ = BeforeSuite(func(ctx SpecContext) {
	Expect(os.Getenv("KUBECONFIG")).NotTo(BeEmpty(), "KUBECONFIG must point at the cluster to test")
	wd, err := os.Getwd()
	Expect(err).NotTo(HaveOccurred())
	env = suiteEnv{
		namespace: getenv("E2E_NAMESPACE", "creditgate-e2e"),
		release:   "creditgate",
		chart:     getenv("E2E_CHART", filepath.Join(wd, "..", "charts", "creditgate")),
		image:     getenv("E2E_IMAGE", "creditgate:e2e"),
		kubectl:   getenv("E2E_KUBECTL", "kubectl"),
		helm:      getenv("E2E_HELM", "helm"),
		hostIP:    os.Getenv("E2E_HOST_IP"),
		cleanup:   os.Getenv("E2E_SKIP_CLEANUP") != "true",
		secret:    newSecret(),
		apiKey:    strings.TrimPrefix(newSecret(), "whsec_"),
		// The echo tool's image, loaded by hack/e2e.sh: in-cluster API clients.
		clientImage: os.Getenv("E2E_CLIENT_IMAGE"),
	}
	Expect(env.hostIP).NotTo(BeEmpty(), "E2E_HOST_IP must be the address pods use to reach this host")

	By("starting PostgreSQL where pods reach it, and the fake Clerk Backend API")
	setupDatabase(ctx)
	setupFakeClerk()
	GinkgoWriter.Printf("database for pods: %s\nfake Clerk for pods: %s\n", env.podDBURL, env.fakeURL)

	By("installing the chart (the migrations hook Job runs first)")
	// An earlier run's cleanup deletes the namespace without waiting; a new
	// install into a namespace still terminating would be refused.
	if phase, err := runE(env.kubectl, "get", "namespace", env.namespace, "-o", "jsonpath={.status.phase}"); err == nil && strings.TrimSpace(phase) == "Terminating" {
		GinkgoWriter.Printf("namespace %s is still terminating from an earlier run: waiting\n", env.namespace)
		run(env.kubectl, "wait", "--for=delete", "namespace/"+env.namespace, "--timeout=5m")
	}
	out := installChart()
	GinkgoWriter.Println(out)
	GinkgoWriter.Println(run(env.kubectl, "get", "nodes", "-o", "wide"))
	GinkgoWriter.Println(kubectl("get", "pods,svc,endpointslices,cronjobs,jobs", "-o", "wide"))
	GinkgoWriter.Println(kubectl("get", "events", "--field-selector", "involvedObject.kind=Job", "-o", "wide"))

	By("checking the hook Job migrated the database and the webhook pods are Ready")
	Expect(count(ctx, "SELECT count(*) FROM bun_migrations")).To(BeNumerically(">=", 3))
	kubectl("rollout", "status", "deployment/"+env.release, "--timeout=180s")
	Eventually(webhookPods).Should(HaveLen(2))
	env.webhookURL = serviceURL()
	GinkgoWriter.Printf("webhook URL (through the Service): %s\n", env.webhookURL)
}, NodeTimeout(15*time.Minute))

var _ = AfterSuite(func(ctx SpecContext) {
	if env.cleanup && env.helm != "" {
		out, _ := runE(env.helm, "uninstall", env.release, "--namespace", env.namespace, "--wait", "--timeout", "3m")
		GinkgoWriter.Println(out)
		out, _ = runE(env.kubectl, "delete", "namespace", env.namespace, "--wait=false")
		GinkgoWriter.Println(out)
	} else {
		GinkgoWriter.Printf("E2E_SKIP_CLEANUP=true: leaving namespace %s\n", env.namespace)
	}
	if env.db != nil {
		env.db.Close()
	}
	if env.fakeSrv != nil {
		_ = env.fakeSrv.Close()
	}
	if env.pg != nil && env.cleanup {
		_ = env.pg.Close()
	}
}, NodeTimeout(5*time.Minute))

// Dump cluster state for any failed spec.
var _ = ReportAfterEach(func(report SpecReport) {
	if report.Failed() && env.kubectl != "" {
		dumpDiagnostics()
	}
})

// runID keeps this run's users apart from any earlier run's.
var runID = fmt.Sprintf("%x", time.Now().UnixNano())[6:]

// tag names what the current attempt of a spec sends and creates: runID, plus
// "r<attempt>" from the second attempt on (E2E_REPEAT), so that every attempt
// starts from users, svix-ids and Job names of its own. It is valid in a
// Kubernetes name.
func tag() string {
	if n := CurrentSpecReport().NumAttempts; n > 1 {
		return fmt.Sprintf("%sr%d", runID, n)
	}
	return runID
}

func uid(spec string, i int) string { return fmt.Sprintf("user_%s_%s_%04d", tag(), spec, i) }

// creditsOf returns a user's available credits and signup entries.
func creditsOf(ctx context.Context, clerkID string) (available int64, signups int) {
	GinkgoHelper()
	var rows []struct {
		Available int64 `bun:"available_credits"`
	}
	Expect(env.db.NewRaw("SELECT available_credits FROM users WHERE clerk_id = ?", clerkID).Scan(ctx, &rows)).To(Succeed())
	if len(rows) == 1 {
		available = rows[0].Available
	}
	signups = count(ctx, "SELECT count(*) FROM credit_transactions WHERE clerk_id = ? AND reason = 'signup_bonus'", clerkID)
	return available, signups
}

func joined(lines []string) string { return strings.Join(lines, "\n") }
