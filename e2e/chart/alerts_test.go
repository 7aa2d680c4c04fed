package chart

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/yaml"
)

// alertsRelease renders the PrometheusRule and the Grafana alert rules for
// release creditgate in namespace creditgate, the names the promtool unit
// tests (testdata/alerts_test.yaml) use.
var alertsRelease = valueSet{name: "alerts", release: "creditgate", namespace: "creditgate", args: []string{
	"--set", "secret.existingSecret=mine",
	"--set", "monitoring.prometheusRule.enabled=true",
	"--set", "monitoring.grafanaAlerts.enabled=true",
}}

// alertRules returns the rules of the one PrometheusRule in m.
func alertRules(t *testing.T, m *manifests) []rule {
	t.Helper()
	if len(m.PrometheusRules) != 1 || len(m.PrometheusRules[0].Spec.Groups) != 1 {
		t.Fatalf("want one PrometheusRule with one group, got %d", len(m.PrometheusRules))
	}
	rules := ruleGroups(m.PrometheusRules[0])[0].Rules
	if len(rules) == 0 {
		t.Fatal("the PrometheusRule has no rules")
	}
	return rules
}

// writeRulesFile writes rules as a Prometheus rule file.
func writeRulesFile(t *testing.T, path string, groups []ruleGroup) {
	t.Helper()
	b, err := yaml.Marshal(map[string]any{"groups": groups})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// promtoolTest is the part of a promtool unit test file this test reads.
type promtoolTest struct {
	RuleFiles []string `json:"rule_files"`
	Tests     []struct {
		Name          string `json:"name"`
		AlertRuleTest []struct {
			Alertname string           `json:"alertname"`
			ExpAlerts []map[string]any `json:"exp_alerts"`
		} `json:"alert_rule_test"`
	} `json:"tests"`
}

// TestAlertRules runs promtool on the rendered alerts: `promtool check rules`
// on the rules of both value sets, and `promtool test rules` on
// testdata/alerts_test.yaml, which must hold a firing and a quiet case for
// every alert.
func TestAlertRules(t *testing.T) {
	t.Parallel()
	promtool := tool(t, "promtool")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()

	m := render(t, alertsRelease)
	rules := alertRules(t, m)
	full := filepath.Join(dir, "rules-full.yaml")
	writeRulesFile(t, full, ruleGroups(m.PrometheusRules[0]))
	if out, err := run(ctx, dir, nil, promtool, "check", "rules", full); err != nil {
		t.Fatalf("promtool check rules: %v", err)
	} else {
		t.Log(strings.TrimSpace(out))
	}
	all := render(t, valueSets()[1])
	allPath := filepath.Join(dir, "rules-all-on.yaml")
	writeRulesFile(t, allPath, ruleGroups(all.PrometheusRules[0]))
	if _, err := run(ctx, dir, nil, promtool, "check", "rules", allPath); err != nil {
		t.Fatalf("promtool check rules (all-on values): %v", err)
	}

	// The unit tests check when alerts fire and their labels; promtool
	// compares annotations in full, so they are left out here and checked
	// for one alert by annotations_test.yaml against the full rules.
	stripped := ruleGroups(m.PrometheusRules[0])
	stripped[0].Rules = nil
	for _, r := range rules {
		r.Annotations = nil
		stripped[0].Rules = append(stripped[0].Rules, r)
	}
	writeRulesFile(t, filepath.Join(dir, "rules.yaml"), stripped)
	for _, f := range []string{"alerts_test.yaml", "annotations_test.yaml"} {
		b, err := os.ReadFile(filepath.Join("testdata", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := run(ctx, dir, nil, promtool, "test", "rules", "alerts_test.yaml", "annotations_test.yaml"); err != nil {
		t.Fatalf("promtool test rules: %v", err)
	} else {
		t.Log(strings.TrimSpace(out))
	}

	// Every alert has a test where it fires and one where it stays quiet.
	b, err := os.ReadFile(filepath.Join("testdata", "alerts_test.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var pt promtoolTest
	if err := yaml.Unmarshal(b, &pt); err != nil {
		t.Fatal(err)
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range pt.Tests {
		for _, at := range tc.AlertRuleTest {
			if len(at.ExpAlerts) > 0 {
				fires[at.Alertname] = true
			} else {
				quiet[at.Alertname] = true
			}
		}
	}
	var names []string
	for _, r := range rules {
		names = append(names, r.Alert)
		if !fires[r.Alert] {
			t.Errorf("testdata/alerts_test.yaml has no case where %s fires", r.Alert)
		}
		if !quiet[r.Alert] {
			t.Errorf("testdata/alerts_test.yaml has no case where %s stays quiet", r.Alert)
		}
	}
	for name := range fires {
		if !slices.Contains(names, name) {
			t.Errorf("testdata/alerts_test.yaml tests %s, which the chart does not define", name)
		}
	}
}

// TestAlertAnnotations checks that every alert has a severity, a summary, a
// description and a runbook_url whose anchor is a section of docs/runbook.md.
func TestAlertAnnotations(t *testing.T) {
	t.Parallel()
	m := render(t, alertsRelease)
	runbook, err := os.ReadFile(filepath.Join(repoRoot, "docs", "runbook.md"))
	if err != nil {
		t.Fatal(err)
	}
	anchors := markdownAnchors(string(runbook))
	const base = "https://github.com/creditgate/creditgate/blob/main/docs/runbook.md#"
	for _, r := range alertRules(t, m) {
		if !regexp.MustCompile(`^Creditgate[A-Z][A-Za-z]+$`).MatchString(r.Alert) {
			t.Errorf("alert name %q: want Creditgate<CamelCase>", r.Alert)
		}
		if s := r.Labels["severity"]; s != "warning" && s != "critical" {
			t.Errorf("%s: severity %q, want warning or critical", r.Alert, s)
		}
		for _, k := range []string{"summary", "description", "runbook_url"} {
			if strings.TrimSpace(r.Annotations[k]) == "" {
				t.Errorf("%s: no %s", r.Alert, k)
			}
		}
		for k := range r.Annotations {
			if !slices.Contains([]string{"summary", "description", "runbook_url"}, k) {
				t.Errorf("%s: unexpected annotation %s", r.Alert, k)
			}
		}
		url := r.Annotations["runbook_url"]
		anchor, ok := strings.CutPrefix(url, base)
		if !ok {
			t.Errorf("%s: runbook_url %q does not start with %s", r.Alert, url, base)
			continue
		}
		if !anchors[anchor] {
			t.Errorf("%s: runbook_url anchor #%s is not a section of docs/runbook.md", r.Alert, anchor)
		}
		if anchor != strings.ToLower(r.Alert) {
			t.Errorf("%s: runbook section #%s, want #%s", r.Alert, anchor, strings.ToLower(r.Alert))
		}
		if regexp.MustCompile(`__[A-Z]+__`).MatchString(r.Expr + r.Annotations["summary"] + r.Annotations["description"]) {
			t.Errorf("%s: an unreplaced placeholder in %q", r.Alert, r.Expr)
		}
	}
	if r := findRule(t, alertRules(t, m), "CreditgateLedgerDrift"); r.Labels["severity"] != "critical" {
		t.Errorf("CreditgateLedgerDrift severity %q, want critical", r.Labels["severity"])
	}

	// Disabling an alert drops it from both renderings.
	off := render(t, alertsRelease, "--set", "monitoring.alerts.disabled={CreditgateReconcilerCronJobStale}")
	for _, r := range alertRules(t, off) {
		if r.Alert == "CreditgateReconcilerCronJobStale" {
			t.Errorf("monitoring.alerts.disabled did not drop CreditgateReconcilerCronJobStale")
		}
	}
	if got, want := len(alertRules(t, off)), len(alertRules(t, m))-1; got != want {
		t.Errorf("%d alerts with one disabled, want %d", got, want)
	}
	if g := grafanaRules(t, off); len(g) != len(alertRules(t, off)) {
		t.Errorf("%d Grafana rules with one alert disabled, want %d", len(g), len(alertRules(t, off)))
	}
}

func findRule(t *testing.T, rules []rule, name string) rule {
	t.Helper()
	for _, r := range rules {
		if r.Alert == name {
			return r
		}
	}
	t.Fatalf("no alert %s", name)
	return rule{}
}

// markdownAnchors returns the anchors GitHub makes of a document's headings:
// lower case, punctuation dropped, spaces to hyphens.
func markdownAnchors(doc string) map[string]bool {
	anchors := map[string]bool{}
	drop := regexp.MustCompile(`[^\p{L}\p{N} _-]`)
	inFence := false
	for _, line := range strings.Split(doc, "\n") {
		if strings.HasPrefix(line, "```") {
			inFence = !inFence
		}
		if inFence || !strings.HasPrefix(line, "#") {
			continue
		}
		h := strings.TrimSpace(strings.TrimLeft(line, "#"))
		a := strings.ReplaceAll(drop.ReplaceAllString(strings.ToLower(h), ""), " ", "-")
		anchors[a] = true
	}
	return anchors
}

// grafanaAlertFile is Grafana's alerting file-provisioning format, as far as
// the chart uses it; decoding refuses any other field.
type grafanaAlertFile struct {
	APIVersion int `json:"apiVersion"`
	Groups     []struct {
		OrgID    int    `json:"orgId"`
		Name     string `json:"name"`
		Folder   string `json:"folder"`
		Interval string `json:"interval"`
		Rules    []grafanaRule
	} `json:"groups"`
}

type grafanaRule struct {
	UID       string `json:"uid"`
	Title     string `json:"title"`
	Condition string `json:"condition"`
	Data      []struct {
		RefID             string `json:"refId"`
		DatasourceUID     string `json:"datasourceUid"`
		RelativeTimeRange *struct {
			From int `json:"from"`
			To   int `json:"to"`
		} `json:"relativeTimeRange,omitempty"`
		Model map[string]any `json:"model"`
	} `json:"data"`
	NoDataState  string            `json:"noDataState"`
	ExecErrState string            `json:"execErrState"`
	For          string            `json:"for"`
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	IsPaused     bool              `json:"isPaused"`
}

// grafanaRules decodes the Grafana alert rules ConfigMap of m.
func grafanaRules(t *testing.T, m *manifests) []grafanaRule {
	t.Helper()
	var file *grafanaAlertFile
	for _, cm := range m.ConfigMaps {
		if cm.Labels["grafana_alert"] != "1" {
			continue
		}
		if file != nil || len(cm.Data) != 1 {
			t.Fatalf("want one grafana_alert ConfigMap with one file")
		}
		for name, data := range cm.Data {
			if !strings.HasSuffix(name, ".yaml") {
				t.Errorf("Grafana alert file %q: Grafana provisions *.yaml", name)
			}
			js, err := yaml.YAMLToJSON([]byte(data))
			if err != nil {
				t.Fatal(err)
			}
			file = &grafanaAlertFile{}
			if err := strictJSON(js, file); err != nil {
				t.Fatalf("Grafana alert rules: %v", err)
			}
		}
	}
	if file == nil {
		t.Fatal("no ConfigMap labelled grafana_alert: \"1\"")
	}
	if file.APIVersion != 1 || len(file.Groups) != 1 || file.Groups[0].OrgID != 1 || file.Groups[0].Folder == "" {
		t.Fatalf("Grafana alert file: want apiVersion 1 and one group with a folder, got %+v", file)
	}
	return file.Groups[0].Rules
}

// TestGrafanaAlertsMatchPrometheusRule checks that the Grafana-managed copy
// of the alerts is the PrometheusRule's, rule by rule, and well formed.
func TestGrafanaAlertsMatchPrometheusRule(t *testing.T) {
	t.Parallel()
	for _, vs := range []valueSet{alertsRelease, valueSets()[1]} {
		t.Run(vs.name, func(t *testing.T) {
			t.Parallel()
			m := render(t, vs)
			prom := alertRules(t, m)
			graf := grafanaRules(t, m)
			wantUID := "prometheus"
			if vs.name == "all-on" {
				wantUID = "prom"
			}
			if len(graf) != len(prom) {
				t.Errorf("%d Grafana rules, %d Prometheus alerts", len(graf), len(prom))
			}
			uids := map[string]bool{}
			for i, p := range prom {
				if i >= len(graf) {
					break
				}
				g := graf[i]
				got := rule{Alert: g.Title, For: g.For, Labels: g.Labels, Annotations: g.Annotations}
				if len(g.Data) == 2 {
					got.Expr, _ = g.Data[0].Model["expr"].(string)
				}
				if d := cmp.Diff(p, got); d != "" {
					t.Errorf("Grafana rule %d differs from the PrometheusRule (-prometheus +grafana):\n%s", i, d)
				}
				if len(g.UID) == 0 || len(g.UID) > 40 || uids[g.UID] {
					t.Errorf("%s: uid %q is empty, longer than 40 or not unique", g.Title, g.UID)
				}
				uids[g.UID] = true
				if len(g.Data) != 2 {
					t.Fatalf("%s: want a query and a condition, got %d data", g.Title, len(g.Data))
				}
				q, c := g.Data[0], g.Data[1]
				if q.RefID != "A" || q.DatasourceUID != wantUID || q.Model["instant"] != true || q.RelativeTimeRange == nil {
					t.Errorf("%s: query %+v, want refId A on data source %s, instant", g.Title, q, wantUID)
				}
				if g.Condition != "B" || c.RefID != "B" || c.DatasourceUID != "__expr__" ||
					c.Model["type"] != "math" || c.Model["expression"] != "is_number($A) || is_nan($A) || is_inf($A)" {
					t.Errorf("%s: condition %+v, want B = math is_number($A) || is_nan($A) || is_inf($A)", g.Title, c)
				}
				if g.NoDataState != "OK" || g.ExecErrState != "Error" {
					t.Errorf("%s: noDataState %q execErrState %q, want OK and Error (as Prometheus: no series, no alert)", g.Title, g.NoDataState, g.ExecErrState)
				}
			}
		})
	}
}

// TestAlertSelectors checks the selectors the alerts put on the series: the
// release's namespace and job by default, monitoring.alerts.webhookSelector
// when set.
func TestAlertSelectors(t *testing.T) {
	t.Parallel()
	m := render(t, alertsRelease)
	for _, r := range alertRules(t, m) {
		if strings.Contains(r.Expr, "creditgate_") && !strings.Contains(r.Expr, `namespace="creditgate",job="creditgate"`) {
			t.Errorf("%s does not select the release's webhook series: %s", r.Alert, r.Expr)
		}
	}
	custom := render(t, alertsRelease, "--set-string", `monitoring.alerts.webhookSelector=service="x"`)
	r := findRule(t, alertRules(t, custom), "CreditgateLedgerDrift")
	if want := fmt.Sprintf("creditgate_ledger_drift_users{%s}", `service="x"`); !strings.Contains(r.Expr, want) {
		t.Errorf("webhookSelector: expr %q lacks %q", r.Expr, want)
	}
}

// TestAlertOverrides checks monitoring.alerts.overrides: an alert's for and
// threshold change and nothing else does; an override naming no alert, or a
// threshold for an alert that compares with none, fails the render.
func TestAlertOverrides(t *testing.T) {
	t.Parallel()
	base := alertRules(t, render(t, alertsRelease))
	got := alertRules(t, render(t, alertsRelease, "--set-json",
		`monitoring.alerts.overrides={"CreditgateOutboxBacklog":{"for":"20s","threshold":30},"CreditgateLedgerDrift":{"for":"15s"}}`))
	for i, r := range got {
		want := base[i]
		switch r.Alert {
		case "CreditgateOutboxBacklog":
			want.For = "20s"
			want.Expr = strings.Replace(want.Expr, "> 3600", "> 30", 1)
		case "CreditgateLedgerDrift":
			want.For = "15s"
		}
		if d := cmp.Diff(want, r); d != "" {
			t.Errorf("%s (-want +got):\n%s", r.Alert, d)
		}
	}
	for _, tc := range []struct{ overrides, want string }{
		{`{"CreditgateNoSuchAlert":{"for":"1m"}}`, "there is no alert named CreditgateNoSuchAlert"},
		{`{"CreditgateLedgerDrift":{"threshold":2}}`, "CreditgateLedgerDrift has no threshold to override"},
		{`{"CreditgateLedgerDrift":{"for":"soon"}}`, "does not match pattern"},
	} {
		_, err := helmTemplate(t, alertsRelease, "--set-json", "monitoring.alerts.overrides="+tc.overrides)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("overrides %s: err = %v, want %q", tc.overrides, err, tc.want)
		}
	}
}
