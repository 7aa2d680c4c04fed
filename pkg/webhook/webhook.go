// Package webhook is creditgate's HTTP receiver: it verifies Svix-signed Clerk
// deliveries on the raw body, hands them to the ledger, and maps the outcome
// to the status Svix acts on (2xx done, 4xx never retry, 5xx retry later).
package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/semaphore"

	"github.com/creditgate/creditgate/pkg/ledger"
)

// MaxBodyBytes is the largest body accepted (1 MiB); Clerk's user events are a
// few KiB.
const MaxBodyBytes = 1 << 20

// RetryAfterSeconds is the Retry-After sent with a 503.
const RetryAfterSeconds = 5

// DefaultBodyMemory is the default bound on the bytes of all request bodies
// held at once (BodyMemory).
const DefaultBodyMemory = 8 << 20

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
	// bodies bounds the memory of the bodies in flight, in bytes.
	bodies *semaphore.Weighted
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
	// BodyMemory bounds the bytes of all webhook bodies held at once, from
	// the first byte read until the delivery is answered; a delivery that
	// does not fit is answered 503 (Svix retries it) instead of growing the
	// process towards its memory limit. 0 means DefaultBodyMemory.
	BodyMemory int64
}

// New returns a Handler.
func New(c Config) *Handler {
	if c.ProcessTimeout <= 0 {
		c.ProcessTimeout = 10 * time.Second
	}
	if c.BodyMemory <= 0 {
		c.BodyMemory = DefaultBodyMemory
	}
	return &Handler{
		verifier: c.Verifier, proc: c.Processor, ready: c.Ready, metrics: c.Metrics,
		log: c.Logger, tracer: c.Tracer, timeout: c.ProcessTimeout, tracing: c.HTTPTracing,
		bodies: semaphore.NewWeighted(max(c.BodyMemory, MaxBodyBytes)),
	}
}

type errorBody struct {
	Error  string `json:"error"`
	Reason string `json:"reason,omitempty"`
	SvixID string `json:"svix_id,omitempty"`
}

// clerk handles POST /api/webhooks/clerk. Cheap checks come first and the
// body is read last: a request without plausible Svix headers is answered
// without reading a byte of its body, and the bodies that are read share a
// fixed memory budget, so that no flood, signed or not, can take the process
// past its memory limit.
func (h *Handler) clerk(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if r.ContentLength > MaxBodyBytes {
		h.metrics.deliveries.WithLabelValues(outcomeTooLarge).Inc()
		writeJSON(w, http.StatusRequestEntityTooLarge, errorBody{Error: "body larger than 1 MiB"})
		return
	}
	sh, err := h.verifier.CheckHeaders(r.Header)
	if err != nil {
		h.refuse(w, r, err)
		return
	}
	body, release, err := h.readBody(w, r)
	if err != nil {
		var status int
		switch {
		case errors.Is(err, errBusy):
			status = http.StatusServiceUnavailable
			h.metrics.deliveries.WithLabelValues(outcomeOverloaded).Inc()
			w.Header().Set("Retry-After", strconv.Itoa(RetryAfterSeconds))
			h.log.WarnContext(ctx, "webhook refused: bodies in flight use the whole body memory budget", "svix_id", sh.ID)
		case errors.Is(err, errTooLarge):
			status = http.StatusRequestEntityTooLarge
			h.metrics.deliveries.WithLabelValues(outcomeTooLarge).Inc()
		default:
			status = http.StatusBadRequest
			h.metrics.deliveries.WithLabelValues(outcomeBadRequest).Inc()
		}
		writeJSON(w, status, errorBody{Error: err.Error()})
		return
	}
	defer release()
	if err := h.verifier.VerifySignature(body, sh); err != nil {
		h.refuse(w, r, err)
		return
	}

	d := ledger.Delivery{SvixID: sh.ID, Body: body, ReceivedAt: time.Now()}
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
		for _, f := range res.IgnoredFields {
			h.metrics.ignored.WithLabelValues(f.Field).Inc()
			h.log.WarnContext(ctx, "webhook field left out", "svix_id", d.SvixID, "clerk_user_id", res.ClerkUserID,
				"field", f.Field, "reason", f.Reason)
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

// refuse answers a delivery that failed Svix verification.
func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, err error) {
	var ve *VerifyError
	if !errors.As(err, &ve) {
		ve = &VerifyError{Reason: ReasonInvalidHeaders, Detail: err.Error()}
	}
	h.metrics.verifyFailed.WithLabelValues(ve.Reason).Inc()
	status := http.StatusUnauthorized
	if ve.Reason == ReasonMissingHeaders || ve.Reason == ReasonInvalidHeaders {
		status = http.StatusBadRequest
		h.metrics.deliveries.WithLabelValues(outcomeBadRequest).Inc()
	} else {
		h.metrics.deliveries.WithLabelValues(outcomeUnauthorized).Inc()
	}
	h.log.WarnContext(r.Context(), "webhook refused", "reason", ve.Reason, "error", ve.Detail)
	writeJSON(w, status, errorBody{Error: ve.Detail, Reason: ve.Reason})
}

var (
	errBusy     = errors.New("too many deliveries in flight: retry later")
	errTooLarge = errors.New("body larger than 1 MiB")
)

// readChunk is how much of the budget a body of unknown length takes at a time.
const readChunk = 64 << 10

// readBody reads the whole body within the memory budget. A body of known
// length reserves its length up front; one sent chunked reserves as it
// grows. release returns the reservation once the delivery is answered.
func (h *Handler) readBody(w http.ResponseWriter, r *http.Request) (body []byte, release func(), err error) {
	src := http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	var held int64
	release = func() { h.bodies.Release(held) }
	reserve := func(n int64) bool {
		if !h.bodies.TryAcquire(n) {
			return false
		}
		held += n
		return true
	}
	fail := func(err error) ([]byte, func(), error) {
		release()
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, nil, errTooLarge
		}
		if errors.Is(err, errBusy) {
			return nil, nil, err
		}
		return nil, nil, fmt.Errorf("read body: %w", err)
	}
	if n := r.ContentLength; n >= 0 {
		if !reserve(n) {
			return fail(errBusy)
		}
		body = make([]byte, n)
		if _, err := io.ReadFull(src, body); err != nil {
			return fail(err)
		}
		return body, release, nil
	}
	for {
		if len(body) == cap(body) {
			grow := int64(readChunk)
			if !reserve(grow) {
				return fail(errBusy)
			}
			body = append(body, make([]byte, grow)...)[:len(body)]
		}
		n, err := src.Read(body[len(body):cap(body)])
		body = body[:len(body)+n]
		if err == io.EOF {
			return body, release, nil
		}
		if err != nil {
			return fail(err)
		}
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
