package chart

import (
	"context"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	yamlv3 "go.yaml.in/yaml/v3"
	"sigs.k8s.io/yaml"
)

// TestValuesDocumented checks that values.yaml and values.schema.json
// describe the same values and that every value has a "# --" comment above
// it (helm-docs' mark of a value's description); a section without one must
// have its keys documented that way.
func TestValuesDocumented(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile(filepath.Join(chartDir, "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc yamlv3.Node
	if err := yamlv3.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	sraw, err := os.ReadFile(filepath.Join(chartDir, "values.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	var schema map[string]any
	if err := json.Unmarshal(sraw, &schema); err != nil {
		t.Fatal(err)
	}
	var walk func(path string, node *yamlv3.Node, schema map[string]any)
	walk = func(path string, node *yamlv3.Node, schema map[string]any) {
		props, _ := schema["properties"].(map[string]any)
		seen := map[string]bool{}
		for i := 0; i+1 < len(node.Content); i += 2 {
			key, val := node.Content[i], node.Content[i+1]
			name := path + key.Value
			seen[key.Value] = true
			s, ok := props[key.Value].(map[string]any)
			if !ok {
				t.Errorf("values.yaml: %s is not in values.schema.json", name)
				continue
			}
			if documented(key.HeadComment) {
				continue
			}
			if _, section := s["properties"]; section && val.Kind == yamlv3.MappingNode {
				walk(name+".", val, s)
				continue
			}
			t.Errorf("values.yaml: %s has no \"# --\" comment above it", name)
		}
		for p := range props {
			if !seen[p] && path+p != "global" {
				t.Errorf("values.schema.json: %s%s is not in values.yaml", path, p)
			}
		}
	}
	walk("", doc.Content[0], schema)
}

func documented(comment string) bool {
	for _, line := range strings.Split(comment, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "# -- ") {
			return true
		}
	}
	return false
}

// renderNotes renders NOTES.txt, which helm template leaves out: a copy of
// the chart wraps it in a template that helm template shows.
func renderNotes(t *testing.T, vs valueSet) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "creditgate")
	err := filepath.WalkDir(chartDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(chartDir, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dir, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	notes, err := os.ReadFile(filepath.Join(dir, "templates", "NOTES.txt"))
	if err != nil {
		t.Fatal(err)
	}
	tpl := `{{- define "test.notes" -}}` + string(notes) + `{{- end -}}`
	if err := os.WriteFile(filepath.Join(dir, "templates", "_test_notes.tpl"), []byte(tpl), 0o644); err != nil {
		t.Fatal(err)
	}
	show := `notes: {{ include "test.notes" . | toJson }}` + "\n"
	if err := os.WriteFile(filepath.Join(dir, "templates", "test-notes.yaml"), []byte(show), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	args := append([]string{"template", vs.release, dir, "--namespace", vs.namespace, "--show-only", "templates/test-notes.yaml"}, vs.args...)
	out, err := run(ctx, "", nil, tool(t, "helm"), args...)
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Notes string `json:"notes"`
	}
	if err := yaml.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	return v.Notes
}

// TestNotesWarnsSingleReplica checks that NOTES.txt warns when the PDB
// would block node drains.
func TestNotesWarnsSingleReplica(t *testing.T) {
	t.Parallel()
	vs := valueSets()[0]
	vs.args = append(slices.Clone(vs.args), "--set", "webhook.replicas=1")
	if notes := renderNotes(t, vs); !strings.Contains(notes, "node drains will wait for ever") {
		t.Errorf("no PDB warning with one replica:\n%s", notes)
	}
}

// TestNotes checks that NOTES.txt tells the webhook URL for Clerk and how to
// check it.
func TestNotes(t *testing.T) {
	t.Parallel()
	sets := valueSets()
	tests := []struct {
		vs   valueSet
		want []string
	}{
		{vs: sets[0], want: []string{
			"running ghcr.io/creditgate/creditgate:" + appVersion(t) + ".",
			"kubectl -n payments port-forward svc/cg-creditgate 8080:8080",
			"the URL is http://127.0.0.1:8080/api/webhooks/clerk",
			"helm test cg -n payments",
			"kubectl -n payments logs cg-creditgate-test-selftest",
			"It must be the one in secret.signingSecret",
		}},
		{vs: sets[1], want: []string{
			"running registry.example.com/creditgate@sha256:0000000000000000000000000000000000000000000000000000000000000000.",
			"\n     https://credits.example.com/api/webhooks/clerk\n",
			"/usr/local/bin/webhook selftest https://credits.example.com/api/webhooks/clerk",
			"create job --from=cronjob/creditgate-reconciler",
		}},
		{vs: valueSet{name: "existingSecret, no tests", release: "cg", namespace: "payments",
			args: []string{"--set", "secret.existingSecret=cg-secrets", "--set", "tests.enabled=false"}}, want: []string{
			"It must be the one in Secret cg-secrets,\n   key clerk-webhook-signing-secret",
			"rollout restart deploy/cg-creditgate",
			"exec deploy/cg-creditgate -c webhook -- \\\n       /usr/local/bin/webhook selftest http://127.0.0.1:8080/api/webhooks/clerk",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.vs.name, func(t *testing.T) {
			t.Parallel()
			notes := renderNotes(t, tt.vs)
			for _, w := range tt.want {
				if !strings.Contains(notes, w) {
					t.Errorf("NOTES.txt lacks %q:\n%s", w, notes)
				}
			}
			if strings.Contains(notes, "node drains will wait") {
				t.Errorf("NOTES.txt warns about the PDB with %s values", tt.vs.name)
			}
			if strings.Contains(notes, "<no value>") {
				t.Errorf("NOTES.txt has <no value>:\n%s", notes)
			}
			// The smoke test proves the signature and the database without
			// touching the ledger: never a user event.
			for _, bad := range []string{"user.created\"", "-type user.", "credits_granted"} {
				if strings.Contains(notes, bad) {
					t.Errorf("NOTES.txt suggests sending a user event (%q):\n%s", bad, notes)
				}
			}
		})
	}
}
