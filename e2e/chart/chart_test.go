package chart

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Fixed by the binaries' defaults as the chart sets them: HTTP_ADDR and
// METRICS_ADDR, and the routes of pkg/webhook.
const (
	httpPort    = 8080
	metricsPort = 9090
	livePath    = "/healthz"
	readyPath   = "/readyz"
	webhookPath = "/api/webhooks/clerk"
)

// Labels that change with every chart or app version: never in a selector.
var unstableLabels = []string{"app.kubernetes.io/version", "helm.sh/chart"}

func TestLint(t *testing.T) {
	t.Parallel()
	helm := tool(t, "helm")
	for _, vs := range valueSets() {
		t.Run(vs.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			args := append([]string{"lint", "--strict", chartDir, "--namespace", vs.namespace}, vs.args...)
			if _, err := run(ctx, "", nil, helm, args...); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestManifests(t *testing.T) {
	t.Parallel()
	for _, vs := range valueSets() {
		t.Run(vs.name, func(t *testing.T) {
			t.Parallel()
			m := render(t, vs)
			t.Run("env wiring", func(t *testing.T) { checkEnvWiring(t, vs, m) })
			t.Run("migrations hook", func(t *testing.T) { checkMigrations(t, m) })
			t.Run("probes and ports", func(t *testing.T) { checkProbes(t, m) })
			t.Run("selectors", func(t *testing.T) { checkSelectors(t, m) })
			t.Run("security", func(t *testing.T) { checkSecurity(t, m) })
			t.Run("deployment", func(t *testing.T) { checkDeployment(t, vs, m) })
			t.Run("reconciler", func(t *testing.T) { checkCronJob(t, vs, m) })
			t.Run("helm test pod", func(t *testing.T) { checkTestPod(t, vs, m) })
			t.Run("ingress", func(t *testing.T) { checkIngress(t, m) })
			t.Run("credits API", func(t *testing.T) { checkCreditsAPI(t, m) })
		})
	}
}

// container returns the named container of a pod spec.
func container(t *testing.T, spec corev1.PodSpec, name string) corev1.Container {
	t.Helper()
	for _, c := range spec.Containers {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no container %q", name)
	return corev1.Container{}
}

// envNames is every variable a container gets: the keys of the ConfigMaps it
// reads with envFrom and its env entries.
func envNames(t *testing.T, m *manifests, c corev1.Container) []string {
	t.Helper()
	set := map[string]bool{}
	for _, ef := range c.EnvFrom {
		if ef.ConfigMapRef == nil || ef.Prefix != "" {
			t.Fatalf("envFrom %+v: only ConfigMaps without a prefix are expected", ef)
		}
		for k := range m.configMap(t, ef.ConfigMapRef.Name).Data {
			set[k] = true
		}
	}
	for _, e := range c.Env {
		if set[e.Name] {
			t.Errorf("%s is set twice (ConfigMap and env)", e.Name)
		}
		set[e.Name] = true
	}
	return sortedKeys(set)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func union(lists ...[]string) []string {
	set := map[string]bool{}
	for _, l := range lists {
		for _, s := range l {
			set[s] = true
		}
	}
	return sortedKeys(set)
}

func minus(a, b []string) []string {
	var out []string
	for _, s := range a {
		if !slices.Contains(b, s) {
			out = append(out, s)
		}
	}
	return out
}

func checkEnvWiring(t *testing.T, vs valueSet, m *manifests) {
	envs := binaryEnvs(t)
	web, rec := envs["webhook"], envs["reconciler"]
	reads := union(web.Reads, rec.Reads)

	webC := container(t, m.deployment(t).Spec.Template.Spec, "webhook")
	recC := container(t, m.cronJob(t).Spec.JobTemplate.Spec.Template.Spec, "reconciler")

	// One wiring for both: the same ConfigMap and the same secret references.
	if d := cmp.Diff(webC.EnvFrom, recC.EnvFrom); d != "" {
		t.Errorf("envFrom differs between the Deployment and the CronJob (-webhook +reconciler):\n%s", d)
	}
	if d := cmp.Diff(webC.Env, recC.Env); d != "" {
		t.Errorf("env differs between the Deployment and the CronJob (-webhook +reconciler):\n%s", d)
	}

	set := envNames(t, m, webC)
	var extra []string
	for _, n := range minus(set, reads) {
		// The OpenTelemetry SDK reads the other OTEL_* variables itself
		// (README: "and the other OTEL_*"); extraEnv may pass them.
		if strings.HasPrefix(n, "OTEL_") && slices.ContainsFunc(reads, func(r string) bool { return strings.HasPrefix(r, "OTEL_") }) &&
			slices.ContainsFunc(webC.Env, func(e corev1.EnvVar) bool { return e.Name == n }) {
			continue
		}
		extra = append(extra, n)
	}
	if len(extra) > 0 {
		t.Errorf("the chart sets %q, which neither `webhook env` nor `reconciler env` lists", extra)
	}
	if missing := minus(web.Required, set); len(missing) > 0 {
		t.Errorf("the webhook requires %q, which the chart does not set", missing)
	}
	if missing := minus(rec.Required, envNames(t, m, recC)); len(missing) > 0 {
		t.Errorf("the reconciler requires %q, which the chart does not set", missing)
	}
	if vs.name == "all-on" {
		// Every variable either binary reads can be set: the all-on values set
		// each one (directly or through extraEnv).
		if missing := minus(reads, set); len(missing) > 0 {
			t.Errorf("ci/all-on-values.yaml leaves %q unset: every variable the binaries read must be settable", missing)
		}
	}

	// Every secret reference resolves to a rendered Secret and key.
	for _, e := range webC.Env {
		ref := e.ValueFrom
		if ref == nil {
			continue
		}
		if ref.FieldRef != nil && e.Name == "POD_NAMESPACE" && ref.FieldRef.FieldPath == "metadata.namespace" {
			continue // the downward API: the release's namespace
		}
		if ref.SecretKeyRef == nil {
			t.Errorf("%s: only secretKeyRef (and POD_NAMESPACE's fieldRef) is expected, got %+v", e.Name, ref)
			continue
		}
		s := m.secret(ref.SecretKeyRef.Name)
		optional := ref.SecretKeyRef.Optional != nil && *ref.SecretKeyRef.Optional
		switch {
		case s == nil:
			t.Errorf("%s: Secret %q is not rendered", e.Name, ref.SecretKeyRef.Name)
		case s.Data[ref.SecretKeyRef.Key] == nil && !optional:
			t.Errorf("%s: Secret %q has no key %q", e.Name, s.Name, ref.SecretKeyRef.Key)
		}
		if hookAnnotation(s) != "" {
			t.Errorf("%s reads the hook Secret %q, which Helm deletes after the hook", e.Name, s.Name)
		}
	}
	if vs.name == "all-on" {
		for _, e := range webC.Env {
			if e.Name == "CLERK_SECRET_KEY" {
				s := m.secret(e.ValueFrom.SecretKeyRef.Name)
				if s == nil || s.Data[e.ValueFrom.SecretKeyRef.Key] == nil {
					t.Errorf("secret.clerkSecretKey is set but the Secret lacks key %q", e.ValueFrom.SecretKeyRef.Key)
				}
			}
		}
	}
}

func hookAnnotation(o metav1.Object) string {
	if o == nil {
		return ""
	}
	return o.GetAnnotations()["helm.sh/hook"]
}

func hookWeight(t *testing.T, o metav1.Object) int {
	t.Helper()
	w, err := strconv.Atoi(o.GetAnnotations()["helm.sh/hook-weight"])
	if err != nil {
		t.Fatalf("%s: hook weight: %v", o.GetName(), err)
	}
	return w
}

func checkMigrations(t *testing.T, m *manifests) {
	job := m.migrationsJob(t)
	want := map[string]string{
		"helm.sh/hook":               "pre-install,pre-upgrade",
		"helm.sh/hook-delete-policy": "before-hook-creation,hook-succeeded",
	}
	for k, v := range want {
		if got := job.Annotations[k]; got != v {
			t.Errorf("migrations Job annotation %s = %q, want %q", k, got, v)
		}
	}
	spec := job.Spec.Template.Spec
	if len(spec.Containers) != 1 {
		t.Fatalf("migrations Job: %d containers", len(spec.Containers))
	}
	c := spec.Containers[0]
	// The image's entrypoint is /usr/local/bin/webhook: no command, args migrate.
	if len(c.Command) != 0 || !slices.Equal(c.Args, []string{"migrate"}) {
		t.Errorf("migrations container runs command %q args %q, want the entrypoint (webhook) with [migrate]", c.Command, c.Args)
	}
	if len(c.EnvFrom) != 0 {
		t.Errorf("migrations Job reads envFrom %+v: the ConfigMap does not exist before a pre-install hook", c.EnvFrom)
	}
	var names []string
	runtimeRole := ""
	for _, e := range c.Env {
		names = append(names, e.Name)
		if e.Name == "RUNTIME_ROLE" {
			runtimeRole = e.Value
		}
	}
	if !slices.Equal(names, []string{"DATABASE_URL", "LOG_FORMAT"}) && !slices.Equal(names, []string{"DATABASE_URL", "LOG_FORMAT", "RUNTIME_ROLE"}) {
		t.Errorf("migrations env = %q, want [DATABASE_URL LOG_FORMAT] and, with migrations.runtimeRole, RUNTIME_ROLE", names)
	}
	cm := m.configMap(t, m.deployment(t).Spec.Template.Spec.Containers[0].EnvFrom[0].ConfigMapRef.Name)
	for _, e := range c.Env {
		switch e.Name {
		case "LOG_FORMAT":
			if e.Value != cm.Data["LOG_FORMAT"] {
				t.Errorf("migrations LOG_FORMAT %q, ConfigMap %q", e.Value, cm.Data["LOG_FORMAT"])
			}
		case "DATABASE_URL":
			ref := e.ValueFrom.SecretKeyRef
			s := m.secret(ref.Name)
			if s == nil {
				t.Fatalf("migrations DATABASE_URL reads Secret %q, not rendered", ref.Name)
			}
			// Before pre-install nothing else exists: the Secret must be a hook
			// created before the Job and deleted with it.
			if hookAnnotation(s) != job.Annotations["helm.sh/hook"] {
				t.Errorf("Secret %q is not a %s hook: it would not exist when the Job runs", s.Name, job.Annotations["helm.sh/hook"])
			}
			if hookWeight(t, s) >= hookWeight(t, job) {
				t.Errorf("hook Secret weight %d is not lower than the Job's %d", hookWeight(t, s), hookWeight(t, job))
			}
			if s.Annotations["helm.sh/hook-delete-policy"] != job.Annotations["helm.sh/hook-delete-policy"] {
				t.Errorf("hook Secret delete policy %q differs from the Job's", s.Annotations["helm.sh/hook-delete-policy"])
			}
			if s.Data[ref.Key] == nil {
				t.Errorf("hook Secret %q lacks key %q", s.Name, ref.Key)
			}
			if len(s.Data) != 1 {
				t.Errorf("hook Secret %q holds %q, want DATABASE_URL's key only", s.Name, sortedKeys(s.Data))
			}
			// One role: the migrations use the service's URL. Two roles
			// (RUNTIME_ROLE set, with secret.migrationDatabaseURL): the
			// schema owner's, not the runtime role's.
			main := m.secret(m.deployment(t).Spec.Template.Spec.Containers[0].Env[0].ValueFrom.SecretKeyRef.Name)
			switch same := main != nil && string(main.Data[ref.Key]) == string(s.Data[ref.Key]); {
			case runtimeRole == "" && !same:
				t.Errorf("hook Secret's DATABASE_URL differs from the chart Secret's")
			case runtimeRole != "" && same:
				t.Errorf("with RUNTIME_ROLE %q the migrations run as the service's own role, not the schema owner", runtimeRole)
			}
		}
	}
	// Its ServiceAccount is a hook too (or "default").
	if sa := spec.ServiceAccountName; sa != "default" {
		var found bool
		for _, o := range m.ServiceAccounts {
			if o.Name == sa {
				found = true
				if hookAnnotation(o) != job.Annotations["helm.sh/hook"] || hookWeight(t, o) >= hookWeight(t, job) {
					t.Errorf("ServiceAccount %q of the migrations Job is not a hook created before it", sa)
				}
			}
		}
		if !found {
			t.Errorf("ServiceAccount %q of the migrations Job is not rendered", sa)
		}
	}
}

// addrPort is the port of a Go listen address such as ":8080".
func addrPort(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	return n
}

func checkProbes(t *testing.T, m *manifests) {
	dep := m.deployment(t)
	c := container(t, dep.Spec.Template.Spec, "webhook")
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if ports["http"] != httpPort || ports["metrics"] != metricsPort {
		t.Errorf("container ports %v, want http %d and metrics %d", ports, httpPort, metricsPort)
	}
	cm := m.configMap(t, c.EnvFrom[0].ConfigMapRef.Name)
	if p := addrPort(t, cm.Data["HTTP_ADDR"]); p != int(ports["http"]) {
		t.Errorf("HTTP_ADDR %q listens on %d, port http is %d", cm.Data["HTTP_ADDR"], p, ports["http"])
	}
	if p := addrPort(t, cm.Data["METRICS_ADDR"]); p != int(ports["metrics"]) {
		t.Errorf("METRICS_ADDR %q listens on %d, port metrics is %d", cm.Data["METRICS_ADDR"], p, ports["metrics"])
	}
	probes := []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{
		{"startupProbe", c.StartupProbe, livePath},
		{"livenessProbe", c.LivenessProbe, livePath},
		{"readinessProbe", c.ReadinessProbe, readyPath},
	}
	for _, p := range probes {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s: want an httpGet probe", p.name)
			continue
		}
		if p.probe.HTTPGet.Path != p.path || p.probe.HTTPGet.Port.String() != "http" {
			t.Errorf("%s: GET %s on port %s, want %s on http", p.name, p.probe.HTTPGet.Path, p.probe.HTTPGet.Port.String(), p.path)
		}
	}
	for _, sp := range m.service(t).Spec.Ports {
		if _, ok := ports[sp.TargetPort.String()]; !ok {
			t.Errorf("Service port %s targets %q, not a container port name", sp.Name, sp.TargetPort.String())
		}
	}
}

// selectorLabels checks a label selector map carries no unstable label.
func checkStable(t *testing.T, what string, sel map[string]string) {
	t.Helper()
	for _, k := range unstableLabels {
		if _, ok := sel[k]; ok {
			t.Errorf("%s selects on %s, which changes with every release", what, k)
		}
	}
	if len(sel) == 0 {
		t.Errorf("%s has an empty selector", what)
	}
}

func checkSelectors(t *testing.T, m *manifests) {
	dep := m.deployment(t)
	podLabels := labels.Set(dep.Spec.Template.Labels)
	depSel := dep.Spec.Selector.MatchLabels
	checkStable(t, "Deployment", depSel)
	if len(dep.Spec.Selector.MatchExpressions) > 0 {
		t.Errorf("Deployment selector has matchExpressions")
	}
	if !labels.SelectorFromSet(depSel).Matches(podLabels) {
		t.Errorf("Deployment selector %v does not match its pods %v", depSel, podLabels)
	}
	svc := m.service(t)
	checkStable(t, "Service", svc.Spec.Selector)
	if d := cmp.Diff(depSel, svc.Spec.Selector); d != "" {
		t.Errorf("Service selector differs from the Deployment's:\n%s", d)
	}
	// The Service must pick webhook pods only: not the reconciler's, the
	// migration's or the test's.
	others := map[string]map[string]string{
		"reconciler": m.cronJob(t).Spec.JobTemplate.Spec.Template.Labels,
		"migrations": m.migrationsJob(t).Spec.Template.Labels,
	}
	for _, p := range m.Pods {
		others["pod "+p.Name] = p.Labels
	}
	for name, l := range others {
		if labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(l)) {
			t.Errorf("the Service selects the %s pods", name)
		}
	}
	for _, pdb := range m.PDBs {
		sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
		if err != nil {
			t.Fatal(err)
		}
		checkStable(t, "PodDisruptionBudget", pdb.Spec.Selector.MatchLabels)
		if !sel.Matches(podLabels) || !equalSelector(pdb.Spec.Selector.MatchLabels, depSel) {
			t.Errorf("PDB selector %v does not select exactly the Deployment's pods %v", pdb.Spec.Selector.MatchLabels, depSel)
		}
	}
	for _, hpa := range m.HPAs {
		ref := hpa.Spec.ScaleTargetRef
		if ref.Kind != "Deployment" || ref.APIVersion != "apps/v1" || ref.Name != dep.Name {
			t.Errorf("HPA scales %s %s, want Deployment %s", ref.Kind, ref.Name, dep.Name)
		}
		if dep.Spec.Replicas != nil {
			t.Errorf("Deployment sets replicas %d while the HPA owns them", *dep.Spec.Replicas)
		}
	}
	for _, sm := range m.ServiceMonitors {
		checkStable(t, "ServiceMonitor", sm.Spec.Selector.MatchLabels)
		sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
		if err != nil {
			t.Fatal(err)
		}
		if !sel.Matches(labels.Set(svc.Labels)) {
			t.Errorf("ServiceMonitor selector %v does not match the Service's labels %v", sm.Spec.Selector.MatchLabels, svc.Labels)
		}
		if !slices.Equal(sm.Spec.NamespaceSelector.MatchNames, []string{svc.Namespace}) {
			t.Errorf("ServiceMonitor namespaces %q, want [%s]", sm.Spec.NamespaceSelector.MatchNames, svc.Namespace)
		}
		for _, ep := range sm.Spec.Endpoints {
			if ep.Port != "metrics" || ep.Path != "/metrics" {
				t.Errorf("ServiceMonitor scrapes port %q path %q, want metrics /metrics", ep.Port, ep.Path)
			}
		}
	}
	for _, np := range m.NetworkPolicies {
		sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
		if err != nil {
			t.Fatal(err)
		}
		checkStable(t, "NetworkPolicy", np.Spec.PodSelector.MatchLabels)
		for name, l := range map[string]map[string]string{"webhook": podLabels, "reconciler": others["reconciler"], "migrations": others["migrations"]} {
			if !sel.Matches(labels.Set(l)) {
				t.Errorf("the NetworkPolicy does not cover the %s pods", name)
			}
		}
	}
}

func mustQuantity(s string) resource.Quantity { return resource.MustParse(s) }

func equalSelector(a, b map[string]string) bool { return cmp.Equal(a, b) }

// podSpecs are every pod template of the chart, by owner.
func podSpecs(t *testing.T, m *manifests) map[string]corev1.PodSpec {
	specs := map[string]corev1.PodSpec{
		"Deployment": m.deployment(t).Spec.Template.Spec,
		"CronJob":    m.cronJob(t).Spec.JobTemplate.Spec.Template.Spec,
		"Job":        m.migrationsJob(t).Spec.Template.Spec,
	}
	for _, p := range m.Pods {
		specs["Pod "+p.Name] = p.Spec
	}
	return specs
}

func checkSecurity(t *testing.T, m *manifests) {
	var image string
	for owner, spec := range podSpecs(t, m) {
		// Only the webhook, and only for the credits API's TokenReviews
		// (checkCreditsAPI checks when), mounts its token.
		if owner != "Deployment" && (spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken) {
			t.Errorf("%s: automountServiceAccountToken is not false", owner)
		}
		psc := spec.SecurityContext
		switch {
		case psc == nil:
			t.Errorf("%s: no pod securityContext", owner)
		case psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot,
			psc.RunAsUser == nil || *psc.RunAsUser != 65532,
			psc.RunAsGroup == nil || *psc.RunAsGroup != 65532,
			psc.FSGroup == nil || *psc.FSGroup != 65532,
			psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault:
			t.Errorf("%s: pod securityContext %+v, want runAsNonRoot, 65532/65532, fsGroup 65532, seccomp RuntimeDefault", owner, psc)
		}
		for _, c := range append(spec.InitContainers, spec.Containers...) {
			sc := c.SecurityContext
			if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
				sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
				sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
				t.Errorf("%s container %s: securityContext %+v, want readOnlyRootFilesystem, no privilege escalation, drop ALL", owner, c.Name, sc)
			}
			if image == "" {
				image = c.Image
			}
			if c.Image != image {
				t.Errorf("%s container %s runs %s, others %s: one image holds both binaries", owner, c.Name, c.Image, image)
			}
		}
	}
	for _, sa := range m.ServiceAccounts {
		if sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
			t.Errorf("ServiceAccount %s: automountServiceAccountToken is not false", sa.Name)
		}
	}
}

func checkDeployment(t *testing.T, vs valueSet, m *manifests) {
	dep := m.deployment(t)
	if vs.name == "default" && (dep.Spec.Replicas == nil || *dep.Spec.Replicas != 2) {
		t.Errorf("replicas %v, want 2", dep.Spec.Replicas)
	}
	ru := dep.Spec.Strategy.RollingUpdate
	if dep.Spec.Strategy.Type != "RollingUpdate" || ru == nil || ru.MaxUnavailable.String() != "0" || ru.MaxSurge.String() != "1" {
		t.Errorf("strategy %+v, want RollingUpdate maxUnavailable 0 maxSurge 1", dep.Spec.Strategy)
	}
	spec := dep.Spec.Template.Spec
	cm := m.configMap(t, spec.Containers[0].EnvFrom[0].ConfigMapRef.Name)
	delay, err1 := time.ParseDuration(cm.Data["SHUTDOWN_DELAY"])
	drain, err2 := time.ParseDuration(cm.Data["SHUTDOWN_TIMEOUT"])
	if err1 != nil || err2 != nil {
		t.Fatalf("SHUTDOWN_DELAY %q, SHUTDOWN_TIMEOUT %q: %v %v", cm.Data["SHUTDOWN_DELAY"], cm.Data["SHUTDOWN_TIMEOUT"], err1, err2)
	}
	if delay <= 0 {
		t.Errorf("SHUTDOWN_DELAY %s: want a delay so that endpoints drop the pod before it drains", delay)
	}
	grace := spec.TerminationGracePeriodSeconds
	if grace == nil || time.Duration(*grace)*time.Second <= delay+drain {
		t.Errorf("terminationGracePeriodSeconds %v is not longer than SHUTDOWN_DELAY + SHUTDOWN_TIMEOUT (%s)", grace, delay+drain)
	}
	if dep.Spec.Template.Annotations["checksum/config"] == "" {
		t.Errorf("no checksum/config annotation on the pod template")
	}
	if len(spec.TopologySpreadConstraints) == 0 {
		t.Errorf("no topologySpreadConstraints")
	}
	c := spec.Containers[0]
	if c.Lifecycle != nil && c.Lifecycle.PreStop != nil {
		t.Errorf("a preStop hook: the binary delays by itself (SHUTDOWN_DELAY)")
	}
	if vs.name == "default" {
		tsc := spec.TopologySpreadConstraints[0]
		if tsc.TopologyKey != "kubernetes.io/hostname" || tsc.WhenUnsatisfiable != corev1.ScheduleAnyway {
			t.Errorf("topology spread %+v, want by hostname, ScheduleAnyway", tsc)
		}
		want := corev1.ResourceRequirements{
			Requests: corev1.ResourceList{"cpu": mustQuantity("50m"), "memory": mustQuantity("64Mi")},
			Limits:   corev1.ResourceList{"memory": mustQuantity("256Mi")},
		}
		if !cmp.Equal(c.Resources, want, cmp.Comparer(func(a, b corev1.ResourceList) bool {
			if len(a) != len(b) {
				return false
			}
			for k, q := range a {
				if bq, ok := b[k]; !ok || q.Cmp(bq) != 0 {
					return false
				}
			}
			return true
		})) {
			t.Errorf("resources %+v, want %+v", c.Resources, want)
		}
		if len(m.PDBs) != 1 || m.PDBs[0].Spec.MinAvailable == nil || m.PDBs[0].Spec.MinAvailable.String() != "1" {
			t.Errorf("want a PodDisruptionBudget with minAvailable 1 by default")
		}
	}
}

func checkCronJob(t *testing.T, vs valueSet, m *manifests) {
	cj := m.cronJob(t)
	if vs.name == "default" && cj.Spec.Schedule != "*/5 * * * *" {
		t.Errorf("schedule %q, want */5 * * * *", cj.Spec.Schedule)
	}
	if cj.Spec.ConcurrencyPolicy != "Forbid" {
		t.Errorf("concurrencyPolicy %q, want Forbid", cj.Spec.ConcurrencyPolicy)
	}
	if cj.Spec.StartingDeadlineSeconds == nil || cj.Spec.SuccessfulJobsHistoryLimit == nil || cj.Spec.FailedJobsHistoryLimit == nil {
		t.Errorf("startingDeadlineSeconds and the history limits must be set")
	}
	js := cj.Spec.JobTemplate.Spec
	if js.BackoffLimit == nil || js.ActiveDeadlineSeconds == nil {
		t.Fatalf("backoffLimit and activeDeadlineSeconds must be set")
	}
	c := container(t, js.Template.Spec, "reconciler")
	if !slices.Equal(c.Command, []string{"/usr/local/bin/reconciler"}) || len(c.Args) != 0 {
		t.Errorf("reconciler runs %q %q, want [/usr/local/bin/reconciler]", c.Command, c.Args)
	}
	if js.Template.Spec.RestartPolicy != corev1.RestartPolicyNever {
		t.Errorf("restartPolicy %q, want Never", js.Template.Spec.RestartPolicy)
	}
	cm := m.configMap(t, c.EnvFrom[0].ConfigMapRef.Name)
	timeout, err := time.ParseDuration(cm.Data["RECONCILE_TIMEOUT"])
	if err != nil {
		t.Fatalf("RECONCILE_TIMEOUT %q: %v", cm.Data["RECONCILE_TIMEOUT"], err)
	}
	if timeout >= time.Duration(*js.ActiveDeadlineSeconds)*time.Second {
		t.Errorf("RECONCILE_TIMEOUT %s is not below activeDeadlineSeconds %d", timeout, *js.ActiveDeadlineSeconds)
	}
	if vs.name == "default" && *js.ActiveDeadlineSeconds != 290 {
		t.Errorf("activeDeadlineSeconds %d, want 290", *js.ActiveDeadlineSeconds)
	}
}

// checkTestPod checks the helm test Pods: readyz probes /readyz through the
// Service, then selftest POSTs a signed event to the webhook path through the
// Service with the Deployment's own signing secret.
func checkTestPod(t *testing.T, vs valueSet, m *manifests) {
	if len(m.Pods) != 2 {
		t.Fatalf("%d Pods, want the helm test Pods readyz and selftest", len(m.Pods))
	}
	svc := m.service(t)
	var port int32
	for _, sp := range svc.Spec.Ports {
		if sp.Name == "http" {
			port = sp.Port
		}
	}
	host := svc.Name + "." + vs.namespace + ".svc"
	weights := map[string]int{}
	for _, p := range m.Pods {
		if p.Annotations["helm.sh/hook"] != "test" {
			t.Errorf("Pod %s is not a test hook", p.Name)
		}
		if p.Spec.RestartPolicy != corev1.RestartPolicyNever {
			t.Errorf("test Pod %s restartPolicy %q, want Never", p.Name, p.Spec.RestartPolicy)
		}
		if len(p.Spec.Containers) != 1 {
			t.Fatalf("test Pod %s: %d containers, want 1", p.Name, len(p.Spec.Containers))
		}
		c := p.Spec.Containers[0]
		if len(c.Command) != 3 || c.Command[0] != "/usr/local/bin/webhook" {
			t.Fatalf("test Pod %s runs %q, want [/usr/local/bin/webhook SUBCOMMAND URL]", p.Name, c.Command)
		}
		weights[c.Command[1]] = hookWeight(t, p)
		u, err := url.Parse(c.Command[2])
		if err != nil {
			t.Fatal(err)
		}
		wantPath := map[string]string{"probe": readyPath, "selftest": webhookPath}[c.Command[1]]
		if wantPath == "" {
			t.Errorf("test Pod %s runs webhook %s, want probe or selftest", p.Name, c.Command[1])
			continue
		}
		if u.Scheme != "http" || u.Hostname() != host || u.Port() != strconv.Itoa(int(port)) || u.Path != wantPath {
			t.Errorf("test Pod %s reaches %s, want http://%s:%d%s", p.Name, u, host, port, wantPath)
		}
		switch c.Command[1] {
		case "probe":
			if len(c.Env) != 0 || len(c.EnvFrom) != 0 {
				t.Errorf("the readyz test Pod reads %v %v, want nothing", c.Env, c.EnvFrom)
			}
		case "selftest":
			// It signs with what the webhook verifies with: the same Secret and key.
			var want *corev1.EnvVar
			for _, e := range container(t, m.deployment(t).Spec.Template.Spec, "webhook").Env {
				if e.Name == "CLERK_WEBHOOK_SIGNING_SECRET" {
					want = &e
				}
			}
			if want == nil {
				t.Fatal("the Deployment sets no CLERK_WEBHOOK_SIGNING_SECRET")
			}
			if d := cmp.Diff([]corev1.EnvVar{*want}, c.Env); d != "" || len(c.EnvFrom) != 0 {
				t.Errorf("the selftest Pod's env differs from the webhook's signing secret (-webhook +selftest):\n%s", d)
			}
		}
	}
	if weights["probe"] >= weights["selftest"] {
		t.Errorf("test hook weights %v: readyz must run before selftest", weights)
	}
}

// TestTestPodsServiceEnv checks tests.serviceAddress=env, for clusters without
// Service DNS: the test Pods address the Service through the environment
// variables the kubelet sets for it (named after the Service and its port
// http), which it expands in the command.
func TestTestPodsServiceEnv(t *testing.T) {
	t.Parallel()
	vs := valueSet{name: "service env", release: "cg", namespace: "payments",
		args: []string{"--set", "secret.existingSecret=mine", "--set", "tests.serviceAddress=env"}}
	m := render(t, vs)
	svc := m.service(t)
	prefix := strings.ToUpper(strings.ReplaceAll(svc.Name, "-", "_")) + "_SERVICE_"
	var hasHTTP bool
	for _, p := range svc.Spec.Ports {
		hasHTTP = hasHTTP || p.Name == "http"
	}
	if !hasHTTP {
		t.Fatal("the Service has no port named http")
	}
	base := "http://$(" + prefix + "HOST):$(" + prefix + "PORT_HTTP)"
	want := map[string]string{"probe": base + readyPath, "selftest": base + webhookPath}
	if len(m.Pods) != 2 {
		t.Fatalf("%d test Pods, want 2", len(m.Pods))
	}
	for _, p := range m.Pods {
		c := p.Spec.Containers[0]
		if len(c.Command) != 3 || c.Command[2] != want[c.Command[1]] {
			t.Errorf("test Pod %s runs %q, want its URL %s", p.Name, c.Command, want[c.Command[1]])
		}
		if p.Spec.EnableServiceLinks == nil || !*p.Spec.EnableServiceLinks {
			t.Errorf("test Pod %s does not enable service links", p.Name)
		}
	}
}

func checkIngress(t *testing.T, m *manifests) {
	svc := m.service(t)
	for _, ing := range m.Ingresses {
		for _, r := range ing.Spec.Rules {
			if r.HTTP == nil || len(r.HTTP.Paths) != 1 {
				t.Fatalf("Ingress rule %q: want exactly one path", r.Host)
			}
			p := r.HTTP.Paths[0]
			if p.Path != webhookPath || p.PathType == nil || (*p.PathType != "Exact" && *p.PathType != "Prefix") {
				t.Errorf("Ingress %q exposes %s (%v), want only %s", r.Host, p.Path, p.PathType, webhookPath)
			}
			if b := p.Backend.Service; b == nil || b.Name != svc.Name || b.Port.Name != "http" {
				t.Errorf("Ingress backend %+v, want Service %s port http", p.Backend, svc.Name)
			}
		}
	}
}

// TestChecksumRollsPods checks that a change of configuration or secret
// changes the pod template, so that the Deployment rolls.
func TestChecksumRollsPods(t *testing.T) {
	t.Parallel()
	base := valueSets()[0]
	sum := func(extra ...string) string {
		return render(t, base, extra...).deployment(t).Spec.Template.Annotations["checksum/config"]
	}
	orig := sum()
	for _, change := range [][]string{
		{"--set", "config.signupCredits=21"},
		{"--set", "secret.signingSecret=whsec_c2Vjb25kc2VjcmV0c2Vjb25kc2VjcmV0"},
		{"--set", "secret.clerkSecretKey=sk_test_x"},
	} {
		if got := sum(change...); got == orig {
			t.Errorf("%s leaves checksum/config unchanged", strings.Join(change, " "))
		}
	}
}

// TestExistingSecret checks that with existingSecret the chart makes no
// Secret at all and every container reads the named one.
func TestExistingSecret(t *testing.T) {
	t.Parallel()
	vs := valueSet{name: "existing", release: "creditgate", namespace: "creditgate",
		args: []string{"--set", "secret.existingSecret=mine", "--set", "secret.keys.databaseURL=uri"}}
	m := render(t, vs)
	if len(m.Secrets) != 0 {
		t.Errorf("%d Secrets rendered with existingSecret, want none", len(m.Secrets))
	}
	for owner, spec := range podSpecs(t, m) {
		for _, c := range spec.Containers {
			for _, e := range c.Env {
				if ref := e.ValueFrom; ref != nil && ref.SecretKeyRef != nil && ref.SecretKeyRef.Name != "mine" {
					t.Errorf("%s %s reads Secret %q, want mine", owner, e.Name, ref.SecretKeyRef.Name)
				}
				if e.Name == "DATABASE_URL" && e.ValueFrom.SecretKeyRef.Key != "uri" {
					t.Errorf("%s DATABASE_URL reads key %q, want uri", owner, e.ValueFrom.SecretKeyRef.Key)
				}
			}
		}
	}
}

// TestSeparateReconcilerImage checks the override for builders that make one
// image per binary (ko, as skaffold.yaml uses): the CronJob runs its own
// image with that image's entrypoint; everything else keeps the one image.
func TestSeparateReconcilerImage(t *testing.T) {
	t.Parallel()
	vs := valueSet{name: "ko", release: "creditgate", namespace: "creditgate", args: []string{
		"--set", "secret.databaseURL=postgres://x/y", "--set", "secret.signingSecret=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
		"--set", "image.repository=ko.local/creditgate-webhook", "--set", "image.tag=abc",
		"--set", "reconciler.image.repository=ko.local/creditgate-reconciler", "--set", "reconciler.command=null"}}
	m := render(t, vs)
	for _, cj := range m.CronJobs {
		c := container(t, cj.Spec.JobTemplate.Spec.Template.Spec, "reconciler")
		if c.Image != "ko.local/creditgate-reconciler:abc" || len(c.Command) != 0 {
			t.Errorf("reconciler runs %s %q, want ko.local/creditgate-reconciler:abc with its entrypoint", c.Image, c.Command)
		}
	}
	for _, d := range m.Deployments {
		if c := container(t, d.Spec.Template.Spec, "webhook"); c.Image != "ko.local/creditgate-webhook:abc" {
			t.Errorf("webhook runs %s", c.Image)
		}
	}
}

// TestLongReleaseName checks that names stay within Kubernetes' limits for
// the longest release name Helm allows (53): CronJobs 52 characters (their
// Jobs add 11), every other object 63, all DNS labels.
func TestLongReleaseName(t *testing.T) {
	t.Parallel()
	release := strings.Repeat("r", 53)
	m := render(t, valueSet{name: "long", release: release, namespace: "creditgate",
		args: []string{"-f", filepath.Join(chartDir, "ci", "all-on-values.yaml"), "--set", "fullnameOverride="}})
	var names []metav1.Object
	for _, o := range m.CronJobs {
		if len(o.Name) > 52 {
			t.Errorf("CronJob name %q is %d characters, over 52", o.Name, len(o.Name))
		}
	}
	for _, o := range m.Deployments {
		names = append(names, o)
	}
	for _, o := range m.CronJobs {
		names = append(names, o)
	}
	for _, o := range m.Jobs {
		names = append(names, o)
	}
	for _, o := range m.Pods {
		names = append(names, o)
	}
	for _, o := range m.Services {
		names = append(names, o)
	}
	for _, o := range m.ServiceAccounts {
		names = append(names, o)
	}
	for _, o := range m.ConfigMaps {
		names = append(names, o)
	}
	for _, o := range m.Secrets {
		names = append(names, o)
	}
	if len(names) < 8 {
		t.Fatalf("only %d objects", len(names))
	}
	for _, o := range names {
		if errs := validation.IsDNS1123Label(o.GetName()); len(errs) > 0 {
			t.Errorf("name %q: %v", o.GetName(), errs)
		}
		for k, v := range o.GetLabels() {
			if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
				t.Errorf("%s label %s=%q: %v", o.GetName(), k, v, errs)
			}
		}
	}
}

