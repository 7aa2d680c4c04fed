// Package creditsapi serves the credits API: the application's side of the
// ledger (balances, debits, holds, refunds, grants), as api/openapi.yaml
// describes it. The routes, parameters and models are generated from that
// document (api.gen.go); this package decodes and checks requests,
// authorizes callers, renders answers and problems, and leaves every rule
// about credits to the ledger's store.
package creditsapi

import (
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"

	"github.com/creditgate/creditgate/pkg/ledger"
)

//go:embed openapi.json
var openAPIJSON []byte

// Credits is what the API needs from the ledger; postgres.Store implements
// it. Every write takes a ledger.Request (caller, idempotency key and request
// fingerprint) and a Render that turns its result into the answer stored
// under the key.
type Credits interface {
	Balance(ctx context.Context, clerkID string) (ledger.Balance, error)
	Entries(ctx context.Context, clerkID string, limit int, before int64) ([]ledger.EntryView, error)
	Hold(ctx context.Context, id int64) (ledger.Hold, error)
	Debit(ctx context.Context, r ledger.Request, sp ledger.Spend, render ledger.Render) (ledger.Answer, error)
	Grant(ctx context.Context, r ledger.Request, g ledger.Grant, render ledger.Render) (ledger.Answer, error)
	PlaceHold(ctx context.Context, r ledger.Request, sp ledger.Spend, render ledger.Render) (ledger.Answer, error)
	CaptureHold(ctx context.Context, id, amount int64, r ledger.Request, render ledger.Render) (ledger.Answer, error)
	VoidHold(ctx context.Context, id int64, r ledger.Request, render ledger.Render) (ledger.Answer, error)
	ExtendHold(ctx context.Context, id int64, ttl time.Duration, r ledger.Request, render ledger.Render) (ledger.Answer, error)
	Refund(ctx context.Context, entryID, amount int64, reason string, r ledger.Request, render ledger.Render) (ledger.Answer, error)
}

// Config holds a Server's dependencies.
type Config struct {
	Credits Credits
	// Keys authenticates callers by API key; nil: no keys.
	Keys *Keys
	// Reviewer, when set, authenticates in-cluster callers by their
	// projected ServiceAccount tokens (TokenReview).
	Reviewer *TokenReviewer
	Logger   *slog.Logger
	Metrics  *Metrics
	// Timeout bounds one request's database work; 0 means 10s.
	Timeout time.Duration
	// Provision, when set, creates a user creditgate does not hold yet but
	// Clerk does, with its signup credit (the same key signup:<id> as the
	// webhook's, so a racing user.created grants nothing twice): the first
	// request of a new user may come before Svix delivers user.created. It
	// returns ledger.ErrNotFound when Clerk has no such user, and an error
	// wrapping ledger.ErrUnavailable when Clerk cannot be asked.
	Provision func(ctx context.Context, clerkID string) error
	// Sessions, when set, verifies Clerk session tokens for /v1/me/…: it
	// returns the signed-in user's Clerk id, an error wrapping
	// ledger.ErrUnavailable when it cannot tell, any other error for a token
	// that does not verify.
	Sessions Sessions
	// HTTPTracing wraps the router in otelhttp's server spans (a span per
	// request, named by route; database spans nest in it).
	HTTPTracing bool
}

// Sessions verifies Clerk session tokens (clerk.Sessions).
type Sessions interface {
	Verify(ctx context.Context, token string) (clerkUserID string, err error)
}

// Server implements the generated ServerInterface.
type Server struct {
	credits   Credits
	provision func(ctx context.Context, clerkID string) error
	keys      *Keys
	reviewer  *TokenReviewer
	sessions  Sessions
	tracing   bool
	log       *slog.Logger
	metrics   *Metrics
	timeout   time.Duration
}

var _ ServerInterface = (*Server)(nil)

// New returns a Server.
func New(c Config) *Server {
	if c.Timeout <= 0 {
		c.Timeout = 10 * time.Second
	}
	return &Server{credits: c.Credits, provision: c.Provision, keys: c.Keys, reviewer: c.Reviewer, sessions: c.Sessions, tracing: c.HTTPTracing, log: c.Logger, metrics: c.Metrics, timeout: c.Timeout}
}

