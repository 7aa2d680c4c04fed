// Package clerkfake is an in-memory fake of the part of Clerk's Backend API
// that creditgate uses: listing and counting users, reading one, and merging
// user metadata. It answers in Clerk's JSON so the real clerk-sdk-go client
// works against it unchanged (point BackendConfig.URL at "<fake base>/v1"),
// records every call, and can be told to fail upcoming requests (429 with
// Retry-After, 5xx) or to enforce a per-user rate limit on metadata writes.
//
// Tests and e2e serve it in-process (httptest.NewServer(clerkfake.New()));
// hack/fakeclerk serves it as a process for local runs, driven over the admin
// API under /_fake/.
package clerkfake

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"time"
)

// maxBodyBytes bounds request bodies. Clerk allows 8 KiB per metadata field,
// so anything near this is a client bug.
const maxBodyBytes = 1 << 20

// Server is the fake Clerk Backend API. It is an http.Handler serving the
// Backend API under /v1 and the admin API under /_fake/. The zero value is not
// usable; call New. All methods are safe for concurrent use.
type Server struct {
	mux *http.ServeMux
	now func() time.Time // replaced by tests that step time

	mu         sync.Mutex
	users      map[string]*User // normalised: metadata maps non-nil, times in ms
	secretKey  string
	faults     []pendingFault // in the order FailNext added them
	calls      []Call
	rateLimit  int
	ratePer    time.Duration
	rateHits   map[string][]time.Time // user id → accepted metadata writes in the window
	violations int
	traceSeq   uint64
	jwks       []byte // GET /v1/jwks: the instance's public signing keys
}

// User is a Clerk user as the fake stores it. Whatever else Clerk knows about
// a user (names, phone numbers, …) is answered as empty.
//
// Metadata read back through Server.User has been through JSON: numbers are
// float64, and an empty metadata is an empty, non-nil map.
type User struct {
	ID string
	// Email becomes the user's only email address, also its primary one.
	// Empty means no email address at all.
	Email string
	// CreatedAt defaults to the time the user is added; it is kept to the
	// millisecond, as Clerk does.
	CreatedAt time.Time
	// UpdatedAt defaults to CreatedAt and moves on every metadata write.
	UpdatedAt       time.Time
	PublicMetadata  map[string]any
	PrivateMetadata map[string]any
	UnsafeMetadata  map[string]any
}

// Fault is one injected failure: the answer to one request.
type Fault struct {
	// Status is the HTTP status to answer with; 0 means 500. The body is a
	// Clerk-shaped error so clerk-sdk-go returns *clerk.APIErrorResponse.
	Status int
	// RetryAfter, when positive, is sent as a Retry-After header in whole
	// seconds, rounded up.
	RetryAfter time.Duration
}

// Call is one request the fake answered on the Backend API (admin requests
// under /_fake/ are not recorded).
type Call struct {
	Method string
	Path   string // decoded URL path, e.g. /v1/users/user_1/metadata
	Query  string // raw query string, without '?'
	Body   []byte // nil when the request had none
	Status int
	At     time.Time // when the request arrived
}

type pendingFault struct {
	match string
	Fault
}

