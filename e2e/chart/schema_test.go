package chart

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestValuesRejected checks that values.schema.json and the templates' own
// checks refuse values that cannot work, with a message naming the problem.
func TestValuesRejected(t *testing.T) {
	t.Parallel()
	secrets := []string{"--set", "secret.databaseURL=" + testDatabaseURL, "--set", "secret.signingSecret=" + testSigningSecret}
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		// values.schema.json
		{name: "replicas as a string", args: append([]string{"--set-string", "webhook.replicas=2"}, secrets...), wantErr: "/webhook/replicas"},
		{name: "unknown top-level key", args: append([]string{"--set", "replica=2"}, secrets...), wantErr: "additional properties 'replica' not allowed"},
		{name: "unknown nested key", args: append([]string{"--set", "config.signupCredit=5"}, secrets...), wantErr: "additional properties 'signupCredit' not allowed"},
		{name: "no signing secret without existingSecret", args: []string{"--set", "secret.databaseURL=" + testDatabaseURL}, wantErr: "/secret/signingSecret"},
		{name: "no database URL without existingSecret", args: []string{"--set", "secret.signingSecret=" + testSigningSecret}, wantErr: "/secret/databaseURL"},
		{name: "signing secret without whsec_", args: []string{"--set", "secret.databaseURL=" + testDatabaseURL, "--set", "secret.signingSecret=abc"}, wantErr: "/secret/signingSecret"},
		// Placeholders from the docs, and values the webhook would refuse at start-up.
		{name: "database URL placeholder", args: []string{"--set", "secret.databaseURL=postgres://…", "--set", "secret.signingSecret=" + testSigningSecret}, wantErr: "/secret/databaseURL"},
		{name: "database URL with a placeholder password", args: []string{"--set", "secret.databaseURL=postgres://creditgate:…@db:5432/creditgate?sslmode=require", "--set", "secret.signingSecret=" + testSigningSecret}, wantErr: "/secret/databaseURL"},
		{name: "database URL with nothing after the scheme", args: []string{"--set", "secret.databaseURL=postgres://", "--set", "secret.signingSecret=" + testSigningSecret}, wantErr: "/secret/databaseURL"},
		{name: "signing secret placeholder", args: []string{"--set", "secret.databaseURL=" + testDatabaseURL, "--set", "secret.signingSecret=whsec_…"}, wantErr: "/secret/signingSecret"},
		{name: "signing secret placeholder in ASCII", args: []string{"--set", "secret.databaseURL=" + testDatabaseURL, "--set", "secret.signingSecret=whsec_..."}, wantErr: "/secret/signingSecret"},
		{name: "signing secret prefix alone", args: []string{"--set", "secret.databaseURL=" + testDatabaseURL, "--set", "secret.signingSecret=whsec_"}, wantErr: "/secret/signingSecret"},
		{name: "signing secret with a weak key", args: []string{"--set", "secret.databaseURL=" + testDatabaseURL, "--set", "secret.signingSecret=whsec_YQ=="}, wantErr: "/secret/signingSecret"},
		{name: "signing secret not base64", args: []string{"--set", "secret.databaseURL=" + testDatabaseURL, "--set", "secret.signingSecret=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS"}, wantErr: "/secret/signingSecret"},
		{name: "one of two signing secrets a placeholder", args: []string{"--set", "secret.databaseURL=" + testDatabaseURL, "--set", "secret.signingSecret=" + testSigningSecret + " whsec_…"}, wantErr: "/secret/signingSecret"},
		{name: "Clerk secret key placeholder", args: append([]string{"--set", "secret.clerkSecretKey=sk_live_…"}, secrets...), wantErr: "/secret/clerkSecretKey"},
		{name: "Clerk secret key prefix alone", args: append([]string{"--set", "secret.clerkSecretKey=sk_live_"}, secrets...), wantErr: "/secret/clerkSecretKey"},
		{name: "Clerk publishable key", args: append([]string{"--set", "secret.clerkSecretKey=pk_live_Y2xlcmsuZXhhbXBsZS5jb20k"}, secrets...), wantErr: "/secret/clerkSecretKey"},
		{name: "image repository placeholder", args: append([]string{"--set", "image.repository=<registry>/creditgate"}, secrets...), wantErr: "/image/repository"},
		{name: "image repository with a tag", args: append([]string{"--set", "image.repository=ghcr.io/creditgate/creditgate:0.1.0"}, secrets...), wantErr: "/image/repository"},
		{name: "image tag placeholder", args: append([]string{"--set", "image.tag=<tag>"}, secrets...), wantErr: "/image/tag"},
		{name: "reconciler image repository placeholder", args: append([]string{"--set", "reconciler.image.repository=REGISTRY/creditgate-reconciler"}, secrets...), wantErr: "/reconciler/image/repository"},
		{name: "credits as a string", args: append([]string{"--set-string", "config.signupCredits=twenty"}, secrets...), wantErr: "/config/signupCredits"},
		{name: "unknown log level", args: append([]string{"--set", "config.logLevel=verbose"}, secrets...), wantErr: "/config/logLevel"},
		{name: "fractional duration", args: append([]string{"--set", "config.shutdownDelay=1.5s"}, secrets...), wantErr: "/config/shutdownDelay"},
		{name: "ingress pathType", args: append([]string{"--set", "ingress.pathType=ImplementationSpecific"}, secrets...), wantErr: "/ingress/pathType"},
		// the templates' fail checks
		{name: "grace period shorter than delay and drain", args: append([]string{"--set", "webhook.terminationGracePeriodSeconds=25"}, secrets...), wantErr: "terminationGracePeriodSeconds (25) must be longer"},
		{name: "reconcile timeout not below the deadline", args: append([]string{"--set", "reconciler.config.timeout=5m"}, secrets...), wantErr: "RECONCILE_TIMEOUT, 300s) must be shorter"},
		{name: "extraEnv overriding a chart variable", args: append([]string{"--set", "extraEnv[0].name=SIGNUP_CREDITS", "--set-string", "extraEnv[0].value=5"}, secrets...), wantErr: "extraEnv: SIGNUP_CREDITS is set by the chart"},
		{name: "autoscaling min above max", args: append([]string{"--set", "autoscaling.enabled=true", "--set", "autoscaling.minReplicas=4", "--set", "autoscaling.maxReplicas=3"}, secrets...), wantErr: "must not exceed"},
		// (2 replicas + 1) × (10 + 1) + 4 + 2 = 39; with the HPA at 6: (6 + 1) × 11 + 6 = 83.
		{name: "connection budget below the peak", args: append([]string{"--set", "databaseConnectionBudget=38"}, secrets...), wantErr: "databaseConnectionBudget (38) is below this release's peak of 39 PostgreSQL connections: 3 webhook pods at most"},
		{name: "connection budget below the HPA's peak", args: append([]string{"--set", "databaseConnectionBudget=82", "--set", "autoscaling.enabled=true"}, secrets...), wantErr: "peak of 83 PostgreSQL connections: 7 webhook pods at most (autoscaling.maxReplicas"},
		{name: "connection budget negative", args: append([]string{"--set", "databaseConnectionBudget=-1"}, secrets...), wantErr: "/databaseConnectionBudget"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			vs := valueSet{name: tt.name, release: "creditgate", namespace: "creditgate", args: tt.args}
			out, err := helmTemplate(t, vs)
			if err == nil {
				t.Fatalf("helm template accepted %q:\n%.500s", tt.args, out)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("helm template %q failed without %q:\n%v", tt.args, tt.wantErr, err)
			}
		})
	}
}