// Routes returns the API router: the generated routes, with problems for
// bad parameters, unknown paths and wrong methods.
func (s *Server) Routes() http.Handler {
	r := mux.NewRouter()
	var notFound, notAllowed http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, problem(http.StatusNotFound, "not_found", "no such route: "+r.Method+" "+r.URL.Path))
	}), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, problem(http.StatusMethodNotAllowed, "method_not_allowed", r.Method+" is not allowed on "+r.URL.Path))
	})
	if s.metrics != nil {
		// Router middleware runs once a route matched, so it sees the
		// route's template; the two fallbacks are counted as unknown.
		r.Use(s.metrics.instrument)
		notFound, notAllowed = s.metrics.instrument(notFound), s.metrics.instrument(notAllowed)
	}
	r.NotFoundHandler, r.MethodNotAllowedHandler = notFound, notAllowed
	h := HandlerWithOptions(s, GorillaServerOptions{BaseRouter: r, ErrorHandlerFunc: s.paramError})
	if s.metrics != nil {
		s.metrics.precreate(r)
	}
	if !s.tracing {
		return h
	}
	return otelhttp.NewHandler(h, "credits.api",
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return "credits " + r.Method }))
}

// paramError answers a request whose path, query or header parameters do
// not bind (the generated wrapper calls it).
func (s *Server) paramError(w http.ResponseWriter, _ *http.Request, err error) {
	if re, ok := errors.AsType[*RequiredHeaderError](err); ok && strings.EqualFold(re.ParamName, "Idempotency-Key") {
		writeProblem(w, problem(http.StatusBadRequest, string(IdempotencyKeyMissing),
			"every POST needs an Idempotency-Key header: the client's own key for this request, reused only for its retries"))
		return
	}
	writeProblem(w, problem(http.StatusBadRequest, string(InvalidRequest), err.Error()))
}

// Scopes a caller may hold.
const (
	ScopeRead  = "read"
	ScopeSpend = "spend"
	ScopeGrant = "grant"
	ScopeAdmin = "admin"
)

// authorize finds the caller and checks it holds scope; on failure it has
// answered 401 or 403 and returns false.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request, scope string) (Caller, bool) {
	c, err := s.authenticate(r)
	if errors.Is(err, errReviewUnavailable) {
		s.log.ErrorContext(r.Context(), "credits API: token review", "error", err)
		w.Header().Set("Retry-After", "1")
		writeProblem(w, problem(http.StatusServiceUnavailable, string(Unavailable), "could not check the ServiceAccount token; retry"))
		return Caller{}, false
	}
	if err != nil {
		w.Header().Set("WWW-Authenticate", `Bearer realm="creditgate"`)
		writeProblem(w, problem(http.StatusUnauthorized, string(Unauthenticated), err.Error()))
		return Caller{}, false
	}
	if !c.Has(scope) {
		writeProblem(w, problem(http.StatusForbidden, string(Forbidden), fmt.Sprintf("%s lacks the %s scope", c.Name, scope)))
		return Caller{}, false
	}
	return c, true
}

// authenticate finds the caller: an API key, else (with a reviewer) a
// projected ServiceAccount token.
func (s *Server) authenticate(r *http.Request) (Caller, error) {
	token := bearer(r)
	if token == "" {
		return Caller{}, errNoCredentials
	}
	if c, ok := s.keys.Match(token); ok {
		return c, nil
	}
	if s.reviewer != nil && strings.Count(token, ".") == 2 {
		return s.reviewer.Review(r.Context(), token)
	}
	return Caller{}, errors.New("the bearer token is not a valid API key")
}

// GetOpenAPI serves the contract.
func (s *Server) GetOpenAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(openAPIJSON)
}

// GetBalance implements GET /v1/users/{user}/balance.
func (s *Server) GetBalance(w http.ResponseWriter, r *http.Request, user UserPath) {
	if _, ok := s.authorize(w, r, ScopeRead); !ok {
		return
	}
	if !validUser(w, user) {
		return
	}
	s.balance(w, r, user)
}

// balance answers a user's balance (provisioning the user when unknown).
func (s *Server) balance(w http.ResponseWriter, r *http.Request, user string) {
	ctx, cancel := context.WithTimeout(r.Context(), s.timeout)
	defer cancel()
	var b ledger.Balance
	err := s.forUser(ctx, user, func() (err error) {
		b, err = s.credits.Balance(ctx, user)
		return err
	})
	if err != nil {
		s.writeError(w, r, err, string(UserNotFound))
		return
	}
	writeJSON(w, http.StatusOK, toBalance(b))
}

