package chart

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/creditgate/creditgate/pkg/clerk/clerkevent"
	"github.com/creditgate/creditgate/pkg/clerk/clerkfake"
	"github.com/creditgate/creditgate/pkg/pglocal"
	"github.com/creditgate/creditgate/pkg/postgres"
	"github.com/creditgate/creditgate/pkg/webhook/svixsender"
)

// externalMetric reports whether a metric comes from outside creditgate,
// so that the binaries cannot be asked for it: kube-state-metrics' kube_*,
// Prometheus' up and ALERTS.
func externalMetric(name string) bool {
	return strings.HasPrefix(name, "kube_") || name == "up" || name == "ALERTS" || name == "ALERTS_FOR_STATE"
}

// exported is what the running binaries export.
type exported struct {
	// Names are the series names (histograms as _bucket, _sum, _count).
	Names map[string]bool
	// Source says which binaries export each name: "webhook" (/metrics)
	// and "reconciler" (pushed).
	Source map[string][]string
	// PushJob is the job the reconciler pushes under (/metrics/job/<job>).
	PushJob string
}

var (
	exportOnce sync.Once
	exportVal  *exported
	exportErr  error
	exportSkip string
)

// exportedMetrics runs the real binaries once: PostgreSQL from pkg/pglocal,
// migrated; the webhook on free ports with a fresh whsec_ secret and a fake
// Clerk API (so the outbox worker and its metrics run), one signed
// user.created delivery and one unsigned request so that the histograms and
// counters have series; /metrics scraped; then one reconciler run pushing to
// a recording Pushgateway.
func exportedMetrics(t *testing.T) *exported {
	t.Helper()
	webhookBin, reconcilerBin := binary(t, "webhook"), binary(t, "reconciler")
	m := render(t, valueSets()[0])
	c := m.deployment(t).Spec.Template.Spec.Containers[0]
	probePaths := []string{c.StartupProbe.HTTPGet.Path, c.LivenessProbe.HTTPGet.Path, c.ReadinessProbe.HTTPGet.Path}
	if len(m.Pods) != 2 {
		t.Fatalf("want the helm test Pods (readyz and selftest), got %d Pods", len(m.Pods))
	}
	var testCmds [][]string
	for _, p := range m.Pods {
		testCmds = append(testCmds, p.Spec.Containers[0].Command)
	}
	exportOnce.Do(func() {
		exportVal, exportErr = runBinaries(webhookBin, reconcilerBin, probePaths, testCmds)
		if errors.Is(exportErr, pglocal.ErrNoBinaries) && !inCI() {
			exportSkip = exportErr.Error()
		}
	})
	if exportSkip != "" {
		t.Skipf("skipping: %s", exportSkip)
	}
	if exportErr != nil {
		t.Fatal(exportErr)
	}
	return exportVal
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func runBinaries(webhookBin, reconcilerBin string, probePaths []string, testCmds [][]string) (res *exported, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var logs bytes.Buffer
	out := &syncWriter{w: &logs}
	defer func() {
		if err != nil {
			out.mu.Lock()
			err = fmt.Errorf("%w\n--- logs ---\n%s", err, logs.String())
			out.mu.Unlock()
		}
	}()

	pg, err := pglocal.Start(ctx, pglocal.Options{})
	if err != nil {
		return nil, fmt.Errorf("start PostgreSQL: %w", err)
	}
	defer pg.Close()
	if err := pg.CreateDatabase(ctx, "creditgate", ""); err != nil {
		return nil, err
	}
	dbURL := pg.URL("creditgate")
	db, err := postgres.Open(dbURL, postgres.Options{MaxConns: 2})
	if err != nil {
		return nil, err
	}
	_, err = postgres.Migrate(ctx, db, slog.New(slog.NewTextHandler(io.Discard, nil)))
	db.Close()
	if err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}

	fake := clerkfake.New()
	fake.SetSecretKey("sk_test_chart")
	fake.AddUser(clerkfake.User{ID: "user_chart"})
	// A Clerk user the webhook never heard of: the reconciler's backfill
	// creates it, so that its per-item counters have series.
	fake.AddUser(clerkfake.User{ID: "user_backfill"})
	clerkSrv := httptest.NewServer(fake)
	defer clerkSrv.Close()

	key := make([]byte, 24)
	_, _ = rand.Read(key)
	secret := "whsec_" + base64.StdEncoding.EncodeToString(key)
	httpAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	metricsAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	env := []string{
		"DATABASE_URL=" + dbURL,
		"CLERK_WEBHOOK_SIGNING_SECRET=" + secret,
		"HTTP_ADDR=" + httpAddr,
		"METRICS_ADDR=" + metricsAddr,
		"CLERK_SECRET_KEY=sk_test_chart",
		"CLERK_API_URL=" + clerkSrv.URL + "/v1",
		"BACKLOG_REFRESH=1s",
		"LOG_FORMAT=text",
	}
	webhook := exec.Command(webhookBin)
	webhook.Env = env
	webhook.Stdout, webhook.Stderr = out, out
	if err := webhook.Start(); err != nil {
		return nil, err
	}
	defer func() {
		_ = webhook.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = webhook.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = webhook.Process.Kill()
			<-done
		}
	}()

	base := "http://" + httpAddr
	if err := waitOK(ctx, base+"/readyz"); err != nil {
		return nil, fmt.Errorf("webhook never ready: %w", err)
	}
	// The chart's probe paths answer on the port HTTP_ADDR names.
	for _, p := range probePaths {
		if code, err := get(ctx, base+p); err != nil || code != http.StatusOK {
			return nil, fmt.Errorf("probe path %s: status %d, %v", p, code, err)
		}
	}
	// The helm test Pods' commands work against this binary (the Service's
	// host swapped for the local listener): `webhook probe URL` exits 0 on
	// /readyz and non-zero on a 404; `webhook selftest URL` exits 0 with the
	// webhook's signing secret (the chart passes the same Secret key) and
	// non-zero with another.
	for _, testCmd := range testCmds {
		if len(testCmd) != 3 || filepath.Base(testCmd[0]) != "webhook" {
			return nil, fmt.Errorf("helm test command %q", testCmd)
		}
		u, err := url.Parse(testCmd[2])
		if err != nil {
			return nil, err
		}
		u.Host = httpAddr
		switch testCmd[1] {
		case "probe":
			if _, err := run(ctx, "", []string{}, webhookBin, testCmd[1], u.String()); err != nil {
				return nil, fmt.Errorf("the helm test command against a ready webhook: %w", err)
			}
			u.Path = "/no-such-path"
			if _, err := run(ctx, "", []string{}, webhookBin, testCmd[1], u.String()); err == nil {
				return nil, errors.New("`webhook probe` exits 0 on a 404")
			}
		case "selftest":
			if _, err := run(ctx, "", []string{"CLERK_WEBHOOK_SIGNING_SECRET=" + secret}, webhookBin, testCmd[1], u.String()); err != nil {
				return nil, fmt.Errorf("the helm test selftest against the webhook with its secret: %w", err)
			}
			other := "whsec_" + base64.StdEncoding.EncodeToString(make([]byte, 24))
			if _, err := run(ctx, "", []string{"CLERK_WEBHOOK_SIGNING_SECRET=" + other}, webhookBin, testCmd[1], u.String()); err == nil {
				return nil, errors.New("`webhook selftest` exits 0 with a secret the webhook does not verify with")
			}
		default:
			return nil, fmt.Errorf("helm test command %q: unknown subcommand", testCmd)
		}
	}
	if err := deliver(ctx, base+webhookPath, secret); err != nil {
		return nil, err
	}
	// An unsigned request: a verification failure.
	if code, err := post(ctx, base+webhookPath, nil, []byte(`{}`)); err != nil || code != http.StatusBadRequest {
		return nil, fmt.Errorf("unsigned request: status %d, %v", code, err)
	}

	res = &exported{Names: map[string]bool{}, Source: map[string][]string{}}
	body, err := scrape(ctx, "http://"+metricsAddr+"/metrics")
	if err != nil {
		return nil, err
	}
	for _, n := range textMetricNames(body) {
		res.Names[n] = true
		res.Source[n] = append(res.Source[n], "webhook")
	}

	// The reconciler pushes to a Pushgateway: record what it pushes.
	var mu sync.Mutex
	var pushes []push
	pgw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		pushes = append(pushes, push{method: r.Method, path: r.URL.Path, header: r.Header.Clone(), body: b})
		mu.Unlock()
		w.WriteHeader(http.StatusOK)
	}))
	defer pgw.Close()
	rec := exec.CommandContext(ctx, reconcilerBin)
	rec.Env = append(env, "PUSHGATEWAY_URL="+pgw.URL)
	rec.Stdout, rec.Stderr = out, out
	if err := rec.Run(); err != nil {
		return nil, fmt.Errorf("reconciler: %w", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(pushes) == 0 {
		return nil, errors.New("the reconciler pushed nothing to PUSHGATEWAY_URL")
	}
	for _, p := range pushes {
		job, ok := strings.CutPrefix(p.path, "/metrics/job/")
		if !ok {
			return nil, fmt.Errorf("push to %s, want /metrics/job/<job>", p.path)
		}
		res.PushJob, _, _ = strings.Cut(job, "/")
		names, err := pushedMetricNames(p)
		if err != nil {
			return nil, err
		}
		for _, n := range names {
			res.Names[n] = true
			if !slices.Contains(res.Source[n], "reconciler") {
				res.Source[n] = append(res.Source[n], "reconciler")
			}
		}
	}
	return res, nil
}

type push struct {
	method, path string
	header       http.Header
	body         []byte
}

// syncWriter serialises writes of two processes to one buffer.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func get(ctx context.Context, url string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

func waitOK(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		code, err := get(ctx, url)
		if err == nil && code == http.StatusOK {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("GET %s: status %d, %v", url, code, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func post(ctx context.Context, url string, h http.Header, body []byte) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	for k, v := range h {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// deliver sends one user.created event signed as Svix does.
func deliver(ctx context.Context, url, secret string) error {
	body := clerkevent.Event{Type: clerkevent.UserCreated, UserID: "user_chart", Email: "chart@example.com"}.MustBody()
	h, err := svixsender.Sign(secret, svixsender.Message{ID: "msg_chart", Body: body}, time.Now())
	if err != nil {
		return err
	}
	code, err := post(ctx, url, h, body)
	if err != nil || code != http.StatusOK {
		return fmt.Errorf("signed user.created: status %d, %v", code, err)
	}
	return nil
}

func scrape(ctx context.Context, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	return string(b), nil
}

// textMetricNames returns the series names of a text exposition: the first
// token of every sample line.
func textMetricNames(body string) []string {
	set := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if i := strings.IndexAny(line, "{ "); i > 0 {
			set[line[:i]] = true
		}
	}
	return sortedKeys(set)
}

// pushedMetricNames decodes one push (the client's protobuf-delimited or
// text format, as its Content-Type says) into series names.
func pushedMetricNames(p push) ([]string, error) {
	dec := expfmt.NewDecoder(bytes.NewReader(p.body), expfmt.ResponseFormat(p.header))
	set := map[string]bool{}
	for {
		var mf dto.MetricFamily
		err := dec.Decode(&mf)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("decode push (%s): %w", p.header.Get("Content-Type"), err)
		}
		name := mf.GetName()
		switch mf.GetType() {
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			set[name+"_bucket"], set[name+"_sum"], set[name+"_count"] = true, true, true
		case dto.MetricType_SUMMARY:
			set[name], set[name+"_sum"], set[name+"_count"] = true, true, true
		default:
			set[name] = true
		}
	}
	return sortedKeys(set), nil
}

// grafanaVars are Grafana's built-in interval variables, which are not
// PromQL; the checks substitute a plain duration.
var grafanaVars = regexp.MustCompile(`\$(__rate_interval|__interval|__range)\b|\$\{(__rate_interval|__interval|__range)\}`)

// dashboardQuery is one PromQL expression of the dashboard.
type dashboardQuery struct {
	where string
	expr  string
}

// dashboardQueries renders the all-on values and returns every PromQL
// expression of the dashboard: panel targets and the selectors inside the
// template variables' label_values() queries.
func dashboardQueries(t *testing.T) []dashboardQuery {
	t.Helper()
	m := render(t, valueSets()[1])
	var raw string
	for _, cm := range m.ConfigMaps {
		if cm.Labels["grafana_dashboard"] == "1" {
			for _, v := range cm.Data {
				raw = v
			}
		}
	}
	if raw == "" {
		t.Fatal("no ConfigMap labelled grafana_dashboard: \"1\"")
	}
	var dash struct {
		UID        string      `json:"uid"`
		Title      string      `json:"title"`
		Panels     []dashPanel `json:"panels"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal([]byte(raw), &dash); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	if dash.UID == "" || dash.Title == "" {
		t.Errorf("dashboard without uid or title")
	}
	var qs []dashboardQuery
	var walk func([]dashPanel)
	walk = func(ps []dashPanel) {
		for _, p := range ps {
			for _, tg := range p.Targets {
				qs = append(qs, dashboardQuery{where: fmt.Sprintf("panel %q target %s", p.Title, tg.RefID), expr: tg.Expr})
			}
			walk(p.Panels)
		}
	}
	walk(dash.Panels)
	labelValues := regexp.MustCompile(`^label_values\((.+),\s*[A-Za-z_][A-Za-z0-9_]*\)$`)
	for _, v := range dash.Templating.List {
		if v.Type != "query" {
			continue
		}
		q, _ := v.Query.(string)
		if obj, ok := v.Query.(map[string]any); ok {
			q, _ = obj["query"].(string)
		}
		sm := labelValues.FindStringSubmatch(strings.TrimSpace(q))
		if sm == nil {
			t.Errorf("variable %s: query %q is not label_values(selector, label)", v.Name, q)
			continue
		}
		qs = append(qs, dashboardQuery{where: "variable " + v.Name, expr: sm[1]})
	}
	if len(qs) == 0 {
		t.Fatal("the dashboard has no queries")
	}
	return qs
}

type dashPanel struct {
	Title   string `json:"title"`
	Type    string `json:"type"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
	Panels []dashPanel `json:"panels"`
}

// TestDashboardPromQL checks that every dashboard expression parses as
// PromQL: they become recording rules of a throwaway file that
// `promtool check rules` parses.
func TestDashboardPromQL(t *testing.T) {
	t.Parallel()
	promtool := tool(t, "promtool")
	qs := dashboardQueries(t)
	var rules []rule
	for i, q := range qs {
		if strings.TrimSpace(q.expr) == "" {
			t.Errorf("%s: empty expression", q.where)
			continue
		}
		rules = append(rules, rule{Record: fmt.Sprintf("dashboard:query_%d", i), Expr: grafanaVars.ReplaceAllString(q.expr, "5m")})
	}
	path := filepath.Join(t.TempDir(), "dashboard-rules.yaml")
	writeRulesFile(t, path, []ruleGroup{{Name: "dashboard", Rules: rules}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := run(ctx, "", nil, promtool, "check", "rules", path); err != nil {
		b, _ := os.ReadFile(path)
		t.Fatalf("%v\n%s", err, b)
	}
}

// TestMetricNamesExist checks that every metric the dashboard and the alerts
// use is one that the running webhook or reconciler exports (or an external
// one: kube-state-metrics, up, ALERTS), and that the reconciler panels use
// the job the reconciler pushes under.
func TestMetricNamesExist(t *testing.T) {
	t.Parallel()
	exp := exportedMetrics(t)
	var checked []dashboardQuery
	checked = append(checked, dashboardQueries(t)...)
	for _, r := range alertRules(t, render(t, alertsRelease)) {
		checked = append(checked, dashboardQuery{where: "alert " + r.Alert, expr: r.Expr})
	}
	used := map[string]bool{}
	for _, q := range checked {
		names, err := MetricNames(grafanaVars.ReplaceAllString(q.expr, "5m"))
		if err != nil {
			t.Errorf("%s: %v", q.where, err)
			continue
		}
		if len(names) == 0 {
			t.Errorf("%s: no metric in %q", q.where, q.expr)
		}
		for _, n := range names {
			used[n] = true
			if !exp.Names[n] && !externalMetric(n) {
				t.Errorf("%s uses %s, which neither the webhook nor the reconciler exports", q.where, n)
			}
		}
		// Pushed series carry the push's job label.
		for _, n := range names {
			if slices.Equal(exp.Source[n], []string{"reconciler"}) && !strings.Contains(q.expr, fmt.Sprintf(`job=%q`, exp.PushJob)) {
				t.Errorf("%s: %s is pushed under job %q, which the expression does not select: %s", q.where, n, exp.PushJob, q.expr)
			}
		}
	}
	var unused []string
	for n := range exp.Names {
		if strings.HasPrefix(n, "creditgate_") && !used[n] {
			unused = append(unused, n)
		}
	}
	sort.Strings(unused)
	t.Logf("%d metric names used by the dashboard and alerts; exported creditgate_ series not shown anywhere: %q", len(used), unused)
}
