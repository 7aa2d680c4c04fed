package chart

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"text/template"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// defaultImageRepository is where the release workflow publishes the image
// (.github/workflows/release.yml) and the chart's default image.repository.
const defaultImageRepository = "ghcr.io/creditgate/creditgate"

// appVersion is Chart.yaml's appVersion: the default image tag.
func appVersion(t *testing.T) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(chartDir, "Chart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		AppVersion string `json:"appVersion"`
	}
	if err := yaml.Unmarshal(raw, &c); err != nil || c.AppVersion == "" {
		t.Fatalf("Chart.yaml appVersion %q: %v", c.AppVersion, err)
	}
	return c.AppVersion
}

// placeholders are the README's placeholders and what a reader would put
// there; every value in its commands must be one of these or a literal.
var placeholders = map[string]string{
	"postgres://…": testDatabaseURL,
	"whsec_…":      testSigningSecret,
	"sk_live_…":    "sk_live_3cF9aZq0Yb7TnWm2Lk5Rp8Xv1Hd4Gj6S",
	"<registry>":   "registry.example.com/team",
	"<tag>":        "1.2.3",
}

func fill(t *testing.T, v string) string {
	t.Helper()
	for p, real := range placeholders {
		v = strings.ReplaceAll(v, p, real)
	}
	if strings.ContainsAny(v, "…<>") {
		t.Fatalf("README value %q holds a placeholder this test does not know: add it to placeholders", v)
	}
	return v
}

// readmeCommand is one command of a shell block, split into words.
type readmeCommand []string

// readmeInstall is README.md's "Install on Kubernetes" section as commands.
type readmeInstall struct {
	secret   readmeCommand   // kubectl … create secret generic
	installs []readmeCommand // helm install …
	image    readmeCommand   // the --set fragment for one's own image
}

func parseReadmeInstall(t *testing.T) readmeInstall {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(raw)
	start := strings.Index(text, "\n## Install on Kubernetes\n")
	if start < 0 {
		t.Fatal(`README.md has no "## Install on Kubernetes" section`)
	}
	section := text[start+1:]
	if end := strings.Index(section[3:], "\n## "); end >= 0 {
		section = section[:end+3]
	}
	var in readmeInstall
	for _, block := range regexp.MustCompile("(?s)```sh\n(.*?)```").FindAllStringSubmatch(section, -1) {
		for _, cmd := range shellCommands(t, block[1]) {
			switch {
			case len(cmd) > 2 && cmd[0] == "helm" && cmd[1] == "install":
				in.installs = append(in.installs, cmd)
			case len(cmd) > 4 && cmd[0] == "kubectl" && slices.Contains(cmd, "secret") && slices.Contains(cmd, "generic"):
				in.secret = cmd
			case cmd[0] == "--set":
				in.image = cmd
			}
		}
	}
	if in.secret == nil || len(in.installs) != 2 || in.image == nil {
		t.Fatalf("README's install section: want a kubectl create secret, two helm installs and the image --set line; got %q, %q, %q",
			in.secret, in.installs, in.image)
	}
	return in
}

// shellCommands splits a shell snippet into commands and words: quotes,
// backslash-newline continuations and # comments, which is all the README
// uses.
func shellCommands(t *testing.T, src string) []readmeCommand {
	t.Helper()
	var cmds []readmeCommand
	var cmd readmeCommand
	var word strings.Builder
	inWord := false
	endWord := func() {
		if inWord {
			cmd = append(cmd, word.String())
			word.Reset()
			inWord = false
		}
	}
	endCmd := func() {
		endWord()
		if len(cmd) > 0 {
			cmds = append(cmds, cmd)
			cmd = nil
		}
	}
	rs := []rune(src)
	for i := 0; i < len(rs); i++ {
		switch r := rs[i]; {
		case r == '\\' && i+1 < len(rs) && rs[i+1] == '\n':
			endWord()
			i++
		case r == '\\' && i+1 < len(rs):
			word.WriteRune(rs[i+1])
			inWord = true
			i++
		case r == '\'' || r == '"':
			j := i + 1
			for j < len(rs) && rs[j] != r {
				j++
			}
			if j == len(rs) {
				t.Fatalf("unterminated quote in README snippet:\n%s", src)
			}
			word.WriteString(string(rs[i+1 : j]))
			inWord = true
			i = j
		case r == '#' && !inWord:
			for i < len(rs) && rs[i] != '\n' {
				i++
			}
			i-- // the newline ends the command
		case r == '\n':
			endCmd()
		case r == ' ' || r == '\t':
			endWord()
		default:
			word.WriteRune(r)
			inWord = true
		}
	}
	endCmd()
	return cmds
}