// ListEntries implements GET /v1/users/{user}/entries.
func (s *Server) ListEntries(w http.ResponseWriter, r *http.Request, user UserPath, params ListEntriesParams) {
	if _, ok := s.authorize(w, r, ScopeRead); !ok {
		return
	}
	if !validUser(w, user) {
		return
	}
	s.listEntries(w, r, user, params.Limit, params.Cursor)
}

func (s *Server) listEntries(w http.ResponseWriter, r *http.Request, user string, limitParam *int, cursor *string) {
	limit := 50
	if limitParam != nil {
		limit = *limitParam
	}
	if limit < 1 || limit > 200 {
		writeProblem(w, problem(http.StatusBadRequest, string(InvalidRequest), "limit must be from 1 to 200"))
		return
	}
	var before int64
	if cursor != nil && *cursor != "" {
		id, err := parseID("ent_", *cursor)
		if err != nil {
			writeProblem(w, problem(http.StatusBadRequest, string(InvalidRequest), "cursor is not a next_cursor this API gave"))
			return
		}
		before = id
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.timeout)
	defer cancel()
	var es []ledger.EntryView
	err := s.forUser(ctx, user, func() (err error) {
		es, err = s.credits.Entries(ctx, user, limit+1, before)
		return err
	})
	if err != nil {
		s.writeError(w, r, err, string(UserNotFound))
		return
	}
	page := EntryPage{Data: make([]Entry, 0, min(len(es), limit))}
	for i, e := range es {
		if i == limit {
			next := entryID(es[limit-1].ID)
			page.NextCursor = &next
			break
		}
		page.Data = append(page.Data, toEntry(e))
	}
	writeJSON(w, http.StatusOK, page)
}

// GetHold implements GET /v1/holds/{hold}.
func (s *Server) GetHold(w http.ResponseWriter, r *http.Request, hold HoldPath) {
	if _, ok := s.authorize(w, r, ScopeRead); !ok {
		return
	}
	id, err := parseID("hold_", hold)
	if err != nil {
		writeProblem(w, problem(http.StatusNotFound, string(HoldNotFound), "no hold "+hold))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.timeout)
	defer cancel()
	h, err := s.credits.Hold(ctx, id)
	if err != nil {
		s.writeError(w, r, err, string(HoldNotFound))
		return
	}
	writeJSON(w, http.StatusOK, toHold(h))
}

// CreateDebit implements POST /v1/users/{user}/debits.
func (s *Server) CreateDebit(w http.ResponseWriter, r *http.Request, user UserPath, params CreateDebitParams) {
	var body DebitRequest
	req, ok := s.write(w, r, ScopeSpend, user, params.IdempotencyKey, &body, true)
	if !ok {
		return
	}
	meta, ok := checkSpend(w, body.Amount, body.Reason, body.Reference, body.Metadata)
	if !ok {
		return
	}
	s.do(w, r, user, string(UserNotFound), func(ctx context.Context) (ledger.Answer, error) {
		return s.credits.Debit(ctx, req, ledger.Spend{Amount: body.Amount, Reason: body.Reason, Reference: deref(body.Reference), Metadata: meta},
			renderer(http.StatusCreated))
	})
}

// CreateGrant implements POST /v1/users/{user}/grants.
func (s *Server) CreateGrant(w http.ResponseWriter, r *http.Request, user UserPath, params CreateGrantParams) {
	var body GrantRequest
	req, ok := s.write(w, r, ScopeGrant, user, params.IdempotencyKey, &body, true)
	if !ok {
		return
	}
	if _, ok := checkSpend(w, body.Amount, body.Reason, body.Reference, nil); !ok {
		return
	}
	g := ledger.Grant{Amount: body.Amount, Reason: body.Reason, Reference: deref(body.Reference)}
	if body.ExpiresAt != nil {
		if !body.ExpiresAt.After(time.Now()) {
			writeProblem(w, problem(http.StatusBadRequest, string(InvalidRequest), "expires_at must be in the future"))
			return
		}
		g.ExpiresAt = *body.ExpiresAt
	}
	s.do(w, r, user, string(UserNotFound), func(ctx context.Context) (ledger.Answer, error) {
		return s.credits.Grant(ctx, req, g, renderer(http.StatusCreated))
	})
}

