// Package promconfig turns the Prometheus Operator objects the chart installs
// (ServiceMonitor, PrometheusRule) into the Prometheus configuration and rule
// file that the operator generates for them, so that a plain Prometheus
// (the e2e monitoring spec's, run without the operator) scrapes and alerts
// exactly as one managed by the operator would.
//
// It translates what the chart can put in those objects, the way the
// operator (v0.85, service discovery role "endpoints") does: the job, the
// Service label selector, the port, the namespace/service/pod/container/
// endpoint target labels, jobLabel, targetLabels, podTargetLabels, the
// interval, timeout, path, scheme, params and honor settings, relabelings
// and metricRelabelings. Anything else (TLS, authorization, label selector
// expressions, target ports, …) is refused with an error naming the field,
// never silently dropped.
package promconfig

import (
	"errors"
	"fmt"
	"sort"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/prometheus/prometheus/util/strutil"
	"sigs.k8s.io/yaml"
)

// Config is the part of a Prometheus configuration file this package writes.
type Config struct {
	Global        Global         `json:"global"`
	RuleFiles     []string       `json:"rule_files,omitempty"`
	ScrapeConfigs []ScrapeConfig `json:"scrape_configs"`
}

// Global is the global section.
type Global struct {
	ScrapeInterval     string `json:"scrape_interval,omitempty"`
	ScrapeTimeout      string `json:"scrape_timeout,omitempty"`
	EvaluationInterval string `json:"evaluation_interval,omitempty"`
}

// ScrapeConfig is one scrape_configs entry.
type ScrapeConfig struct {
	JobName              string              `json:"job_name"`
	HonorLabels          bool                `json:"honor_labels,omitempty"`
	HonorTimestamps      *bool               `json:"honor_timestamps,omitempty"`
	ScrapeInterval       string              `json:"scrape_interval,omitempty"`
	ScrapeTimeout        string              `json:"scrape_timeout,omitempty"`
	MetricsPath          string              `json:"metrics_path,omitempty"`
	Scheme               string              `json:"scheme,omitempty"`
	Params               map[string][]string `json:"params,omitempty"`
	SampleLimit          uint64              `json:"sample_limit,omitempty"`
	KubernetesSDConfigs  []KubernetesSD      `json:"kubernetes_sd_configs,omitempty"`
	StaticConfigs        []StaticConfig      `json:"static_configs,omitempty"`
	RelabelConfigs       []Relabel           `json:"relabel_configs,omitempty"`
	MetricRelabelConfigs []Relabel           `json:"metric_relabel_configs,omitempty"`
}

// KubernetesSD is a kubernetes_sd_configs entry.
type KubernetesSD struct {
	Role string `json:"role"`
	// KubeconfigFile, when set, is how Prometheus reaches the API server
	// from outside the cluster; empty means in-cluster.
	KubeconfigFile string      `json:"kubeconfig_file,omitempty"`
	Namespaces     *Namespaces `json:"namespaces,omitempty"`
}

// Namespaces limits discovery to some namespaces.
type Namespaces struct {
	Names []string `json:"names"`
}

// StaticConfig is a static_configs entry.
type StaticConfig struct {
	Targets []string          `json:"targets"`
	Labels  map[string]string `json:"labels,omitempty"`
}

// Relabel is one relabel_configs or metric_relabel_configs rule.
type Relabel struct {
	SourceLabels []string `json:"source_labels,omitempty"`
	Separator    *string  `json:"separator,omitempty"`
	TargetLabel  string   `json:"target_label,omitempty"`
	Regex        string   `json:"regex,omitempty"`
	Modulus      uint64   `json:"modulus,omitempty"`
	Replacement  *string  `json:"replacement,omitempty"`
	Action       string   `json:"action,omitempty"`
}

// Options are what the operator takes from the Prometheus object rather
// than from the ServiceMonitor.
type Options struct {
	// KubeconfigFile: see KubernetesSD.
	KubeconfigFile string
}

// sanitize turns a Kubernetes label name into the suffix Prometheus' service
// discovery gives its meta labels (and the operator its target labels).
var sanitize = strutil.SanitizeLabelName

func ptr[T any](v T) *T { return &v }

