package main

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/creditgate/creditgate/pkg/ledger"
	"github.com/creditgate/creditgate/pkg/webhook"
)

// Environment variables read by the webhook binary. The chart's wiring test
// checks the chart against this list.
const (
	envDatabaseURL     = "DATABASE_URL"
	envSigningSecret   = "CLERK_WEBHOOK_SIGNING_SECRET"
	envSignupCredits   = "SIGNUP_CREDITS"
	envForfeitOnDelete = "FORFEIT_ON_DELETE"
	envHTTPAddr        = "HTTP_ADDR"
	envMetricsAddr     = "METRICS_ADDR"
	envLogLevel        = "LOG_LEVEL"
	envLogFormat       = "LOG_FORMAT"
	envDBMaxConns      = "DB_MAX_CONNS"
	envShutdownTimeout = "SHUTDOWN_TIMEOUT"
	envShutdownDelay   = "SHUTDOWN_DELAY"
	envOTLPEndpoint    = "OTEL_EXPORTER_OTLP_ENDPOINT"
	envOTLPTraces      = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
)

// EnvVars lists every variable the webhook binary reads (besides the other
// standard OTEL_* variables, which the OpenTelemetry exporters read).
var EnvVars = []string{
	envDatabaseURL, envSigningSecret, envSignupCredits, envForfeitOnDelete, envHTTPAddr, envMetricsAddr,
	envLogLevel, envLogFormat, envDBMaxConns, envShutdownTimeout, envShutdownDelay,
	envOTLPEndpoint, envOTLPTraces,
}

type config struct {
	DatabaseURL     string
	Secrets         []string
	SignupCredits   int64
	ForfeitOnDelete bool
	HTTPAddr        string
	MetricsAddr     string
	LogLevel        string
	LogFormat       string
	DBMaxConns      int
	ShutdownTimeout time.Duration
	ShutdownDelay   time.Duration
	OTLPEndpoint    string
}

// loadConfig reads and validates the environment. Each problem names its
// variable; no value of a secret is ever part of a message.
func loadConfig(getenv func(string) string, needSecret bool) (config, error) {
	c := config{
		DatabaseURL: getenv(envDatabaseURL),
		HTTPAddr:    orDefault(getenv(envHTTPAddr), ":8080"),
		MetricsAddr: orDefault(getenv(envMetricsAddr), ":9090"),
		LogLevel:    orDefault(getenv(envLogLevel), "info"),
		LogFormat:   orDefault(getenv(envLogFormat), "json"),
	}
	c.OTLPEndpoint = getenv(envOTLPEndpoint)
	if c.OTLPEndpoint == "" {
		c.OTLPEndpoint = getenv(envOTLPTraces)
	}
	var errs []error
	bad := func(name, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", name, fmt.Sprintf(format, args...)))
	}
	if c.DatabaseURL == "" {
		bad(envDatabaseURL, "required (e.g. postgres://user:pass@host:5432/creditgate?sslmode=require)")
	} else if !strings.HasPrefix(c.DatabaseURL, "postgres://") && !strings.HasPrefix(c.DatabaseURL, "postgresql://") &&
		!strings.Contains(c.DatabaseURL, "=") {
		bad(envDatabaseURL, "must be a postgres:// URL or a key=value connection string")
	}
	if needSecret {
		raw := getenv(envSigningSecret)
		if raw == "" {
			bad(envSigningSecret, "required: the whsec_… signing secret of the Clerk webhook endpoint (several may be separated by spaces or commas)")
		} else if s, err := webhook.ParseSecrets(raw); err != nil {
			bad(envSigningSecret, "%v", err)
		} else if _, err := webhook.NewVerifier(s); err != nil {
			bad(envSigningSecret, "%v", err)
		} else {
			c.Secrets = s
		}
	}
	c.SignupCredits = ledger.DefaultSignupCredits
	if v := getenv(envSignupCredits); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 || n > 1_000_000_000 {
			bad(envSignupCredits, "must be a whole number from 1 to 1000000000, got %q", v)
		}
		c.SignupCredits = n
	}
	c.ForfeitOnDelete = true
	if v := getenv(envForfeitOnDelete); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			bad(envForfeitOnDelete, "must be true or false, got %q", v)
		}
		c.ForfeitOnDelete = b
	}
	c.DBMaxConns = 10
	if v := getenv(envDBMaxConns); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			bad(envDBMaxConns, "must be a whole number from 1 to 1000, got %q", v)
		}
		c.DBMaxConns = n
	}
	for _, a := range []struct{ name, v string }{{envHTTPAddr, c.HTTPAddr}, {envMetricsAddr, c.MetricsAddr}} {
		if _, port, err := net.SplitHostPort(a.v); err != nil || port == "" {
			bad(a.name, "must be host:port or :port, got %q", a.v)
		}
	}
	if c.HTTPAddr == c.MetricsAddr {
		bad(envMetricsAddr, "must differ from %s", envHTTPAddr)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad(envLogLevel, "must be debug, info, warn or error, got %q", c.LogLevel)
	}
	switch c.LogFormat {
	case "json", "text":
	default:
		bad(envLogFormat, "must be json or text, got %q", c.LogFormat)
	}
	var err error
	if c.ShutdownTimeout, err = duration(getenv(envShutdownTimeout), 20*time.Second); err != nil {
		bad(envShutdownTimeout, "%v", err)
	}
	if c.ShutdownDelay, err = duration(getenv(envShutdownDelay), 0); err != nil {
		bad(envShutdownDelay, "%v", err)
	}
	return c, errors.Join(errs...)
}

func duration(v string, def time.Duration) (time.Duration, error) {
	if v == "" {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("must be a non-negative duration such as 20s, got %q", v)
	}
	return d, nil
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}