// CreateHold implements POST /v1/users/{user}/holds.
func (s *Server) CreateHold(w http.ResponseWriter, r *http.Request, user UserPath, params CreateHoldParams) {
	var body HoldRequest
	req, ok := s.write(w, r, ScopeSpend, user, params.IdempotencyKey, &body, true)
	if !ok {
		return
	}
	if _, ok := checkSpend(w, body.Amount, body.Reason, body.Reference, nil); !ok {
		return
	}
	if body.TtlSeconds < 1 || body.TtlSeconds > 86400 {
		writeProblem(w, problem(http.StatusBadRequest, string(InvalidRequest), "ttl_seconds must be from 1 to 86400"))
		return
	}
	s.do(w, r, user, string(UserNotFound), func(ctx context.Context) (ledger.Answer, error) {
		return s.credits.PlaceHold(ctx, req, ledger.Spend{Amount: body.Amount, Reason: body.Reason, Reference: deref(body.Reference),
			TTL: time.Duration(body.TtlSeconds) * time.Second}, renderer(http.StatusCreated))
	})
}

// CaptureHold implements POST /v1/holds/{hold}/capture.
func (s *Server) CaptureHold(w http.ResponseWriter, r *http.Request, hold HoldPath, params CaptureHoldParams) {
	var body CaptureRequest
	id, req, ok := s.holdWrite(w, r, hold, params.IdempotencyKey, &body)
	if !ok {
		return
	}
	var amount int64
	if body.Amount != nil {
		if amount = *body.Amount; amount < 1 || amount > maxAmount {
			writeProblem(w, problem(http.StatusBadRequest, string(InvalidRequest), fmt.Sprintf("amount must be from 1 to %d", maxAmount)))
			return
		}
	}
	s.do(w, r, "", string(HoldNotFound), func(ctx context.Context) (ledger.Answer, error) {
		return s.credits.CaptureHold(ctx, id, amount, req, renderer(http.StatusOK))
	})
}

// VoidHold implements POST /v1/holds/{hold}/void.
func (s *Server) VoidHold(w http.ResponseWriter, r *http.Request, hold HoldPath, params VoidHoldParams) {
	var body struct{}
	id, req, ok := s.holdWrite(w, r, hold, params.IdempotencyKey, &body)
	if !ok {
		return
	}
	s.do(w, r, "", string(HoldNotFound), func(ctx context.Context) (ledger.Answer, error) {
		return s.credits.VoidHold(ctx, id, req, renderer(http.StatusOK))
	})
}

// ExtendHold implements POST /v1/holds/{hold}/extend.
func (s *Server) ExtendHold(w http.ResponseWriter, r *http.Request, hold HoldPath, params ExtendHoldParams) {
	var body ExtendRequest
	id, req, ok := s.holdWrite(w, r, hold, params.IdempotencyKey, &body)
	if !ok {
		return
	}
	if body.TtlSeconds < 1 || body.TtlSeconds > 86400 {
		writeProblem(w, problem(http.StatusBadRequest, string(InvalidRequest), "ttl_seconds must be from 1 to 86400"))
		return
	}
	s.do(w, r, "", string(HoldNotFound), func(ctx context.Context) (ledger.Answer, error) {
		return s.credits.ExtendHold(ctx, id, time.Duration(body.TtlSeconds)*time.Second, req, renderer(http.StatusOK))
	})
}

// CreateRefund implements POST /v1/entries/{entry}/refunds.
func (s *Server) CreateRefund(w http.ResponseWriter, r *http.Request, entry EntryPath, params CreateRefundParams) {
	var body RefundRequest
	req, ok := s.write(w, r, ScopeGrant, "", params.IdempotencyKey, &body, true)
	if !ok {
		return
	}
	id, err := parseID("ent_", entry)
	if err != nil {
		writeProblem(w, problem(http.StatusNotFound, string(EntryNotFound), "no entry "+entry))
		return
	}
	var amount int64
	if body.Amount != nil {
		amount = *body.Amount
	}
	if _, ok := checkSpend(w, max(amount, 1), body.Reason, nil, nil); !ok {
		return
	}
	s.do(w, r, "", string(EntryNotFound), func(ctx context.Context) (ledger.Answer, error) {
		return s.credits.Refund(ctx, id, amount, body.Reason, req, renderer(http.StatusCreated))
	})
}