// ScrapeConfigs returns one scrape configuration per endpoint of sm, named
// serviceMonitor/<namespace>/<name>/<index> like the operator's.
func ScrapeConfigs(sm monitoringv1.ServiceMonitor, o Options) ([]ScrapeConfig, error) {
	s := sm.Spec
	where := fmt.Sprintf("ServiceMonitor %s/%s", sm.Namespace, sm.Name)
	var unsupported []string
	refuse := func(field string, set bool) {
		if set {
			unsupported = append(unsupported, field)
		}
	}
	refuse("spec.selector.matchExpressions", len(s.Selector.MatchExpressions) > 0)
	refuse("spec.selectorMechanism", s.SelectorMechanism != nil)
	refuse("spec.attachMetadata", s.AttachMetadata != nil)
	refuse("spec.scrapeClass", s.ScrapeClassName != nil)
	refuse("spec.scrapeProtocols", len(s.ScrapeProtocols) > 0)
	refuse("spec.targetLimit", s.TargetLimit != nil)
	refuse("spec.labelLimit", s.LabelLimit != nil)
	for i, ep := range s.Endpoints {
		at := fmt.Sprintf("spec.endpoints[%d].", i)
		refuse(at+"targetPort", ep.TargetPort != nil)
		refuse(at+"tlsConfig", ep.TLSConfig != nil)
		// Deprecated fields still reach the cluster: refuse them too.
		refuse(at+"bearerTokenFile", ep.BearerTokenFile != "")      //nolint:staticcheck // SA1019: refused, not used
		refuse(at+"bearerTokenSecret", ep.BearerTokenSecret != nil) //nolint:staticcheck // SA1019: refused, not used
		refuse(at+"authorization", ep.Authorization != nil)
		refuse(at+"basicAuth", ep.BasicAuth != nil)
		refuse(at+"oauth2", ep.OAuth2 != nil)
		refuse(at+"proxyUrl", ep.ProxyURL != nil)
		if ep.Port == "" {
			unsupported = append(unsupported, at+"port (empty: only named ports are translated)")
		}
	}
	if len(unsupported) > 0 {
		return nil, fmt.Errorf("%s: not translated: %v", where, unsupported)
	}
	if len(s.Endpoints) == 0 {
		return nil, fmt.Errorf("%s: no endpoints", where)
	}

	namespaces := s.NamespaceSelector.MatchNames
	if !s.NamespaceSelector.Any && len(namespaces) == 0 {
		namespaces = []string{sm.Namespace}
	}
	sd := KubernetesSD{Role: "endpoints", KubeconfigFile: o.KubeconfigFile}
	if !s.NamespaceSelector.Any {
		sd.Namespaces = &Namespaces{Names: namespaces}
	}

	var out []ScrapeConfig
	for i, ep := range s.Endpoints {
		sc := ScrapeConfig{
			JobName:             fmt.Sprintf("serviceMonitor/%s/%s/%d", sm.Namespace, sm.Name, i),
			HonorLabels:         ep.HonorLabels,
			HonorTimestamps:     ep.HonorTimestamps,
			ScrapeInterval:      string(ep.Interval),
			ScrapeTimeout:       string(ep.ScrapeTimeout),
			MetricsPath:         ep.Path,
			Scheme:              ep.Scheme,
			Params:              ep.Params,
			KubernetesSDConfigs: []KubernetesSD{sd},
		}
		if s.SampleLimit != nil {
			sc.SampleLimit = *s.SampleLimit
		}
		r := []Relabel{{SourceLabels: []string{"job"}, TargetLabel: "__tmp_prometheus_job_name"}}
		// The Service's labels must match the selector.
		keys := make([]string, 0, len(s.Selector.MatchLabels))
		for k := range s.Selector.MatchLabels {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			r = append(r, Relabel{
				Action: "keep",
				SourceLabels: []string{
					"__meta_kubernetes_service_label_" + sanitize(k),
					"__meta_kubernetes_service_labelpresent_" + sanitize(k),
				},
				Regex: fmt.Sprintf("(%s);true", s.Selector.MatchLabels[k]),
			})
		}
		r = append(r,
			Relabel{Action: "keep", SourceLabels: []string{"__meta_kubernetes_endpoint_port_name"}, Regex: ep.Port},
			Relabel{
				SourceLabels: []string{"__meta_kubernetes_endpoint_address_target_kind", "__meta_kubernetes_endpoint_address_target_name"},
				Separator:    ptr(";"), Regex: "Node;(.*)", Replacement: ptr("${1}"), TargetLabel: "node",
			},
			Relabel{
				SourceLabels: []string{"__meta_kubernetes_endpoint_address_target_kind", "__meta_kubernetes_endpoint_address_target_name"},
				Separator:    ptr(";"), Regex: "Pod;(.*)", Replacement: ptr("${1}"), TargetLabel: "pod",
			},
			Relabel{SourceLabels: []string{"__meta_kubernetes_namespace"}, TargetLabel: "namespace"},
			Relabel{SourceLabels: []string{"__meta_kubernetes_service_name"}, TargetLabel: "service"},
			Relabel{SourceLabels: []string{"__meta_kubernetes_pod_name"}, TargetLabel: "pod"},
			Relabel{SourceLabels: []string{"__meta_kubernetes_pod_container_name"}, TargetLabel: "container"},
		)
		if ep.FilterRunning == nil || *ep.FilterRunning {
			r = append(r, Relabel{Action: "drop", SourceLabels: []string{"__meta_kubernetes_pod_phase"}, Regex: "(Failed|Succeeded)"})
		}
		for _, l := range s.TargetLabels {
			r = append(r, Relabel{SourceLabels: []string{"__meta_kubernetes_service_label_" + sanitize(l)}, TargetLabel: sanitize(l), Regex: "(.+)", Replacement: ptr("${1}")})
		}
		for _, l := range s.PodTargetLabels {
			r = append(r, Relabel{SourceLabels: []string{"__meta_kubernetes_pod_label_" + sanitize(l)}, TargetLabel: sanitize(l), Regex: "(.+)", Replacement: ptr("${1}")})
		}
		// The job is the Service's name, or its jobLabel label's value.
		r = append(r, Relabel{SourceLabels: []string{"__meta_kubernetes_service_name"}, TargetLabel: "job", Replacement: ptr("${1}")})
		if s.JobLabel != "" {
			r = append(r, Relabel{SourceLabels: []string{"__meta_kubernetes_service_label_" + sanitize(s.JobLabel)}, TargetLabel: "job", Regex: "(.+)", Replacement: ptr("${1}")})
		}
		r = append(r, Relabel{TargetLabel: "endpoint", Replacement: ptr(ep.Port)})
		user, err := relabels(ep.RelabelConfigs)
		if err != nil {
			return nil, fmt.Errorf("%s: spec.endpoints[%d].relabelings: %w", where, i, err)
		}
		sc.RelabelConfigs = append(r, user...)
		if sc.MetricRelabelConfigs, err = relabels(ep.MetricRelabelConfigs); err != nil {
			return nil, fmt.Errorf("%s: spec.endpoints[%d].metricRelabelings: %w", where, i, err)
		}
		out = append(out, sc)
	}
	return out, nil
}

