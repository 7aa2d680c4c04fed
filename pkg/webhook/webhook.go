// Package webhook is creditgate's HTTP receiver: it verifies Svix-signed Clerk
// deliveries on the raw body, hands them to the ledger, and maps the outcome
// to the status Svix acts on (2xx done, 4xx never retry, 5xx retry later).
package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/creditgate/creditgate/pkg/ledger"
)

// MaxBodyBytes is the largest body accepted (1 MiB); Clerk's user events are a
// few KiB.
const MaxBodyBytes = 1 << 20

// RetryAfterSeconds is the Retry-After sent with a 503.
const RetryAfterSeconds = 5

// Processor applies a verified delivery; ledger.Service implements it.
type Processor interface {
	Process(ctx context.Context, d ledger.Delivery) (ledger.Result, error)
}

// Handler serves the webhook and health endpoints.
type Handler struct {
	verifier *Verifier
	proc     Processor
	ready    func(context.Context) error
	metrics  *Metrics
	log      *slog.Logger
	tracer   trace.Tracer
	// timeout bounds the database work of one delivery. That work is detached
	// from the request: once a verified body is read, a sender hanging up must
	// not abort a transaction half way to its outcome.
	timeout time.Duration
	tracing bool
}

// Config holds a Handler's dependencies.
type Config struct {
	Verifier  *Verifier
	Processor Processor
	// Ready reports whether the service can serve (database reachable and migrated).
	Ready   func(context.Context) error
	Metrics *Metrics
	Logger  *slog.Logger
	Tracer  trace.Tracer
	// ProcessTimeout bounds one delivery's database work; 0 means 10s.
	ProcessTimeout time.Duration
	// HTTPTracing wraps the router in otelhttp's server spans. Off when no
	// exporter is configured: the wrapper costs CPU even with a no-op tracer.
	HTTPTracing bool
}

// New returns a Handler.
func New(c Config) *Handler {
	if c.ProcessTimeout <= 0 {
		c.ProcessTimeout = 10 * time.Second
	}
	return &Handler{
		verifier: c.Verifier, proc: c.Processor, ready: c.Ready, metrics: c.Metrics,
		log: c.Logger, tracer: c.Tracer, timeout: c.ProcessTimeout, tracing: c.HTTPTracing,
	}
}

type errorBody struct {
	Error  string `json:"error"`
	Reason string `json:"reason,omitempty"`
	SvixID string `json:"svix_id,omitempty"`
}

// clerk handles POST /api/webhooks/clerk.
func (h *Handler) clerk(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if r.ContentLength > MaxBodyBytes {
		h.metrics.deliveries.WithLabelValues(outcomeTooLarge).Inc()
		writeJSON(w, http.StatusRequestEntityTooLarge, errorBody{Error: "body larger than 1 MiB"})
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			h.metrics.deliveries.WithLabelValues(outcomeTooLarge).Inc()
			writeJSON(w, http.StatusRequestEntityTooLarge, errorBody{Error: "body larger than 1 MiB"})
			return
		}
		h.metrics.deliveries.WithLabelValues(outcomeBadRequest).Inc()
		writeJSON(w, http.StatusBadRequest, errorBody{Error: "read body: " + err.Error()})
		return
	}

	if err := h.verifier.Verify(body, r.Header); err != nil {
		var ve *VerifyError
		errors.As(err, &ve)
		h.metrics.verifyFailed.WithLabelValues(ve.Reason).Inc()
		status := http.StatusUnauthorized
		if ve.Reason == ReasonMissingHeaders || ve.Reason == ReasonInvalidHeaders {
			status = http.StatusBadRequest
			h.metrics.deliveries.WithLabelValues(outcomeBadRequest).Inc()
		} else {
			h.metrics.deliveries.WithLabelValues(outcomeUnauthorized).Inc()
		}
		h.log.WarnContext(ctx, "webhook refused", "reason", ve.Reason, "error", ve.Detail)
		writeJSON(w, status, errorBody{Error: ve.Detail, Reason: ve.Reason})
		return
	}

	d := ledger.Delivery{SvixID: r.Header.Get("svix-id"), Body: body, ReceivedAt: time.Now()}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.timeout)
	defer cancel()
	pctx, span := h.tracer.Start(pctx, "clerk.webhook.process",
		trace.WithAttributes(attribute.String("messaging.message.id", d.SvixID)))
	defer span.End()

	start := time.Now()
	res, err := h.proc.Process(pctx, d)
	outcome := string(res.Status)
	status := errorStatus(err)
	if err != nil && status != http.StatusBadRequest {
		outcome = outcomeFailed
	}
	h.metrics.processing.WithLabelValues(outcome).Observe(time.Since(start).Seconds())
	h.metrics.deliveries.WithLabelValues(outcome).Inc()
	span.SetAttributes(attribute.String("creditgate.outcome", outcome),
		attribute.String("clerk.event_type", res.EventType), attribute.String("clerk.user_id", res.ClerkUserID))

	switch {
	case err == nil:
		if res.CreditsGranted > 0 {
			h.metrics.credits.Add(float64(res.CreditsGranted))
		}
		h.log.InfoContext(ctx, "webhook handled", "svix_id", d.SvixID, "event_type", res.EventType,
			"clerk_user_id", res.ClerkUserID, "outcome", outcome, "credits_granted", res.CreditsGranted)
		writeJSON(w, http.StatusOK, res)
	case status == http.StatusBadRequest:
		// Verified but unprocessable: tell Svix to stop retrying.
		h.log.WarnContext(ctx, "webhook rejected", "svix_id", d.SvixID, "event_type", res.EventType, "error", err)
		w.Header().Set("webhook-delivery", "abort-message")
		writeJSON(w, status, errorBody{Error: "unprocessable event", Reason: res.Reason, SvixID: d.SvixID})
	default:
		span.RecordError(err)
		span.SetStatus(codes.Error, "delivery failed")
		h.log.ErrorContext(ctx, "webhook failed", "svix_id", d.SvixID, "error", err)
		if status == http.StatusServiceUnavailable {
			w.Header().Set("Retry-After", strconv.Itoa(RetryAfterSeconds))
		}
		writeJSON(w, status, errorBody{Error: http.StatusText(status), SvixID: d.SvixID})
	}
}

// errorStatus is the one place where ledger errors become HTTP statuses.
func errorStatus(err error) int {
	switch {
	case err == nil:
		return http.StatusOK
	case errors.Is(err, ledger.ErrInvalidEvent):
		return http.StatusBadRequest
	case errors.Is(err, ledger.ErrUnavailable):
		return http.StatusServiceUnavailable
	default:
		return http.StatusInternalServerError
	}
}

func (h *Handler) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (h *Handler) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := h.ready(ctx); err != nil {
		h.log.WarnContext(ctx, "not ready", "error", err)
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"encode response"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