// flagValues returns the values of a --flag VALUE or --flag=VALUE option.
func flagValues(cmd readmeCommand, names ...string) []string {
	var vals []string
	for i := 0; i < len(cmd); i++ {
		for _, n := range names {
			switch {
			case cmd[i] == n && i+1 < len(cmd):
				vals = append(vals, cmd[i+1])
			case strings.HasPrefix(cmd[i], n+"="):
				vals = append(vals, strings.TrimPrefix(cmd[i], n+"="))
			}
		}
	}
	return vals
}

// templateArgs turns a README `helm install RELEASE CHART flags…` into a
// valueSet for helm template of this checkout's chart, mapping each --set
// value through value.
func templateArgs(t *testing.T, cmd readmeCommand, value func(string) string) valueSet {
	t.Helper()
	release, chart := cmd[2], cmd[3]
	if chart != "charts/creditgate" {
		t.Fatalf("README installs chart %q, want charts/creditgate (this checkout's)", chart)
	}
	ns := flagValues(cmd, "--namespace", "-n")
	if len(ns) != 1 {
		t.Fatalf("README's helm install %q: want one --namespace", cmd)
	}
	vs := valueSet{name: "README", release: release, namespace: ns[0]}
	for i := 4; i < len(cmd); i++ {
		switch cmd[i] {
		case "--set", "--set-string", "--set-literal":
			vs.args = append(vs.args, cmd[i], value(cmd[i+1]))
			i++
		case "--namespace", "-n":
			i++
		case "--create-namespace":
		default:
			t.Fatalf("README's helm install has %q, which this test does not know", cmd[i])
		}
	}
	return vs
}

// images returns every container image of the rendered pods.
func images(t *testing.T, m *manifests) []string {
	t.Helper()
	var out []string
	for owner, spec := range podSpecs(t, m) {
		for _, c := range append(spec.InitContainers, spec.Containers...) {
			out = append(out, owner+": "+c.Image)
		}
	}
	slices.Sort(out)
	return out
}

func checkImages(t *testing.T, m *manifests, want string) {
	t.Helper()
	for _, img := range images(t, m) {
		if _, got, _ := strings.Cut(img, ": "); got != want {
			t.Errorf("%s, want %s", img, want)
		}
	}
}

