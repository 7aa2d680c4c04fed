//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/uptrace/bun"

	"github.com/creditgate/creditgate/pkg/clerk/clerkfake"
	"github.com/creditgate/creditgate/pkg/pglocal"
	"github.com/creditgate/creditgate/pkg/pgtest"
	"github.com/creditgate/creditgate/pkg/postgres"
)

// suiteEnv is everything the specs share. It is filled in BeforeSuite from
// the environment, so the same suite runs on the from-source local cluster
// (make e2e) and on kind (make e2e-kind).
type suiteEnv struct {
	namespace string
	release   string
	chart     string
	image     string // repository:tag
	kubectl   string
	helm      string
	hostIP    string // the address pods use to reach this process's host
	cleanup   bool

	// The database: started here (pglocal) unless E2E_DATABASE_URL names one.
	pg       *pglocal.Server
	dbURL    string // as this process reaches it
	podDBURL string // as pods reach it: the runtime role's
	// podMigrationURL is the schema owner's URL for the migrations Job, and
	// runtimeRole the role of podDBURL (docs/database.md); both empty when
	// one role does everything (an external E2E_DATABASE_URL).
	podMigrationURL string
	runtimeRole     string
	db              *bun.DB
	restartDB       func(ctx context.Context) // stops and starts PostgreSQL

	fake     *clerkfake.Server
	fakeURL  string // as pods reach it, with /v1
	fakeSrv  *http.Server
	secret   string // the webhook signing secret
	clerkKey string

	webhookURL string // through the Service, the way an Ingress reaches it

	// apiKey is the credits API key the suite installs (name e2e).
	apiKey string
	// clientImage runs in-cluster API clients (the echo tool); "" skips
	// the specs that need one.
	clientImage string
}

var env suiteEnv

func getenv(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// run executes a command and returns its combined output; it fails the spec
// on error unless allowFail.
func run(name string, args ...string) string {
	GinkgoHelper()
	out, err := runE(name, args...)
	Expect(err).NotTo(HaveOccurred(), "%s %s\n%s", name, strings.Join(args, " "), out)
	return out
}

// runStdin is runE with stdin.
func runStdin(stdin, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var b bytes.Buffer
	cmd.Stdout, cmd.Stderr = &b, &b
	err := cmd.Run()
	return b.String(), err
}

func runE(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var b bytes.Buffer
	cmd.Stdout, cmd.Stderr = &b, &b
	err := cmd.Run()
	return b.String(), err
}

func kubectl(args ...string) string {
	GinkgoHelper()
	return run(env.kubectl, append([]string{"-n", env.namespace}, args...)...)
}

func kubectlE(args ...string) (string, error) {
	return runE(env.kubectl, append([]string{"-n", env.namespace}, args...)...)
}

// newSecret returns a random whsec_ signing secret.
func newSecret() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return "whsec_" + base64.StdEncoding.EncodeToString(b)
}

// setupDatabase starts PostgreSQL on the host, listening where pods reach
// it, unless the environment names one.
func setupDatabase(ctx context.Context) {
	GinkgoHelper()
	if u := os.Getenv("E2E_DATABASE_URL"); u != "" {
		env.dbURL = u
		env.podDBURL = getenv("E2E_POD_DATABASE_URL", u)
		env.restartDB = func(ctx context.Context) {
			GinkgoHelper()
			cmd := os.Getenv("E2E_DATABASE_RESTART")
			Expect(cmd).NotTo(BeEmpty(), "E2E_DATABASE_RESTART must name a command that restarts the external database")
			run("bash", "-c", cmd)
		}
	} else {
		var err error
		env.pg, err = pglocal.Start(ctx, pglocal.Options{
			Fsync:           true,
			ListenAddresses: []string{env.hostIP},
			TrustCIDRs:      []string{getenv("E2E_POD_CIDR", "10.244.0.0/16"), env.hostIP + "/32"},
			LogFile:         filepath.Join(os.TempDir(), "creditgate-e2e-postgres.log"),
		})
		Expect(err).NotTo(HaveOccurred())
		// Two roles, as docs/database.md recommends: the migrations Job runs
		// as the schema's owner, the service as a role granted DML only.
		Expect(env.pg.Psql(ctx, "postgres", "CREATE ROLE creditgate_migrator LOGIN")).To(Succeed())
		Expect(env.pg.Psql(ctx, "postgres", "CREATE ROLE creditgate_app LOGIN")).To(Succeed())
		Expect(env.pg.Psql(ctx, "postgres", "CREATE DATABASE creditgate OWNER creditgate_migrator")).To(Succeed())
		env.dbURL = env.pg.URL("creditgate")
		hostPort := net.JoinHostPort(env.hostIP, fmt.Sprint(env.pg.Port))
		env.podDBURL = fmt.Sprintf("postgres://creditgate_app@%s/creditgate?sslmode=disable", hostPort)
		env.podMigrationURL = fmt.Sprintf("postgres://creditgate_migrator@%s/creditgate?sslmode=disable", hostPort)
		env.runtimeRole = "creditgate_app"
		env.restartDB = func(ctx context.Context) {
			GinkgoHelper()
			Expect(env.pg.Stop()).To(Succeed())
			Expect(env.pg.Restart(ctx)).To(Succeed())
		}
	}
	// The suite's own connections name themselves, so that a spec can tell
	// them from the pods' (application_name creditgate).
	u, err := url.Parse(env.dbURL)
	Expect(err).NotTo(HaveOccurred())
	q := u.Query()
	q.Set("application_name", "creditgate-e2e")
	u.RawQuery = q.Encode()
	env.dbURL = u.String()
	env.db, err = postgres.Open(env.dbURL, postgres.Options{MaxConns: 4})
	Expect(err).NotTo(HaveOccurred())
}

