//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"

	"github.com/creditgate/creditgate/e2e/promconfig"
)

// The monitoring spec's Prometheus and Pushgateway: real servers (built by
// hack/tools.sh from the Prometheus module at the promtool version, and the
// Pushgateway's), run on this host like the suite's PostgreSQL and fake
// Clerk. Prometheus discovers the pods through the API server (the
// kubeconfig's) and scrapes them at their pod IPs, with the configuration
// and rules that promconfig translates from the chart's ServiceMonitor and
// PrometheusRule as the cluster holds them.

// freeAddr returns host:port with a port free on host right now.
func freeAddr(host string) string {
	GinkgoHelper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	Expect(err).NotTo(HaveOccurred())
	addr := ln.Addr().String()
	Expect(ln.Close()).To(Succeed())
	return addr
}

// startProcess starts bin with args, its output in logFile, and stops it
// when the spec tree ends.
func startProcess(bin, logFile string, args ...string) {
	GinkgoHelper()
	f, err := os.Create(logFile)
	Expect(err).NotTo(HaveOccurred())
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = dieWithSuite()
	Expect(cmd.Start()).To(Succeed())
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); _ = f.Close(); close(done) }()
	DeferCleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
}

// promServer is a client of one Prometheus' HTTP API.
type promServer struct {
	base   string
	client *http.Client
}

// get sends GET path?query and decodes the "data" of a successful answer.
func (p *promServer) get(ctx context.Context, path string, q url.Values, data any) error {
	u := p.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	var env struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(b, &env); err != nil {
		return fmt.Errorf("GET %s: %d %s", path, resp.StatusCode, b)
	}
	if env.Status != "success" {
		return fmt.Errorf("GET %s: %s", path, env.Error)
	}
	return json.Unmarshal(env.Data, data)
}

type promTarget struct {
	Labels     map[string]string `json:"labels"`
	ScrapePool string            `json:"scrapePool"`
	Health     string            `json:"health"`
	LastError  string            `json:"lastError"`
}

func (p *promServer) targets(ctx context.Context) ([]promTarget, error) {
	var d struct {
		ActiveTargets []promTarget `json:"activeTargets"`
	}
	err := p.get(ctx, "/api/v1/targets", url.Values{"state": {"active"}}, &d)
	return d.ActiveTargets, err
}

type promAlert struct {
	Labels map[string]string `json:"labels"`
	State  string            `json:"state"`
}

func (p *promServer) alerts(ctx context.Context) ([]promAlert, error) {
	var d struct {
		Alerts []promAlert `json:"alerts"`
	}
	err := p.get(ctx, "/api/v1/alerts", nil, &d)
	return d.Alerts, err
}

// queryRange evaluates expr over [start, end] and returns how many of the
// result's samples are numbers (not NaN) and how many series it has.
func (p *promServer) queryRange(ctx context.Context, expr string, start, end time.Time, step time.Duration) (numbers, series int, err error) {
	var d struct {
		Result []struct {
			Values [][2]any `json:"values"`
		} `json:"result"`
	}
	err = p.get(ctx, "/api/v1/query_range", url.Values{
		"query": {expr},
		"start": {strconv.FormatInt(start.Unix(), 10)},
		"end":   {strconv.FormatInt(end.Unix(), 10)},
		"step":  {strconv.Itoa(int(step.Seconds()))},
	}, &d)
	for _, r := range d.Result {
		for _, v := range r.Values {
			if s, ok := v[1].(string); ok && s != "NaN" {
				numbers++
			}
		}
	}
	return numbers, len(d.Result), err
}

// labelValues returns the values of label on the series matching match.
func (p *promServer) labelValues(ctx context.Context, label, match string) ([]string, error) {
	var vs []string
	err := p.get(ctx, "/api/v1/label/"+label+"/values", url.Values{"match[]": {match}}, &vs)
	return vs, err
}