// TestReadmeInstall installs the chart exactly as README.md's "Install on
// Kubernetes" section writes it (helm template of this checkout): with only
// the documented values every pod runs the published image at the chart's
// appVersion and reads the Secret the README creates; the README's
// placeholders, copied as they are, are refused by the schema; once
// replaced, the install renders.
func TestReadmeInstall(t *testing.T) {
	t.Parallel()
	in := parseReadmeInstall(t)
	wantImage := defaultImageRepository + ":" + appVersion(t)

	// The Secret the README creates: the chart's default key names.
	secretName := in.secret[slices.Index(in.secret, "generic")+1]
	literals := map[string]string{}
	for _, kv := range flagValues(in.secret, "--from-literal") {
		k, v, _ := strings.Cut(kv, "=")
		literals[k] = v
	}
	defaults := render(t, valueSet{name: "keys", release: "creditgate", namespace: "creditgate", args: []string{"--set", "secret.existingSecret=x"}})
	webhookEnv := container(t, defaults.deployment(t).Spec.Template.Spec, "webhook").Env
	for _, e := range webhookEnv {
		if ref := e.ValueFrom; ref != nil && ref.SecretKeyRef != nil {
			if _, ok := literals[ref.SecretKeyRef.Key]; !ok {
				t.Errorf("README's Secret has no key %q (%s); it has %q", ref.SecretKeyRef.Key, e.Name, sortedKeys(literals))
			}
		}
	}

	var existing, fromValues readmeCommand
	for _, cmd := range in.installs {
		if len(flagValues(cmd, "--set")) > 0 && strings.HasPrefix(flagValues(cmd, "--set")[0], "secret.existingSecret=") {
			existing = cmd
		} else {
			fromValues = cmd
		}
	}
	if existing == nil || fromValues == nil {
		t.Fatalf("README: want one helm install with secret.existingSecret and one with secret values, got %q", in.installs)
	}

	t.Run("existingSecret as written", func(t *testing.T) {
		t.Parallel()
		vs := templateArgs(t, existing, func(v string) string { return v })
		if got := flagValues(existing, "--set"); !slices.Equal(got, []string{"secret.existingSecret=" + secretName}) {
			t.Errorf("README's install sets %q, want only secret.existingSecret=%s (the Secret it creates)", got, secretName)
		}
		m := render(t, vs)
		checkImages(t, m, wantImage)
		if len(m.Secrets) != 0 {
			t.Errorf("the chart renders %d Secrets beside the README's", len(m.Secrets))
		}
		for owner, spec := range podSpecs(t, m) {
			for _, c := range spec.Containers {
				for _, e := range c.Env {
					if ref := e.ValueFrom; ref != nil && ref.SecretKeyRef != nil && ref.SecretKeyRef.Name != secretName {
						t.Errorf("%s %s reads Secret %q, want the README's %q", owner, e.Name, ref.SecretKeyRef.Name, secretName)
					}
				}
			}
		}
	})

	t.Run("the Secret's placeholders are refused as values", func(t *testing.T) {
		t.Parallel()
		// The same placeholders, passed as chart values, must not render.
		vs := valueSet{name: "literals", release: "creditgate", namespace: "creditgate", args: []string{
			"--set", "secret.databaseURL=" + literals["database-url"],
			"--set", "secret.signingSecret=" + literals["clerk-webhook-signing-secret"],
			"--set", "secret.clerkSecretKey=" + literals["clerk-secret-key"],
		}}
		_, err := helmTemplate(t, vs)
		for _, field := range []string{"/secret/databaseURL", "/secret/signingSecret", "/secret/clerkSecretKey"} {
			if err == nil || !strings.Contains(err.Error(), field) {
				t.Errorf("the README Secret's placeholders as values: %v, want a schema error on %s", err, field)
			}
		}
	})

	t.Run("values as written are refused", func(t *testing.T) {
		t.Parallel()
		out, err := helmTemplate(t, templateArgs(t, fromValues, func(v string) string { return v }))
		if err == nil {
			t.Fatalf("README's helm install with its placeholders rendered:\n%.300s", out)
		}
		for _, field := range []string{"/secret/databaseURL", "/secret/signingSecret", "/secret/clerkSecretKey"} {
			if !strings.Contains(err.Error(), field) {
				t.Errorf("the schema error does not name %s:\n%v", field, err)
			}
		}
	})

	t.Run("values filled in", func(t *testing.T) {
		t.Parallel()
		m := render(t, templateArgs(t, fromValues, func(v string) string { return fill(t, v) }))
		checkImages(t, m, wantImage)
		if len(m.Secrets) == 0 {
			t.Error("no Secret rendered from the values")
		}
	})

	t.Run("own image as written is refused", func(t *testing.T) {
		t.Parallel()
		vs := templateArgs(t, existing, func(v string) string { return v })
		vs.args = append(vs.args, in.image...)
		if _, err := helmTemplate(t, vs); err == nil || !strings.Contains(err.Error(), "/image/repository") || !strings.Contains(err.Error(), "/image/tag") {
			t.Errorf("README's own-image values with their placeholders: %v, want schema errors on /image/repository and /image/tag", err)
		}
	})

	t.Run("own image filled in", func(t *testing.T) {
		t.Parallel()
		vs := templateArgs(t, existing, func(v string) string { return v })
		for _, a := range in.image {
			vs.args = append(vs.args, fill(t, a))
		}
		checkImages(t, render(t, vs), placeholders["<registry>"]+"/creditgate:"+placeholders["<tag>"])
	})
}

