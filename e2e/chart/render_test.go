package chart

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

// A valueSet is one way of installing the chart that the tests render.
type valueSet struct {
	name      string
	release   string
	namespace string
	args      []string
}

const (
	testDatabaseURL   = "postgres://creditgate:secret@db:5432/creditgate?sslmode=disable"
	testSigningSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
)

// valueSets are the default values (with the required secrets) and
// ci/all-on-values.yaml, which turns every option on.
func valueSets() []valueSet {
	return []valueSet{
		{name: "default", release: "cg", namespace: "payments",
			args: []string{"--set", "secret.databaseURL=" + testDatabaseURL, "--set", "secret.signingSecret=" + testSigningSecret}},
		{name: "all-on", release: "creditgate", namespace: "creditgate",
			args: []string{"-f", filepath.Join(chartDir, "ci", "all-on-values.yaml")}},
	}
}

// manifests are the objects of one `helm template`, decoded strictly.
type manifests struct {
	Deployments     []*appsv1.Deployment
	CronJobs        []*batchv1.CronJob
	Jobs            []*batchv1.Job
	Pods            []*corev1.Pod
	Services        []*corev1.Service
	ServiceAccounts []*corev1.ServiceAccount
	ConfigMaps      []*corev1.ConfigMap
	Secrets         []*corev1.Secret
	PDBs            []*policyv1.PodDisruptionBudget
	HPAs            []*autoscalingv2.HorizontalPodAutoscaler
	Ingresses       []*networkingv1.Ingress
	NetworkPolicies []*networkingv1.NetworkPolicy
	// ClusterRoleBindings: only system:auth-delegator, for the credits
	// API's TokenReviews.
	ClusterRoleBindings []*rbacv1.ClusterRoleBinding
	ServiceMonitors     []*serviceMonitor
	PrometheusRules     []*prometheusRule
	// Count is the number of objects.
	Count int
}

// The Prometheus Operator's kinds decode into its own API types (strictly:
// a field the CRD does not have fails here rather than in the cluster).
type (
	serviceMonitor = monitoringv1.ServiceMonitor
	prometheusRule = monitoringv1.PrometheusRule
)

// ruleGroup and rule are a Prometheus rule file's, for the files these tests
// write and compare (the operator's Rule holds expr and for as
// IntOrString and Duration).
type ruleGroup struct {
	Name     string `json:"name"`
	Interval string `json:"interval,omitempty"`
	Rules    []rule `json:"rules"`
}