// startPrometheus translates the release's ServiceMonitors and
// PrometheusRules (read back from the cluster), adds extra scrape
// configurations, and starts Prometheus on 127.0.0.1; it returns once
// Prometheus is ready.
func startPrometheus(ctx context.Context, bin, dir string, extra ...promconfig.ScrapeConfig) *promServer {
	GinkgoHelper()
	sel := "app.kubernetes.io/instance=" + env.release
	var sms monitoringv1.ServiceMonitorList
	Expect(json.Unmarshal([]byte(kubectl("get", "servicemonitors.monitoring.coreos.com", "-l", sel, "-o", "json")), &sms)).To(Succeed())
	var prs monitoringv1.PrometheusRuleList
	Expect(json.Unmarshal([]byte(kubectl("get", "prometheusrules.monitoring.coreos.com", "-l", sel, "-o", "json")), &prs)).To(Succeed())
	Expect(sms.Items).To(HaveLen(1), "the release's ServiceMonitors")
	Expect(prs.Items).To(HaveLen(1), "the release's PrometheusRules")

	cfg := promconfig.Config{RuleFiles: []string{filepath.Join(dir, "rules.yaml")}}
	for _, sm := range sms.Items {
		scs, err := promconfig.ScrapeConfigs(sm, promconfig.Options{KubeconfigFile: os.Getenv("KUBECONFIG")})
		Expect(err).NotTo(HaveOccurred())
		cfg.ScrapeConfigs = append(cfg.ScrapeConfigs, scs...)
	}
	cfg.ScrapeConfigs = append(cfg.ScrapeConfigs, extra...)
	rb, err := promconfig.RuleFile(prs.Items...)
	Expect(err).NotTo(HaveOccurred())
	Expect(os.WriteFile(filepath.Join(dir, "rules.yaml"), rb, 0o644)).To(Succeed())
	cb, err := cfg.Marshal()
	Expect(err).NotTo(HaveOccurred())
	Expect(os.WriteFile(filepath.Join(dir, "prometheus.yml"), cb, 0o644)).To(Succeed())
	GinkgoWriter.Printf("prometheus.yml (translated from the cluster's ServiceMonitor):\n%s\n", cb)

	addr := freeAddr("127.0.0.1")
	startProcess(bin, filepath.Join(dir, "prometheus.log"),
		"--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--storage.tsdb.retention.time=2h",
		"--web.listen-address="+addr,
	)
	p := &promServer{base: "http://" + addr, client: &http.Client{Timeout: 10 * time.Second}}
	Eventually(func() (int, error) {
		resp, err := p.client.Get(p.base + "/-/ready")
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}).WithContext(ctx).WithTimeout(time.Minute).WithPolling(250 * time.Millisecond).Should(Equal(http.StatusOK))
	return p
}

// alertTimeline polls Prometheus' alerts and records each alert's state
// changes (inactive, pending, firing) with their times, logging each as it
// is seen.
type alertTimeline struct {
	mu      sync.Mutex
	state   map[string]string
	changes []alertChange
}

type alertChange struct {
	At       time.Time
	Alert    string
	From, To string
}

func watchAlerts(ctx context.Context, p *promServer) *alertTimeline {
	t := &alertTimeline{state: map[string]string{}}
	go func() {
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for {
			alerts, err := p.alerts(ctx)
			if err == nil {
				t.observe(time.Now(), alerts)
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return t
}

func (t *alertTimeline) observe(now time.Time, alerts []promAlert) {
	t.mu.Lock()
	defer t.mu.Unlock()
	seen := map[string]string{}
	for _, a := range alerts {
		name := a.Labels["alertname"]
		// One alert name may have several series; firing wins.
		if seen[name] != "firing" {
			seen[name] = a.State
		}
	}
	names := map[string]bool{}
	for n := range seen {
		names[n] = true
	}
	for n := range t.state {
		names[n] = true
	}
	for n := range names {
		from, to := t.stateOf(n), seen[n]
		if to == "" {
			to = "inactive"
		}
		if from == to {
			continue
		}
		t.changes = append(t.changes, alertChange{At: now, Alert: n, From: from, To: to})
		GinkgoWriter.Printf("%s  alert %-34s %s -> %s\n", now.Format("15:04:05.000"), n, from, to)
		if to == "inactive" {
			delete(t.state, n)
		} else {
			t.state[n] = to
		}
	}
}

// stateOf is an alert's last seen state; t.mu must be held.
func (t *alertTimeline) stateOf(name string) string {
	if s, ok := t.state[name]; ok {
		return s
	}
	return "inactive"
}

// State is an alert's last seen state: inactive, pending or firing.
func (t *alertTimeline) State(name string) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.stateOf(name)
}

// Active lists the alerts pending or firing.
func (t *alertTimeline) Active() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var names []string
	for n := range t.state {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// First returns when alert first changed to state at or after since.
func (t *alertTimeline) First(alert, state string, since time.Time) (time.Time, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, c := range t.changes {
		if c.Alert == alert && c.To == state && !c.At.Before(since) {
			return c.At, true
		}
	}
	return time.Time{}, false
}

// Changes returns a copy of every change seen.
func (t *alertTimeline) Changes() []alertChange {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]alertChange(nil), t.changes...)
}

// alertCycle is one alert's pending, firing and resolved times under one
// cause, for the spec's summary.
type alertCycle struct {
	Alert                                         string
	Cause                                         string
	CausedAt, Pending, Firing, HealedAt, Resolved time.Time
}

func (c alertCycle) String() string {
	since := func(t time.Time) string { return fmt.Sprintf("%5.1fs", t.Sub(c.CausedAt).Seconds()) }
	return fmt.Sprintf("%-34s %s  pending +%s  firing +%s  healed +%s  resolved +%s  (%s)",
		c.Alert, c.CausedAt.Format("15:04:05"), since(c.Pending), since(c.Firing), since(c.HealedAt), since(c.Resolved), c.Cause)
}

// formatCycles is the summary table of cycles.
func formatCycles(cycles []alertCycle) string {
	var b strings.Builder
	b.WriteString("alert                              caused    pending → firing → resolved, seconds after the cause\n")
	for _, c := range cycles {
		b.WriteString(c.String() + "\n")
	}
	return b.String()
}
