package main

import (
	"strings"
	"time"

	"github.com/creditgate/creditgate/pkg/creditsapi"
	"github.com/creditgate/creditgate/pkg/env"
	"github.com/creditgate/creditgate/pkg/ledger"
	"github.com/creditgate/creditgate/pkg/postgres"
	"github.com/creditgate/creditgate/pkg/webhook"
)

type config struct {
	DatabaseURL     string
	RuntimeRole     string
	Secrets         []string
	SignupCredits   int64
	ForfeitOnDelete bool
	HTTPAddr        string
	MetricsAddr     string
	APIAddr         string
	APIKeys         *creditsapi.Keys
	// APIServiceAccounts maps namespace/serviceaccount to scopes; non-empty
	// turns on ServiceAccount tokens (TokenReview).
	APIServiceAccounts map[string][]string
	// AuthorizedParties are the frontend origins whose Clerk session tokens
	// the credits API's /v1/me/… accepts; none turns those routes off.
	AuthorizedParties []string
	LogLevel          string
	LogFormat         string
	DBMaxConns        int
	DBLockTimeout     time.Duration
	BodyMemory        int64
	ShutdownTimeout   time.Duration
	ShutdownDelay     time.Duration
	OTLPEndpoint      string
	Namespace         string
	BacklogRefresh    time.Duration
	Clerk             clerkConfig
}

// clerkConfig is the Clerk Backend API access for the metadata write-back.
type clerkConfig struct {
	SecretKey      string
	APIURL         string
	OutboxAttempts int
	RequestsPerSec float64
}

// loadConfig reads and validates the environment. Each problem names its
// variable; no value of a secret is ever part of a message. It returns the
// variables it read with their defaults: the list of variables this binary
// uses (`webhook env`).
func loadConfig(getenv func(string) string, serving bool) (config, []env.Var, error) {
	r := env.New(getenv)
	c := config{
		DatabaseURL: r.DatabaseURL("DATABASE_URL", postgres.CheckURL),
		LogLevel:    r.OneOf("LOG_LEVEL", "info", "debug", "info", "warn", "error"),
		LogFormat:   r.OneOf("LOG_FORMAT", "json", "json", "text"),
	}
	if !serving {
		c.RuntimeRole = r.String("RUNTIME_ROLE", "")
	}
	if serving {
		if raw := r.Required("CLERK_WEBHOOK_SIGNING_SECRET",
			"the whsec_… signing secret of the Clerk webhook endpoint (several may be separated by spaces or commas)"); raw != "" {
			if s, err := webhook.ParseSecrets(raw); err != nil {
				r.Fail("CLERK_WEBHOOK_SIGNING_SECRET", "%v", err)
			} else if _, err := webhook.NewVerifier(s); err != nil {
				r.Fail("CLERK_WEBHOOK_SIGNING_SECRET", "%v", err)
			} else {
				c.Secrets = s
			}
		}
		c.SignupCredits = r.Int("SIGNUP_CREDITS", ledger.DefaultSignupCredits, 1, 1_000_000_000)
		c.ForfeitOnDelete = r.Bool("FORFEIT_ON_DELETE", true)
		c.HTTPAddr = r.Addr("HTTP_ADDR", ":8080")
		c.MetricsAddr = r.Addr("METRICS_ADDR", ":9090")
		if c.HTTPAddr == c.MetricsAddr {
			r.Fail("METRICS_ADDR", "must differ from HTTP_ADDR")
		}
		c.APIAddr = r.Addr("API_ADDR", ":8081")
		if c.APIAddr == c.HTTPAddr || c.APIAddr == c.MetricsAddr {
			r.Fail("API_ADDR", "must differ from HTTP_ADDR and METRICS_ADDR")
		}
		if sas, err := creditsapi.ParseServiceAccounts(r.String("CREDITS_API_SERVICE_ACCOUNTS", "")); err != nil {
			r.Fail("CREDITS_API_SERVICE_ACCOUNTS", "%v", err)
		} else {
			c.APIServiceAccounts = sas
		}
		c.AuthorizedParties = strings.FieldsFunc(r.String("CLERK_AUTHORIZED_PARTIES", ""), func(r rune) bool { return r == ' ' || r == ',' })
		for _, p := range c.AuthorizedParties {
			if !strings.HasPrefix(p, "https://") && !strings.HasPrefix(p, "http://") {
				r.Fail("CLERK_AUTHORIZED_PARTIES", "must be origins such as https://app.example.com, got %q", p)
			}
		}
		if keys, err := creditsapi.ParseKeys(r.Secret("CREDITS_API_KEYS")); err != nil {
			r.Fail("CREDITS_API_KEYS", "%v", err)
		} else {
			c.APIKeys = keys
		}
		c.DBMaxConns = int(r.Int("DB_MAX_CONNS", 10, 1, 1000))
		c.DBLockTimeout = r.Duration("DB_LOCK_TIMEOUT", 5*time.Second, 100*time.Millisecond, time.Minute)
		c.BodyMemory = r.Bytes("BODY_MEMORY_LIMIT", webhook.DefaultBodyMemory, webhook.MaxBodyBytes, 4<<30)
		c.ShutdownTimeout = r.Duration("SHUTDOWN_TIMEOUT", 20*time.Second, 0, time.Hour)
		c.ShutdownDelay = r.Duration("SHUTDOWN_DELAY", 0, 0, 10*time.Minute)
		c.OTLPEndpoint = r.String("OTEL_EXPORTER_OTLP_ENDPOINT", r.String("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", ""))
		c.Namespace = r.String("POD_NAMESPACE", "")
		c.BacklogRefresh = r.Duration("BACKLOG_REFRESH", 30*time.Second, time.Second, time.Hour)
		c.Clerk = loadClerk(r)
		if len(c.AuthorizedParties) > 0 && c.Clerk.SecretKey == "" {
			r.Fail("CLERK_AUTHORIZED_PARTIES", "needs CLERK_SECRET_KEY: session tokens are verified with the instance's keys, fetched from Clerk's Backend API")
		}
	}
	return c, r.Vars(), r.Err()
}

func loadClerk(r *env.Reader) clerkConfig {
	return clerkConfig{
		SecretKey:      r.Secret("CLERK_SECRET_KEY"),
		APIURL:         r.URL("CLERK_API_URL", "https://api.clerk.com/v1"),
		OutboxAttempts: int(r.Int("OUTBOX_MAX_ATTEMPTS", 12, 1, 1000)),
		RequestsPerSec: float64(r.Int("CLERK_API_RPS", 20, 1, 1000)),
	}
}
