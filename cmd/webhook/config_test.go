package main

import (
	"strings"
	"testing"
	"time"
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
		c.DBLockTimeout != 5*time.Second || c.BodyMemory != 8<<20 ||
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
		// An empty key signs bodies anyone can forge; a one-byte key fell to
		// 43 guesses.
		{"empty key", map[string]string{"DATABASE_URL": "postgres://x/y", "CLERK_WEBHOOK_SIGNING_SECRET": "whsec_"},
			[]string{"CLERK_WEBHOOK_SIGNING_SECRET: secret 1 of 1 is too weak: its key is 0 bytes, at least 16"}},
		{"one-byte key", map[string]string{"DATABASE_URL": "postgres://x/y", "CLERK_WEBHOOK_SIGNING_SECRET": "whsec_YQ=="},
			[]string{"CLERK_WEBHOOK_SIGNING_SECRET: secret 1 of 1 is too weak: its key is 1 bytes"}},
		{"15-byte key beside a good one", map[string]string{"DATABASE_URL": "postgres://x/y",
			"CLERK_WEBHOOK_SIGNING_SECRET": testSecret + " whsec_MDEyMzQ1Njc4OWFiY2Rl"},
			[]string{"CLERK_WEBHOOK_SIGNING_SECRET: secret 2 of 2 is too weak: its key is 15 bytes"}},
		// pgx's own message would echo the URL, password included.
		{"unparsable database URL", map[string]string{"DATABASE_URL": "postgres://user:s3cr%t@db:5432/x", "CLERK_WEBHOOK_SIGNING_SECRET": testSecret},
			[]string{"DATABASE_URL: not a valid PostgreSQL URL"}},
		{"database URL with a bad port", map[string]string{"DATABASE_URL": "postgres://user:s3cr3t@db:port/x", "CLERK_WEBHOOK_SIGNING_SECRET": testSecret},
			[]string{"DATABASE_URL: not a valid PostgreSQL URL"}},
		{"weak API key", map[string]string{"DATABASE_URL": "postgres://x/y", "CLERK_WEBHOOK_SIGNING_SECRET": testSecret,
			"CREDITS_API_KEYS": "app:read+spend:shortkey123"},
			[]string{"CREDITS_API_KEYS: entry 1 of 1 (app): the key is 11 characters, at least 32"}},
		{"API key with an unknown scope", map[string]string{"DATABASE_URL": "postgres://x/y", "CLERK_WEBHOOK_SIGNING_SECRET": testSecret,
			"CREDITS_API_KEYS": "app:read+steal:0123456789abcdef0123456789abcdef"},
			[]string{`CREDITS_API_KEYS: entry 1 of 1 (app): unknown scope "steal"`}},
		{"sizes and timeouts", map[string]string{"DATABASE_URL": "postgres://x/y", "CLERK_WEBHOOK_SIGNING_SECRET": testSecret,
			"BODY_MEMORY_LIMIT": "12", "DB_LOCK_TIMEOUT": "forever"},
			[]string{"BODY_MEMORY_LIMIT: must be a size from 1MiB to 4GiB such as 16MiB", "DB_LOCK_TIMEOUT: must be a duration"}},
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
		for _, secret := range []string{"sk_live_supersecret", "!!!notbase64", "s3cr", "YQ==", "MDEyMzQ1Njc4OWFiY2Rl", "shortkey123", "0123456789abcdef0123456789abcdef"} {
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