// setupFakeClerk serves the fake Clerk Backend API where pods reach it.
func setupFakeClerk() {
	GinkgoHelper()
	env.fake = clerkfake.New()
	env.clerkKey = "sk_test_e2e"
	env.fake.SetSecretKey(env.clerkKey)
	env.fake.SetRateLimit(10, 10*time.Second)
	ln, err := net.Listen("tcp", net.JoinHostPort(getenv("E2E_FAKE_CLERK_LISTEN", "0.0.0.0"), "0"))
	Expect(err).NotTo(HaveOccurred())
	env.fakeSrv = &http.Server{Handler: env.fake, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = env.fakeSrv.Serve(ln) }()
	port := ln.Addr().(*net.TCPAddr).Port
	env.fakeURL = fmt.Sprintf("http://%s/v1", net.JoinHostPort(env.hostIP, fmt.Sprint(port)))
}

// installChart installs (or upgrades) the release with the suite's values
// plus extra --set pairs, and waits for it.
func installChart(extra ...string) string {
	GinkgoHelper()
	var flags []string
	for _, e := range extra {
		flags = append(flags, "--set", e)
	}
	return installChartFlags(flags...)
}

// installChartFlags is installChart with any helm flags after the suite's
// values (--set-json, --values, …).
func installChartFlags(extra ...string) string {
	GinkgoHelper()
	repo, tag, _ := strings.Cut(env.image, ":")
	args := []string{"upgrade", "--install", env.release, env.chart,
		"--namespace", env.namespace, "--create-namespace", "--wait", "--timeout", "6m",
		"--set", "image.repository=" + repo, "--set", "image.tag=" + tag, "--set", "image.pullPolicy=IfNotPresent",
		"--set-string", "secret.databaseURL=" + env.podDBURL,
		"--set-string", "secret.signingSecret=" + env.secret,
		"--set-string", "secret.clerkSecretKey=" + env.clerkKey,
		"--set-string", "config.clerk.apiURL=" + env.fakeURL,
		"--set-string", "config.logLevel=info",
		"--set", "reconciler.suspend=true", // the specs start reconciler Jobs themselves
	}
	args = append(args, "--set-string", "secret.creditsAPIKeys=e2e:read+spend+grant:"+env.apiKey,
		"--set-json", fmt.Sprintf(`api.serviceAccounts={%q:"read+spend"}`, env.namespace+"/"+spenderSA))
	if env.runtimeRole != "" {
		args = append(args, "--set-string", "secret.migrationDatabaseURL="+env.podMigrationURL,
			"--set-string", "migrations.runtimeRole="+env.runtimeRole)
	}
	if f := os.Getenv("E2E_VALUES"); f != "" {
		args = append(args, "--values", f)
	}
	return run(env.helm, append(args, extra...)...)
}

// serviceURL is the webhook Service's address: its ClusterIP, which
// kube-proxy routes from this host to ready endpoints like an Ingress
// controller would. E2E_WEBHOOK_URL overrides it (kind: a NodePort mapping).
func serviceURL() string {
	GinkgoHelper()
	if u := os.Getenv("E2E_WEBHOOK_URL"); u != "" {
		return u
	}
	ip := strings.TrimSpace(kubectl("get", "service", env.release, "-o", "jsonpath={.spec.clusterIP}"))
	Expect(ip).NotTo(BeEmpty())
	return "http://" + net.JoinHostPort(ip, "8080") + "/api/webhooks/clerk"
}