// GetMyBalance implements GET /v1/me/balance: the signed-in user's own
// balance, by their Clerk session token.
func (s *Server) GetMyBalance(w http.ResponseWriter, r *http.Request) {
	if user, ok := s.me(w, r); ok {
		s.balance(w, r, user)
	}
}

// ListMyEntries implements GET /v1/me/entries.
func (s *Server) ListMyEntries(w http.ResponseWriter, r *http.Request, params ListMyEntriesParams) {
	user, ok := s.me(w, r)
	if !ok {
		return
	}
	s.listEntries(w, r, user, params.Limit, params.Cursor)
}

// me is the user a Clerk session token signs in; on failure it has answered.
func (s *Server) me(w http.ResponseWriter, r *http.Request) (string, bool) {
	if s.sessions == nil {
		writeProblem(w, problem(http.StatusUnauthorized, string(Unauthenticated),
			"Clerk session tokens are not accepted here (CLERK_AUTHORIZED_PARTIES is not set)"))
		return "", false
	}
	token := bearer(r)
	if token == "" {
		writeProblem(w, problem(http.StatusUnauthorized, string(Unauthenticated), "credentials required: Authorization: Bearer <Clerk session token>"))
		return "", false
	}
	user, err := s.sessions.Verify(r.Context(), token)
	switch {
	case errors.Is(err, ledger.ErrUnavailable):
		s.log.ErrorContext(r.Context(), "credits API: verify a Clerk session", "error", err)
		w.Header().Set("Retry-After", "1")
		writeProblem(w, problem(http.StatusServiceUnavailable, string(Unavailable), "could not check the session token; retry"))
		return "", false
	case err != nil:
		writeProblem(w, problem(http.StatusUnauthorized, string(Unauthenticated), "the session token does not verify"))
		return "", false
	case !isUserID(user):
		writeProblem(w, problem(http.StatusUnauthorized, string(Unauthenticated), "the session token names no Clerk user"))
		return "", false
	}
	return user, true
}

// write is the common first half of a POST: authorize, check the key,
// decode the body strictly, and fingerprint the request.
func (s *Server) write(w http.ResponseWriter, r *http.Request, scope, user, key string, body any, required bool) (ledger.Request, bool) {
	c, ok := s.authorize(w, r, scope)
	if !ok {
		return ledger.Request{}, false
	}
	if user != "" && !validUser(w, user) {
		return ledger.Request{}, false
	}
	if !validKey(key) {
		writeProblem(w, problem(http.StatusBadRequest, string(IdempotencyKeyMissing), "Idempotency-Key must be 1 to 255 printable ASCII characters"))
		return ledger.Request{}, false
	}
	canonical, err := decodeBody(r, body, required)
	if err != nil {
		writeProblem(w, problem(http.StatusBadRequest, string(InvalidRequest), err.Error()))
		return ledger.Request{}, false
	}
	// The fingerprint is the operation and what it asks, not the bytes:
	// the same request spelt with other spacing or key order is the same.
	fp := sha256.New()
	fmt.Fprintf(fp, "%s\n%s\n", r.Method, r.URL.Path)
	fp.Write(canonical)
	return ledger.Request{ClerkID: user, Actor: c.Name, Key: key, Fingerprint: fp.Sum(nil)}, true
}

// holdWrite is write for the hold routes.
func (s *Server) holdWrite(w http.ResponseWriter, r *http.Request, hold, key string, body any) (int64, ledger.Request, bool) {
	req, ok := s.write(w, r, ScopeSpend, "", key, body, false)
	if !ok {
		return 0, req, false
	}
	id, err := parseID("hold_", hold)
	if err != nil {
		writeProblem(w, problem(http.StatusNotFound, string(HoldNotFound), "no hold "+hold))
		return 0, req, false
	}
	return id, req, true
}

// forUser runs op; if the user is unknown and provisioning is on, it asks
// Clerk for the user, creates it with its signup credit, and runs op again.
func (s *Server) forUser(ctx context.Context, user string, op func() error) error {
	err := op()
	if user == "" || s.provision == nil || !errors.Is(err, ledger.ErrNotFound) {
		return err
	}
	if perr := s.provision(ctx, user); perr != nil {
		return perr
	}
	return op()
}

