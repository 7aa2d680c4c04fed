package chart

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/relabel"
	"github.com/prometheus/prometheus/util/strutil"
	yamlv3 "go.yaml.in/yaml/v3"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/creditgate/creditgate/e2e/promconfig"
)

// TestPrometheusConfigFromChart translates the chart's ServiceMonitor and
// PrometheusRule the way the e2e monitoring spec does and has promtool check
// the configuration and its rule file; the scrape configuration keeps only
// the release's webhook Service and its metrics port, and names the job
// after the Service as the alerts expect.
func TestPrometheusConfigFromChart(t *testing.T) {
	t.Parallel()
	promtool := tool(t, "promtool")
	m := render(t, alertsRelease,
		"--set", "monitoring.serviceMonitor.enabled=true",
		"--set", "monitoring.serviceMonitor.interval=5s",
		"--set", "monitoring.serviceMonitor.scrapeTimeout=4s",
		"--set", "monitoring.prometheusRule.interval=5s",
		"--set-json", `monitoring.serviceMonitor.relabelings=[{"targetLabel":"cluster","replacement":"e2e"}]`,
		"--set-json", `monitoring.serviceMonitor.metricRelabelings=[{"action":"drop","sourceLabels":["__name__"],"regex":"go_gc_.*"}]`,
	)
	if len(m.ServiceMonitors) != 1 || len(m.PrometheusRules) != 1 {
		t.Fatalf("want one ServiceMonitor and one PrometheusRule, got %d and %d", len(m.ServiceMonitors), len(m.PrometheusRules))
	}
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`), 0o600); err != nil {
		t.Fatal(err)
	}
	scs, err := promconfig.ScrapeConfigs(*m.ServiceMonitors[0], promconfig.Options{KubeconfigFile: kubeconfig})
	if err != nil {
		t.Fatal(err)
	}
	rules, err := promconfig.RuleFile(*m.PrometheusRules[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), rules, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := promconfig.Config{
		Global:        promconfig.Global{EvaluationInterval: "5s"},
		RuleFiles:     []string{"rules.yaml"},
		ScrapeConfigs: scs,
	}.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(path, cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := run(ctx, dir, nil, promtool, "check", "config", path); err != nil {
		t.Fatalf("promtool check config: %v\n%s", err, cfg)
	} else {
		t.Log(strings.TrimSpace(out))
	}

	if len(scs) != 1 {
		t.Fatalf("want one scrape config, got %d", len(scs))
	}
	sc := scs[0]
	if sc.JobName != "serviceMonitor/creditgate/creditgate/0" || sc.ScrapeInterval != "5s" || sc.ScrapeTimeout != "4s" || sc.MetricsPath != "/metrics" {
		t.Errorf("scrape config: %+v", sc)
	}
	if sd := sc.KubernetesSDConfigs; len(sd) != 1 || sd[0].Role != "endpoints" || sd[0].Namespaces == nil || !slices.Equal(sd[0].Namespaces.Names, []string{"creditgate"}) {
		t.Errorf("service discovery: %+v", sd)
	}
	var keeps, jobFromService bool
	var ports []string
	for _, r := range sc.RelabelConfigs {
		switch {
		case r.Action == "keep" && slices.Equal(r.SourceLabels, []string{"__meta_kubernetes_endpoint_port_name"}):
			ports = append(ports, r.Regex)
		case r.Action == "keep" && len(r.SourceLabels) == 2 && r.SourceLabels[0] == "__meta_kubernetes_service_label_app_kubernetes_io_component":
			keeps = r.Regex == "(webhook);true"
		case r.TargetLabel == "job" && slices.Equal(r.SourceLabels, []string{"__meta_kubernetes_service_name"}):
			jobFromService = true
		}
	}
	if !slices.Equal(ports, []string{"metrics"}) || !keeps || !jobFromService {
		t.Errorf("relabelings: ports %v, component selector %v, job from the Service %v:\n%s", ports, keeps, jobFromService, cfg)
	}
	// The chart's own relabelings come after the operator's, as the operator
	// orders them; metric relabelings are passed through.
	if last := sc.RelabelConfigs[len(sc.RelabelConfigs)-1]; last.TargetLabel != "cluster" || last.Replacement == nil || *last.Replacement != "e2e" {
		t.Errorf("last relabeling %+v, want the chart's (cluster=e2e)", last)
	}
	if len(sc.MetricRelabelConfigs) != 1 || sc.MetricRelabelConfigs[0].Action != "drop" {
		t.Errorf("metric relabelings: %+v", sc.MetricRelabelConfigs)
	}
	if !bytes.Contains(rules, []byte("interval: 5s")) || !bytes.Contains(rules, []byte("alert: CreditgateLedgerDrift")) {
		t.Errorf("rule file lacks the group interval or the alerts:\n%s", rules)
	}
}

// TestPrometheusConfigRefusesWhatItCannotTranslate: a ServiceMonitor field
// the translation does not carry is an error naming it, not a silent drop.
func TestPrometheusConfigRefusesWhatItCannotTranslate(t *testing.T) {
	t.Parallel()
	sm := monitoringv1.ServiceMonitor{}
	sm.Namespace, sm.Name = "ns", "sm"
	sm.Spec.Endpoints = []monitoringv1.Endpoint{{Port: "metrics", TLSConfig: &monitoringv1.TLSConfig{}}}
	_, err := promconfig.ScrapeConfigs(sm, promconfig.Options{})
	if err == nil || !strings.Contains(err.Error(), "spec.endpoints[0].tlsConfig") {
		t.Fatalf("err = %v, want one naming spec.endpoints[0].tlsConfig", err)
	}
	sm.Spec.Endpoints = nil
	if _, err := promconfig.ScrapeConfigs(sm, promconfig.Options{}); err == nil {
		t.Fatal("a ServiceMonitor without endpoints translated")
	}
}

// TestPrometheusConfigRelabelsLikeTheOperator runs the translated
// relabelings through Prometheus' own relabeling code on the targets
// Kubernetes discovery would hand it for the release's Services (their labels
// as the chart renders them): only the webhook Service's metrics port is
// scraped, labelled as the alerts select it (job = the Service's name).
func TestPrometheusConfigRelabelsLikeTheOperator(t *testing.T) {
	t.Parallel()
	m := render(t, alertsRelease, "--set", "monitoring.serviceMonitor.enabled=true")
	scs, err := promconfig.ScrapeConfigs(*m.ServiceMonitors[0], promconfig.Options{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := yaml.Marshal(scs[0].RelabelConfigs)
	if err != nil {
		t.Fatal(err)
	}
	var cfgs []*relabel.Config
	if err := yamlv3.Unmarshal(b, &cfgs); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	for _, c := range cfgs {
		if err := c.Validate(model.UTF8Validation); err != nil {
			t.Fatalf("relabel config %+v: %v", c, err)
		}
	}
	// target is what the endpoints role discovers for one address of svc's
	// port, on a pod in phase.
	target := func(svc *corev1.Service, port, phase string) labels.Labels {
		l := map[string]string{
			"__address__":                          "10.244.0.9:9090",
			"job":                                  scs[0].JobName,
			"__meta_kubernetes_namespace":          svc.Namespace,
			"__meta_kubernetes_service_name":       svc.Name,
			"__meta_kubernetes_endpoint_port_name": port,
			"__meta_kubernetes_endpoint_address_target_kind": "Pod",
			"__meta_kubernetes_endpoint_address_target_name": "creditgate-abc",
			"__meta_kubernetes_pod_name":                     "creditgate-abc",
			"__meta_kubernetes_pod_container_name":           "webhook",
			"__meta_kubernetes_pod_phase":                    phase,
		}
		for k, v := range svc.Labels {
			l["__meta_kubernetes_service_label_"+strutil.SanitizeLabelName(k)] = v
			l["__meta_kubernetes_service_labelpresent_"+strutil.SanitizeLabelName(k)] = "true"
		}
		return labels.FromMap(l)
	}
	services := map[string]*corev1.Service{}
	for _, s := range m.Services {
		services[s.Name] = s
	}
	webhook, api := services["creditgate"], services["creditgate-api"]
	if webhook == nil || api == nil {
		t.Fatalf("want Services creditgate and creditgate-api, got %v", services)
	}
	other := webhook.DeepCopy()
	other.Name, other.Labels["app.kubernetes.io/instance"] = "other", "other"
	for _, tc := range []struct {
		name string
		in   labels.Labels
		keep bool
	}{
		{"the webhook Service's metrics port", target(webhook, "metrics", "Running"), true},
		{"the webhook Service's http port", target(webhook, "http", "Running"), false},
		{"the API Service", target(api, "api", "Running"), false},
		{"another release's Service", target(other, "metrics", "Running"), false},
		{"a pod that has finished", target(webhook, "metrics", "Succeeded"), false},
	} {
		lb := labels.NewBuilder(tc.in)
		keep := relabel.ProcessBuilder(lb, cfgs...)
		if keep != tc.keep {
			t.Errorf("%s: kept %v, want %v", tc.name, keep, tc.keep)
			continue
		}
		if !keep {
			continue
		}
		got := map[string]string{}
		lb.Labels().Range(func(l labels.Label) {
			if !strings.HasPrefix(l.Name, "__") {
				got[l.Name] = l.Value
			}
		})
		want := map[string]string{"job": "creditgate", "namespace": "creditgate", "service": "creditgate",
			"pod": "creditgate-abc", "container": "webhook", "endpoint": "metrics"}
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("%s: target labels (-want +got):\n%s", tc.name, d)
		}
	}
}