// New returns an empty fake: no users, no secret key (any Authorization is
// accepted), no faults, no rate limit.
func New() *Server {
	s := &Server{mux: http.NewServeMux(), now: time.Now, users: map[string]*User{}, rateHits: map[string][]time.Time{}}
	// The Backend API. Anything else gets a Clerk-shaped 404 naming the
	// request, so a client calling an endpoint the fake lacks fails loudly.
	s.mux.HandleFunc("GET /v1/users", s.handleList)
	s.mux.HandleFunc("GET /v1/users/count", s.handleList)
	s.mux.HandleFunc("GET /v1/users/{id}", s.handleGetUser)
	s.mux.HandleFunc("PATCH /v1/users/{id}/metadata", s.handleUpdateMetadata)
	s.mux.HandleFunc("GET /v1/jwks", s.handleJWKS)
	s.mux.HandleFunc("/", handleNoEndpoint)
	// The admin API, which lets another process drive the fake. It needs no
	// key and its requests are not recorded as calls.
	s.mux.HandleFunc("GET /_fake/healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	s.mux.HandleFunc("GET /_fake/users", s.handleAdminListUsers)
	s.mux.HandleFunc("POST /_fake/users", s.handleAdminAddUsers)
	s.mux.HandleFunc("GET /_fake/users/{id}", s.handleGetUser)
	s.mux.HandleFunc("DELETE /_fake/users/{id}", s.handleAdminDeleteUser)
	s.mux.HandleFunc("POST /_fake/faults", s.handleAdminFaults)
	s.mux.HandleFunc("GET /_fake/calls", s.handleAdminCalls)
	s.mux.HandleFunc("GET /_fake/rate_limit", s.handleAdminGetRateLimit)
	s.mux.HandleFunc("PUT /_fake/rate_limit", s.handleAdminSetRateLimit)
	s.mux.HandleFunc("POST /_fake/reset", func(w http.ResponseWriter, _ *http.Request) {
		s.Reset()
		w.WriteHeader(http.StatusNoContent)
	})
	s.mux.HandleFunc("/_fake/", func(w http.ResponseWriter, r *http.Request) {
		writeAdminError(w, http.StatusNotFound, "no admin endpoint "+r.Method+" "+r.URL.Path)
	})
	return s
}

// AddUser stores u, replacing any user with the same ID. It panics if u has no
// ID or metadata that does not marshal to JSON: both are bugs in the test.
func (s *Server) AddUser(u User) { s.AddUsers(u) }

// AddUsers stores every user, as AddUser does.
func (s *Server) AddUsers(users ...User) {
	if err := s.addUsers(users); err != nil {
		panic("clerkfake: " + err.Error())
	}
}

// addUsers stores every user, or none when one is invalid.
func (s *Server) addUsers(users []User) error {
	now := s.now()
	stored := make([]*User, len(users))
	for i, u := range users {
		var err error
		if stored[i], err = normaliseUser(u, now); err != nil {
			return fmt.Errorf("user %d: %w", i, err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, u := range stored {
		s.users[u.ID] = u
	}
	return nil
}

// normaliseUser validates u and stores it the way the wire would: times in
// whole milliseconds (UTC), metadata through a JSON round trip (float64
// numbers, []any arrays, map[string]any objects), never nil.
func normaliseUser(u User, now time.Time) (*User, error) {
	if u.ID == "" {
		return nil, errors.New("user without an ID")
	}
	if u.CreatedAt.IsZero() {
		u.CreatedAt = now
	}
	if u.UpdatedAt.IsZero() {
		u.UpdatedAt = u.CreatedAt
	}
	u.CreatedAt, u.UpdatedAt = toMillis(u.CreatedAt), toMillis(u.UpdatedAt)
	for _, m := range []*map[string]any{&u.PublicMetadata, &u.PrivateMetadata, &u.UnsafeMetadata} {
		n := map[string]any{}
		if len(*m) > 0 {
			b, err := json.Marshal(*m)
			if err == nil {
				err = json.Unmarshal(b, &n)
			}
			if err != nil {
				return nil, fmt.Errorf("user %s: metadata: %w", u.ID, err)
			}
		}
		*m = n
	}
	return &u, nil
}

func toMillis(t time.Time) time.Time { return time.UnixMilli(t.UnixMilli()).UTC() }

// DeleteUser removes the user; later requests for it are answered 404. It
// reports whether the user existed.
func (s *Server) DeleteUser(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.users[id]
	delete(s.users, id)
	return ok
}

// User returns a copy of the stored user, with its metadata as merged so far.
func (s *Server) User(id string) (User, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.users[id]
	if !ok {
		return User{}, false
	}
	// Normalising a stored user again copies its metadata deeply; it cannot fail.
	c, _ := normaliseUser(*u, u.CreatedAt)
	return *c, true
}

// SetSecretKey makes the Backend API require "Authorization: Bearer <k>" and
// answer 401 otherwise. An empty key turns the check off.
func (s *Server) SetSecretKey(k string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.secretKey = k
}

// SetJWKS sets the JSON Web Key Set GET /v1/jwks answers (the instance's
// public keys, which verify its session tokens).
func (s *Server) SetJWKS(set []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.jwks = bytes.Clone(set)
}

// FailNext answers the next len(faults) Backend API requests whose
// "METHOD /path" starts with match with those faults, in order, each used
// once. "" matches every request; "PATCH /v1/users/" matches metadata writes;
// "GET /v1/users" matches both the list and the count that clerk-sdk-go's
// user.List sends. Faults are answered before the secret key is checked, and
// rules added by earlier calls are consumed first.
func (s *Server) FailNext(match string, faults ...Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range faults {
		s.faults = append(s.faults, pendingFault{match, f})
	}
}

// SetRateLimit allows at most n metadata writes (PATCH /v1/users/{id}/metadata)
// per user in any sliding window of length per; the next one is answered 429
// with a Retry-After of when the oldest write leaves the window, and counted
// as a violation. Rejected writes do not count against the window. n <= 0
// turns the limit off.
func (s *Server) SetRateLimit(n int, per time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rateLimit, s.ratePer = n, per
	clear(s.rateHits)
}

// RateLimitViolations is how many metadata writes the rate limit rejected
// since New or the last Reset.
func (s *Server) RateLimitViolations() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.violations
}

// Calls returns the Backend API requests answered so far, in the order they
// were answered; their bodies are shared, not to be modified. Each call is
// recorded before its response is sent, so a client that has its answer will
// find the call here.
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

// MetadataWrites counts the metadata writes for the user that succeeded
// (answered 2xx); faults, rate-limited writes and errors do not count.
func (s *Server) MetadataWrites(userID string) int {
	n := 0
	for _, c := range s.Calls() {
		if c.Method == http.MethodPatch && c.Path == "/v1/users/"+userID+"/metadata" && c.Status >= 200 && c.Status < 300 {
			n++
		}
	}
	return n
}

// Reset forgets the recorded calls, pending faults, rate-limit history and
// violations. Users, the secret key and the rate-limit setting stay.
func (s *Server) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls, s.faults, s.violations = nil, nil, 0
	clear(s.rateHits)
}

// ServeHTTP answers a Backend API request into a buffer, records the call and
// only then sends the answer, so the record is never behind the client.
// Admin requests, under /_fake/, are answered directly.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/_fake/") {
		s.mux.ServeHTTP(w, r)
		return
	}
	at := s.now()
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		http.Error(w, "clerkfake: read body: "+err.Error(), http.StatusRequestEntityTooLarge)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	if len(body) == 0 {
		body = nil
	}

	s.mu.Lock()
	s.traceSeq++
	trace := fmt.Sprintf("fake_trace_%08d", s.traceSeq)
	fault, faulted := s.takeFault(r.Method + " " + r.URL.Path)
	authorized := s.secretKey == "" ||
		subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), []byte("Bearer "+s.secretKey)) == 1
	s.mu.Unlock()

	rec := httptest.NewRecorder()
	rec.Header().Set("Clerk-Trace-Id", trace)
	switch {
	case faulted:
		writeFault(rec, fault)
	case !authorized:
		writeFault(rec, Fault{Status: http.StatusUnauthorized})
	default:
		s.mux.ServeHTTP(rec, r)
	}

	s.mu.Lock()
	s.calls = append(s.calls, Call{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Body: body, Status: rec.Code, At: at})
	s.mu.Unlock()
	maps.Copy(w.Header(), rec.Header())
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}

// takeFault pops the first pending fault whose match matches key. s.mu held.
func (s *Server) takeFault(key string) (Fault, bool) {
	i := slices.IndexFunc(s.faults, func(p pendingFault) bool { return strings.HasPrefix(key, p.match) })
	if i < 0 {
		return Fault{}, false
	}
	f := s.faults[i].Fault
	s.faults = slices.Delete(s.faults, i, i+1)
	return f, true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // every value the fake answers encodes
}