func relabels(in []monitoringv1.RelabelConfig) ([]Relabel, error) {
	var out []Relabel
	for i, c := range in {
		r := Relabel{
			Separator:   c.Separator,
			TargetLabel: c.TargetLabel,
			Regex:       c.Regex,
			Modulus:     c.Modulus,
			Replacement: c.Replacement,
			Action:      c.Action,
		}
		for _, l := range c.SourceLabels {
			r.SourceLabels = append(r.SourceLabels, string(l))
		}
		if r.Action == "" && r.TargetLabel == "" {
			return nil, fmt.Errorf("[%d]: a replace needs a targetLabel", i)
		}
		out = append(out, r)
	}
	return out, nil
}

// RuleFile returns the rule file the operator writes for the PrometheusRules
// (their groups, unchanged, in order).
func RuleFile(rules ...monitoringv1.PrometheusRule) ([]byte, error) {
	var groups []monitoringv1.RuleGroup
	names := map[string]string{}
	for _, pr := range rules {
		for _, g := range pr.Spec.Groups {
			where := pr.Namespace + "/" + pr.Name
			if other, dup := names[g.Name]; dup {
				return nil, fmt.Errorf("PrometheusRule %s: group %q is also in %s", where, g.Name, other)
			}
			names[g.Name] = where
			groups = append(groups, g)
		}
	}
	if len(groups) == 0 {
		return nil, errors.New("no rule groups")
	}
	return yaml.Marshal(map[string]any{"groups": groups})
}

// Marshal writes c as a Prometheus configuration file.
func (c Config) Marshal() ([]byte, error) { return yaml.Marshal(c) }