// do runs a write and sends its answer: the stored one, replayed, carries
// Idempotent-Replayed: true. user, if set, is provisioned when unknown.
func (s *Server) do(w http.ResponseWriter, r *http.Request, user, notFound string, op func(ctx context.Context) (ledger.Answer, error)) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), s.timeout)
	defer cancel()
	var ans ledger.Answer
	err := s.forUser(ctx, user, func() (err error) {
		ans, err = op(ctx)
		return err
	})
	if err != nil {
		s.writeError(w, r, err, notFound)
		return
	}
	if ans.Replayed {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	ct := "application/json"
	if ans.Status >= 400 {
		ct = "application/problem+json"
	}
	w.Header().Set("Content-Type", ct)
	w.WriteHeader(ans.Status)
	_, _ = w.Write(ans.Body)
}

// writeError answers an error that is not a stored answer.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error, notFound string) {
	p := problemFor(err, notFound)
	if p.Status >= 500 {
		s.log.ErrorContext(r.Context(), "credits API request failed", "method", r.Method, "path", r.URL.Path, "error", err)
		if p.Status == http.StatusServiceUnavailable {
			w.Header().Set("Retry-After", "1")
		}
	}
	writeProblem(w, p)
}

// maxAmount is the largest amount one request may move.
const maxAmount = 1_000_000_000_000

var reasonRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.:-]{0,63}$`)

// checkSpend checks what the schema says of an amount, a reason, a reference
// and metadata (the generated code decodes, it does not validate).
func checkSpend(w http.ResponseWriter, amount int64, reason string, reference *string, metadata *Metadata) ([]byte, bool) {
	var msg string
	var meta []byte
	switch {
	case amount < 1 || amount > maxAmount:
		msg = fmt.Sprintf("amount must be a whole number of credits from 1 to %d", maxAmount)
	case !reasonRE.MatchString(reason):
		msg = "reason must be a short lower-case word (a-z, 0-9, _ . : -), such as generation"
	case reference != nil && len(*reference) > 255:
		msg = "reference must be at most 255 bytes"
	case metadata != nil:
		meta, _ = json.Marshal(metadata)
		if len(meta) > 4096 {
			msg = "metadata must be at most 4 kB of JSON"
		}
	}
	if msg != "" {
		writeProblem(w, problem(http.StatusBadRequest, string(InvalidRequest), msg))
		return nil, false
	}
	return meta, true
}

func validUser(w http.ResponseWriter, user string) bool {
	if !isUserID(user) {
		writeProblem(w, problem(http.StatusBadRequest, string(InvalidRequest), "the user must be a Clerk user id (letters, digits, _ and -)"))
		return false
	}
	return true
}

// isUserID reports whether s is shaped like a Clerk user id: 1 to 255
// letters, digits, _ and - (without a regexp: it runs on every request).
func isUserID(s string) bool {
	if s == "" || len(s) > 255 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func validKey(k string) bool {
	if k == "" || len(k) > 255 {
		return false
	}
	return !strings.ContainsFunc(k, func(r rune) bool { return r < ' ' || r > '~' })
}

// decodeBody decodes a JSON body strictly (unknown fields and trailing data
// refused, at most 64 kB) into v and returns its canonical encoding.
func decodeBody(r *http.Request, v any, required bool) ([]byte, error) {
	raw, err := io.ReadAll(io.LimitReader(r.Body, 64<<10+1))
	if err != nil {
		return nil, fmt.Errorf("read body: %w", err)
	}
	if len(raw) > 64<<10 {
		return nil, errors.New("body larger than 64 kB")
	}
	if len(strings.TrimSpace(string(raw))) == 0 {
		if required {
			return nil, errors.New("a JSON body is required")
		}
		raw = []byte("{}")
	}
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return nil, fmt.Errorf("body: %s", strings.TrimPrefix(err.Error(), "json: "))
	}
	if dec.More() {
		return nil, errors.New("body: more than one JSON value")
	}
	return json.Marshal(v)
}

func parseID(prefix, s string) (int64, error) {
	n, err := strconv.ParseInt(strings.TrimPrefix(s, prefix), 10, 64)
	if err != nil || !strings.HasPrefix(s, prefix) || n <= 0 {
		return 0, fmt.Errorf("not an id: %q", s)
	}
	return n, nil
}

func entryID(id int64) string { return "ent_" + strconv.FormatInt(id, 10) }
func holdID(id int64) string  { return "hold_" + strconv.FormatInt(id, 10) }

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func ptr[T any](v T) *T { return &v }

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeProblem(w, problem(http.StatusInternalServerError, "internal", "encode answer"))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
