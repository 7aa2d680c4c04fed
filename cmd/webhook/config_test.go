package main

import (
	"strings"
	"testing"
)

func envMap(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

const testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

func TestLoadConfigDefaults(t *testing.T) {
	t.Parallel()
	c, _, err := loadConfig(envMap(map[string]string{
		"DATABASE_URL":                 "postgres://u:p@db/creditgate",
		"CLERK_WEBHOOK_SIGNING_SECRET": testSecret + ", " + testSecret,
	}), true)
	if err != nil {
		t.Fatal(err)
	}
	if c.SignupCredits != 20 || c.HTTPAddr != ":8080" || c.MetricsAddr != ":9090" || c.DBMaxConns != 10 ||
		c.LogFormat != "json" || c.LogLevel != "info" || len(c.Secrets) != 2 || !c.ForfeitOnDelete {
		t.Errorf("defaults = %+v", c)
	}
}

func TestLoadConfigErrorsNameTheVariable(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		env  map[string]string
		want []string
	}{
		{"nothing set", map[string]string{}, []string{"DATABASE_URL: required", "CLERK_WEBHOOK_SIGNING_SECRET: required"}},
		{"bad values", map[string]string{
			"DATABASE_URL": "mysql://x", "CLERK_WEBHOOK_SIGNING_SECRET": "sk_live_supersecret",
			"SIGNUP_CREDITS": "-3", "DB_MAX_CONNS": "lots", "HTTP_ADDR": "8080", "LOG_LEVEL": "loud",
			"LOG_FORMAT": "xml", "SHUTDOWN_TIMEOUT": "soon", "FORFEIT_ON_DELETE": "maybe",
		}, []string{"FORFEIT_ON_DELETE: must be true or false", "DATABASE_URL:", "CLERK_WEBHOOK_SIGNING_SECRET: secret 1 of 1 does not start with whsec_",
			`SIGNUP_CREDITS: must be a whole number from 1 to 1000000000, got "-3"`, "DB_MAX_CONNS:", "HTTP_ADDR:",
			"LOG_LEVEL:", "LOG_FORMAT:", "SHUTDOWN_TIMEOUT:"}},
		{"secret not base64", map[string]string{"DATABASE_URL": "postgres://x/y", "CLERK_WEBHOOK_SIGNING_SECRET": "whsec_!!!notbase64"},
			[]string{"CLERK_WEBHOOK_SIGNING_SECRET: secret 1 of 1 is not valid base64"}},
	}
	for _, tt := range tests {
		_, _, err := loadConfig(envMap(tt.env), true)
		if err == nil {
			t.Errorf("%s: no error", tt.name)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not mention %q", tt.name, err, w)
			}
		}
		for _, secret := range []string{"sk_live_supersecret", "!!!notbase64"} {
			if strings.Contains(err.Error(), secret) {
				t.Errorf("%s: error leaks a secret: %q", tt.name, err)
			}
		}
	}
}

func TestMigrateDoesNotNeedSigningSecret(t *testing.T) {
	t.Parallel()
	if _, _, err := loadConfig(envMap(map[string]string{"DATABASE_URL": "postgres://x/y"}), false); err != nil {
		t.Errorf("migrate config: %v", err)
	}
}