// TestDevImageValues renders the chart with the image values the other ways
// of installing it pass: skaffold.yaml (ko's two images, tag@digest, the
// kind profile) and the kind e2e (hack/kind/values.yaml, as hack/e2e-kind.sh
// and e2e/env_test.go set the image). Each key must be a chart value and land
// in the pods.
func TestDevImageValues(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile(filepath.Join(repoRoot, "skaffold.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	type release struct {
		ChartPath         string            `json:"chartPath"`
		ValuesFiles       []string          `json:"valuesFiles"`
		SetValueTemplates map[string]string `json:"setValueTemplates"`
		SetValues         map[string]any    `json:"setValues"`
	}
	var sk struct {
		Build struct {
			Artifacts []struct {
				Image string `json:"image"`
			} `json:"artifacts"`
		} `json:"build"`
		Deploy struct {
			Helm struct {
				Releases []release `json:"releases"`
			} `json:"helm"`
		} `json:"deploy"`
		Profiles []struct {
			Name    string `json:"name"`
			Patches []struct {
				Op    string         `json:"op"`
				Path  string         `json:"path"`
				Value map[string]any `json:"value"`
			} `json:"patches"`
		} `json:"profiles"`
	}
	if err := yaml.Unmarshal(raw, &sk); err != nil {
		t.Fatal(err)
	}
	if len(sk.Deploy.Helm.Releases) != 1 || sk.Deploy.Helm.Releases[0].ChartPath != "charts/creditgate" {
		t.Fatalf("skaffold.yaml: want one Helm release of charts/creditgate, got %+v", sk.Deploy.Helm.Releases)
	}
	rel := sk.Deploy.Helm.Releases[0]
	const digest = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	data := map[string]string{}
	for _, a := range sk.Build.Artifacts {
		key := strings.NewReplacer("-", "_", "/", "_", ".", "_").Replace(a.Image)
		data["IMAGE_REPO_"+key] = "localhost:5000/" + a.Image
		data["IMAGE_TAG_"+key] = "abc1234-dirty"
		data["IMAGE_DIGEST_"+key] = digest
	}
	args := []string{}
	for _, f := range rel.ValuesFiles {
		args = append(args, "-f", filepath.Join(repoRoot, f))
	}
	for _, k := range sortedKeys(rel.SetValueTemplates) {
		tpl, err := template.New(k).Option("missingkey=error").Parse(rel.SetValueTemplates[k])
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		if err := tpl.Execute(&b, data); err != nil {
			t.Fatalf("skaffold.yaml setValueTemplates %s: %v", k, err)
		}
		args = append(args, "--set", k+"="+b.String())
	}
	for _, p := range sk.Profiles {
		for _, patch := range p.Patches {
			for _, k := range sortedKeys(patch.Value) {
				args = append(args, "--set", k+"="+strings.TrimSpace(string(must(yaml.Marshal(patch.Value[k])))))
			}
		}
	}

	m := render(t, valueSet{name: "skaffold", release: "creditgate", namespace: "creditgate", args: args})
	web := "localhost:5000/creditgate-webhook:abc1234-dirty@" + digest
	rec := "localhost:5000/creditgate-reconciler:abc1234-dirty@" + digest
	for _, img := range images(t, m) {
		owner, got, _ := strings.Cut(img, ": ")
		want := web
		if owner == "CronJob" {
			want = rec
		}
		if got != want {
			t.Errorf("skaffold: %s runs %s, want %s", owner, got, want)
		}
	}
	// ko's reconciler image runs its own entrypoint.
	if c := container(t, m.cronJob(t).Spec.JobTemplate.Spec.Template.Spec, "reconciler"); len(c.Command) != 0 {
		t.Errorf("skaffold: the reconciler overrides ko's entrypoint with %q", c.Command)
	}
	for _, p := range m.Pods {
		if p.Spec.Containers[0].ImagePullPolicy != corev1.PullIfNotPresent {
			t.Errorf("skaffold kind profile: test Pod %s pulls %s", p.Name, p.Spec.Containers[0].ImagePullPolicy)
		}
	}

	// make e2e-kind: hack/kind/values.yaml plus the image the suite sets.
	kind := render(t, valueSet{name: "kind", release: "creditgate", namespace: "creditgate-e2e", args: []string{
		"-f", filepath.Join(repoRoot, "hack", "kind", "values.yaml"), "--set", "secret.existingSecret=x",
		"--set", "image.repository=creditgate", "--set", "image.tag=e2e-abc1234", "--set", "image.pullPolicy=IfNotPresent"}})
	checkImages(t, kind, "creditgate:e2e-abc1234")
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