type rule struct {
	Alert       string            `json:"alert,omitempty"`
	Record      string            `json:"record,omitempty"`
	Expr        string            `json:"expr"`
	For         string            `json:"for,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// ruleGroups converts a PrometheusRule's groups to the rule file's.
func ruleGroups(pr *prometheusRule) []ruleGroup {
	var out []ruleGroup
	for _, g := range pr.Spec.Groups {
		rg := ruleGroup{Name: g.Name}
		if g.Interval != nil {
			rg.Interval = string(*g.Interval)
		}
		for _, r := range g.Rules {
			x := rule{Alert: r.Alert, Record: r.Record, Expr: r.Expr.String(), Labels: r.Labels, Annotations: r.Annotations}
			if r.For != nil {
				x.For = string(*r.For)
			}
			rg.Rules = append(rg.Rules, x)
		}
		out = append(out, rg)
	}
	return out
}

// strictDecoder decodes every built-in kind and refuses unknown or
// duplicated fields.
var strictDecoder = serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict).UniversalDeserializer()

// helmTemplate runs helm template for vs (plus extra arguments) and returns
// the manifests, or helm's error.
func helmTemplate(t *testing.T, vs valueSet, extra ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	args := append([]string{"template", vs.release, chartDir, "--namespace", vs.namespace}, vs.args...)
	args = append(args, extra...)
	return run(ctx, "", nil, tool(t, "helm"), args...)
}

// render renders vs and decodes every object strictly.
func render(t *testing.T, vs valueSet, extra ...string) *manifests {
	t.Helper()
	out, err := helmTemplate(t, vs, extra...)
	if err != nil {
		t.Fatal(err)
	}
	m, err := decode(out)
	if err != nil {
		t.Fatalf("%s: %v", vs.name, err)
	}
	return m
}

// decode splits a multi-document YAML stream and decodes each object into its
// Kubernetes type (strictly) or, for the Prometheus Operator's kinds, into
// the structs above (also strictly).
func decode(stream string) (*manifests, error) {
	m := &manifests{}
	r := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(stream)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		js, err := yaml.YAMLToJSONStrict(doc)
		if err != nil {
			return nil, fmt.Errorf("YAML: %w\n%s", err, doc)
		}
		m.Count++
		obj, _, err := strictDecoder.Decode(js, nil, nil)
		if runtime.IsNotRegisteredError(err) {
			if err := m.addCustom(js); err != nil {
				return nil, fmt.Errorf("%w\n%s", err, doc)
			}
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("decode: %w\n%s", err, doc)
		}
		switch o := obj.(type) {
		case *appsv1.Deployment:
			m.Deployments = append(m.Deployments, o)
		case *batchv1.CronJob:
			m.CronJobs = append(m.CronJobs, o)
		case *batchv1.Job:
			m.Jobs = append(m.Jobs, o)
		case *corev1.Pod:
			m.Pods = append(m.Pods, o)
		case *corev1.Service:
			m.Services = append(m.Services, o)
		case *corev1.ServiceAccount:
			m.ServiceAccounts = append(m.ServiceAccounts, o)
		case *corev1.ConfigMap:
			m.ConfigMaps = append(m.ConfigMaps, o)
		case *corev1.Secret:
			m.Secrets = append(m.Secrets, o)
		case *policyv1.PodDisruptionBudget:
			m.PDBs = append(m.PDBs, o)
		case *autoscalingv2.HorizontalPodAutoscaler:
			m.HPAs = append(m.HPAs, o)
		case *networkingv1.Ingress:
			m.Ingresses = append(m.Ingresses, o)
		case *networkingv1.NetworkPolicy:
			m.NetworkPolicies = append(m.NetworkPolicies, o)
		case *rbacv1.ClusterRoleBinding:
			m.ClusterRoleBindings = append(m.ClusterRoleBindings, o)
		default:
			return nil, fmt.Errorf("unexpected kind %T in the chart", obj)
		}
	}
	return m, nil
}

func (m *manifests) addCustom(js []byte) error {
	var tm metav1.TypeMeta
	if err := json.Unmarshal(js, &tm); err != nil {
		return err
	}
	switch tm.GroupVersionKind().String() {
	case "monitoring.coreos.com/v1, Kind=ServiceMonitor":
		var o serviceMonitor
		if err := strictJSON(js, &o); err != nil {
			return fmt.Errorf("ServiceMonitor: %w", err)
		}
		m.ServiceMonitors = append(m.ServiceMonitors, &o)
	case "monitoring.coreos.com/v1, Kind=PrometheusRule":
		var o prometheusRule
		if err := strictJSON(js, &o); err != nil {
			return fmt.Errorf("PrometheusRule: %w", err)
		}
		m.PrometheusRules = append(m.PrometheusRules, &o)
	default:
		return fmt.Errorf("unknown kind %s", tm.GroupVersionKind())
	}
	return nil
}

// strictJSON decodes js into v, refusing unknown fields and trailing data.
func strictJSON(js []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(js))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return err
	}
	if d.More() {
		return errors.New("trailing data")
	}
	return nil
}

func stripComments(doc []byte) []byte {
	var b bytes.Buffer
	for _, line := range bytes.Split(doc, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("#")) {
			b.Write(line)
			b.WriteByte('\n')
		}
	}
	return b.Bytes()
}

// The lookups below fail the test when the object is missing.

func (m *manifests) configMap(t *testing.T, name string) *corev1.ConfigMap {
	t.Helper()
	for _, o := range m.ConfigMaps {
		if o.Name == name {
			return o
		}
	}
	t.Fatalf("no ConfigMap %q", name)
	return nil
}

func (m *manifests) secret(name string) *corev1.Secret {
	for _, o := range m.Secrets {
		if o.Name == name {
			return o
		}
	}
	return nil
}

func (m *manifests) deployment(t *testing.T) *appsv1.Deployment {
	t.Helper()
	if len(m.Deployments) != 1 {
		t.Fatalf("%d Deployments, want 1", len(m.Deployments))
	}
	return m.Deployments[0]
}

func (m *manifests) cronJob(t *testing.T) *batchv1.CronJob {
	t.Helper()
	if len(m.CronJobs) != 1 {
		t.Fatalf("%d CronJobs, want 1", len(m.CronJobs))
	}
	return m.CronJobs[0]
}

func (m *manifests) migrationsJob(t *testing.T) *batchv1.Job {
	t.Helper()
	if len(m.Jobs) != 1 {
		t.Fatalf("%d Jobs, want 1 (migrations)", len(m.Jobs))
	}
	return m.Jobs[0]
}

// service is the webhook's Service (the one with the http port); the credits
// API has a Service of its own (apiService).
func (m *manifests) service(t *testing.T) *corev1.Service {
	t.Helper()
	return m.serviceWithPort(t, "http")
}

// apiService is the credits API's Service.
func (m *manifests) apiService(t *testing.T) *corev1.Service {
	t.Helper()
	return m.serviceWithPort(t, "api")
}

func (m *manifests) serviceWithPort(t *testing.T, port string) *corev1.Service {
	t.Helper()
	if len(m.Services) != 2 {
		t.Fatalf("%d Services, want 2 (webhook, credits API)", len(m.Services))
	}
	for _, s := range m.Services {
		for _, p := range s.Spec.Ports {
			if p.Name == port {
				return s
			}
		}
	}
	t.Fatalf("no Service with a port named %s", port)
	return nil
}