// webhookPods returns the names of the webhook pods that are Ready and not
// being deleted.
func webhookPods() []string {
	GinkgoHelper()
	out := kubectl("get", "pods", "-l", "app.kubernetes.io/component=webhook,app.kubernetes.io/instance="+env.release, "-o", "json")
	var list struct {
		Items []struct {
			Metadata struct {
				Name              string  `json:"name"`
				DeletionTimestamp *string `json:"deletionTimestamp"`
			} `json:"metadata"`
			Status struct {
				Conditions []struct{ Type, Status string } `json:"conditions"`
			} `json:"status"`
		} `json:"items"`
	}
	Expect(json.Unmarshal([]byte(out), &list)).To(Succeed())
	var names []string
	for _, p := range list.Items {
		if p.Metadata.DeletionTimestamp != nil {
			continue
		}
		for _, c := range p.Status.Conditions {
			if c.Type == "Ready" && c.Status == "True" {
				names = append(names, p.Metadata.Name)
			}
		}
	}
	return names
}

// podMetrics scrapes a pod's /metrics through the API server's proxy, which
// works wherever the control plane reaches pods (kind included).
func podMetrics(pod string) string {
	GinkgoHelper()
	return run(env.kubectl, "get", "--raw", fmt.Sprintf("/api/v1/namespaces/%s/pods/%s:9090/proxy/metrics", env.namespace, pod))
}

// runReconcilerJob creates a Job from the CronJob, waits for it, and returns
// the summary it printed.
func runReconcilerJob(name string) map[string]any {
	GinkgoHelper()
	kubectl("create", "job", name, "--from=cronjob/"+env.release+"-reconciler")
	kubectl("wait", "--for=condition=complete", "--timeout=180s", "job/"+name)
	logs := kubectl("logs", "job/"+name, "-c", "reconciler")
	var summary map[string]any
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		if strings.HasPrefix(line, `{"outcome"`) {
			Expect(json.Unmarshal([]byte(line), &summary)).To(Succeed())
		}
	}
	Expect(summary).NotTo(BeNil(), "no JSON summary in the reconciler's output:\n%s", logs)
	GinkgoWriter.Printf("reconciler job %s: %s\n", name, kubectl("get", "job", name, "-o", "wide"))
	return summary
}

// dumpDiagnostics prints what a failed spec needs: pods, events, describe,
// and the logs of every pod.
func dumpDiagnostics() {
	for _, args := range [][]string{
		{"get", "all,events", "-o", "wide"},
		{"describe", "pods"},
		{"describe", "jobs"},
	} {
		out, _ := kubectlE(args...)
		GinkgoWriter.Printf("\n$ kubectl %s\n%s\n", strings.Join(args, " "), out)
	}
	pods, _ := kubectlE("get", "pods", "-o", "jsonpath={range .items[*]}{.metadata.name}{\"\\n\"}{end}")
	for _, p := range strings.Fields(pods) {
		out, _ := kubectlE("logs", p, "--all-containers", "--tail=200")
		GinkgoWriter.Printf("\n$ kubectl logs %s\n%s\n", p, out)
	}
}

// ledgerInvariants returns every broken money rule in the database.
func ledgerInvariants(ctx context.Context) []pgtest.Violation {
	GinkgoHelper()
	vs, err := pgtest.Invariants(ctx, env.db)
	Expect(err).NotTo(HaveOccurred())
	return vs
}

// count runs a count query.
func count(ctx context.Context, q string, args ...any) int {
	GinkgoHelper()
	var n int
	Expect(env.db.NewRaw(q, args...).Scan(ctx, &n)).To(Succeed())
	return n
}

// footprint returns, table by table, the rows the service keeps for the given
// Clerk users and svix-ids: the users' rows, ledger entries and outbox
// messages, and the webhook events of those users or with those svix-ids, one
// line of text per row. A table without such a row is left out, so "nothing
// stored" is an empty map. Scoped to a spec's own inputs, it is immune to what
// else writes meanwhile (the webhook pods' outbox workers delivering or
// retrying earlier specs' metadata writes), which checksums of whole tables
// were not.
func footprint(ctx context.Context, clerkIDs, svixIDs []string) map[string][]string {
	GinkgoHelper()
	out := map[string][]string{}
	for table, where := range map[string]string{
		"users":                 "clerk_id IN (?0)",
		"credit_transactions":   "clerk_id IN (?0)",
		"clerk_metadata_outbox": "clerk_id IN (?0)",
		"webhook_events":        "clerk_user_id IN (?0) OR svix_id IN (?1)",
	} {
		var rows []string
		Expect(env.db.NewRaw(fmt.Sprintf("SELECT t::text FROM %s t WHERE %s ORDER BY t::text", table, where),
			bun.List(clerkIDs), bun.List(svixIDs)).Scan(ctx, &rows)).To(Succeed())
		if len(rows) > 0 {
			out[table] = rows
		}
	}
	return out
}