// checkCreditsAPI: the credits API has a ClusterIP Service of its own on the
// webhook pods' api port (API_ADDR), which no Ingress routes to.
func checkCreditsAPI(t *testing.T, m *manifests) {
	svc := m.apiService(t)
	if svc.Spec.Type != corev1.ServiceTypeClusterIP {
		t.Errorf("credits API Service is %s, want ClusterIP only", svc.Spec.Type)
	}
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].TargetPort.StrVal != "api" {
		t.Errorf("credits API Service ports %+v, want one targeting the api port", svc.Spec.Ports)
	}
	pod := m.deployment(t).Spec.Template
	for k, v := range svc.Spec.Selector {
		if pod.Labels[k] != v {
			t.Errorf("credits API Service selects %s=%s, which the webhook pods lack", k, v)
		}
	}
	var port int32
	for _, p := range container(t, pod.Spec, "webhook").Ports {
		if p.Name == "api" {
			port = p.ContainerPort
		}
	}
	cm := m.configMap(t, container(t, pod.Spec, "webhook").EnvFrom[0].ConfigMapRef.Name)
	if port == 0 || cm.Data["API_ADDR"] != fmt.Sprintf(":%d", port) {
		t.Errorf("container port api %d, API_ADDR %q: they must agree", port, cm.Data["API_ADDR"])
	}
	// ServiceAccount tokens: the TokenReview right and the webhook's token,
	// exactly when in-cluster callers are mapped.
	sas := cm.Data["CREDITS_API_SERVICE_ACCOUNTS"]
	mounted := pod.Spec.AutomountServiceAccountToken != nil && *pod.Spec.AutomountServiceAccountToken
	if (sas != "") != mounted || (sas != "") != (len(m.ClusterRoleBindings) == 1) {
		t.Errorf("CREDITS_API_SERVICE_ACCOUNTS %q, token mounted %v, %d ClusterRoleBindings: want all or none", sas, mounted, len(m.ClusterRoleBindings))
	}
	for _, crb := range m.ClusterRoleBindings {
		if crb.RoleRef.Name != "system:auth-delegator" || len(crb.Subjects) != 1 || crb.Subjects[0].Name != pod.Spec.ServiceAccountName {
			t.Errorf("ClusterRoleBinding %s binds %s to %+v, want system:auth-delegator to the webhook's ServiceAccount only", crb.Name, crb.RoleRef.Name, crb.Subjects)
		}
	}
	for _, ing := range m.Ingresses {
		for _, r := range ing.Spec.Rules {
			for _, p := range r.HTTP.Paths {
				if p.Backend.Service != nil && p.Backend.Service.Name == svc.Name {
					t.Errorf("Ingress %s routes to the credits API", ing.Name)
				}
			}
		}
	}
}