// TestLintRejectsMissingSecret checks that helm lint, not only template,
// refuses an install without the signing secret.
func TestLintRejectsMissingSecret(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, err := run(ctx, "", nil, tool(t, "helm"), "lint", "--strict", chartDir, "--set", "secret.databaseURL="+testDatabaseURL)
	if err == nil || !strings.Contains(err.Error(), "/secret/signingSecret") {
		t.Errorf("helm lint without a signing secret: %v, want a schema error on /secret/signingSecret", err)
	}
}

// TestValuesAccepted checks settings that must render.
func TestValuesAccepted(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
	}{
		{name: "existingSecret without secret values", args: []string{"--set", "secret.existingSecret=mine"}},
		{name: "several signing secrets", args: []string{"--set", "secret.existingSecret=", "--set", "secret.databaseURL=" + testDatabaseURL,
			"--set", "secret.signingSecret=" + testSigningSecret + " whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"}},
		{name: "a 16-byte signing key with padding", args: []string{"--set", "secret.databaseURL=" + testDatabaseURL,
			"--set", "secret.signingSecret=whsec_MDEyMzQ1Njc4OWFiY2RlZg=="}},
		{name: "Clerk-shaped secrets", args: []string{"--set", "secret.databaseURL=postgresql://creditgate:p%40ss@db.internal:5432/creditgate?sslmode=verify-full",
			"--set", "secret.signingSecret=whsec_K2V5K2tleStrZXkra2V5K2tleStrZXkra2V5",
			"--set", "secret.clerkSecretKey=sk_live_3cF9aZq0Yb7TnWm2Lk5Rp8Xv1Hd4Gj6S"}},
		{name: "test Clerk secret key", args: []string{"--set", "secret.existingSecret=mine", "--set", "secret.clerkSecretKey=sk_test_e2e"}},
		{name: "own registry with a port", args: []string{"--set", "secret.existingSecret=mine", "--set", "image.repository=localhost:5000/team/creditgate", "--set", "image.tag=v0.2.0-rc.1"}},
		{name: "skaffold's tag@digest", args: []string{"--set", "secret.existingSecret=mine", "--set", "image.repository=creditgate-webhook",
			"--set", "image.tag=abc1234-dirty@sha256:0000000000000000000000000000000000000000000000000000000000000000"}},
		{name: "key=value database URL", args: []string{"--set", "secret.databaseURL=host=db dbname=creditgate", "--set", "secret.signingSecret=" + testSigningSecret}},
		{name: "percent minAvailable", args: []string{"--set", "secret.existingSecret=mine", "--set", "podDisruptionBudget.minAvailable=50%"}},
		{name: "reconciler and migrations off", args: []string{"--set", "secret.existingSecret=mine", "--set", "reconciler.enabled=false", "--set", "migrations.enabled=false", "--set", "tests.enabled=false"}},
		{name: "no ServiceAccount", args: []string{"--set", "secret.existingSecret=mine", "--set", "serviceAccount.create=false"}},
		{name: "connection budget at the peak", args: []string{"--set", "secret.existingSecret=mine", "--set", "databaseConnectionBudget=39"}},
		{name: "connection budget at the HPA's peak", args: []string{"--set", "secret.existingSecret=mine", "--set", "databaseConnectionBudget=83", "--set", "autoscaling.enabled=true"}},
		{name: "connection budget without reconciler and migrations", args: []string{"--set", "secret.existingSecret=mine", "--set", "databaseConnectionBudget=33",
			"--set", "reconciler.enabled=false", "--set", "migrations.enabled=false", "--set", "tests.enabled=false"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			vs := valueSet{name: tt.name, release: "creditgate", namespace: "creditgate", args: tt.args}
			out, err := helmTemplate(t, vs)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := decode(out); err != nil {
				t.Fatal(err)
			}
		})
	}
}
