// Package clerkfake is an in-memory fake of the part of Clerk's Backend API
// that creditgate uses: listing and counting users, reading one, and merging
// user metadata. It answers in Clerk's JSON so the real clerk-sdk-go client
// works against it unchanged (point BackendConfig.URL at "<fake base>/v1"),
// records every call, and can be told to fail upcoming requests (429 with
// Retry-After, 5xx) or to enforce a per-user rate limit on metadata writes.
//
// Tests mount it in-process with httptest.NewServer(clerkfake.New()); the dev
// run and e2e start it as a process (hack/fakeclerk) and drive it over the
// admin API under /_fake/.
package clerkfake

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
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
	api   http.Handler
	admin http.Handler
	now   func() time.Time // replaced by tests that step time

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

// SetJWKS sets the JSON Web Key Set GET /v1/jwks answers (the instance's
// public keys, which verify its session tokens).
func (s *Server) SetJWKS(set []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.jwks = append([]byte(nil), set...)
}

// handleJWKS answers GET /v1/jwks.
func (s *Server) handleJWKS(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	set := s.jwks
	s.mu.Unlock()
	if set == nil {
		set = []byte(`{"keys":[]}`)
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(set)
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
	s := &Server{
		now:      time.Now,
		users:    make(map[string]*User),
		rateHits: make(map[string][]time.Time),
	}
	s.api = s.apiRoutes()
	s.admin = s.adminRoutes()
	return s
}

// AddUser stores u, replacing any user with the same ID. It panics if u has no
// ID or metadata that does not marshal to JSON: both are bugs in the test.
func (s *Server) AddUser(u User) {
	s.AddUsers(u)
}

// AddUsers stores every user, as AddUser does.
func (s *Server) AddUsers(users ...User) {
	if err := s.addUsers(users); err != nil {
		panic("clerkfake: " + err.Error())
	}
}

// addUsers stores every user, or none when one is invalid.
func (s *Server) addUsers(users []User) error {
	now := s.now()
	stored := make([]*User, 0, len(users))
	for i, u := range users {
		n, err := normaliseUser(u, now)
		if err != nil {
			return fmt.Errorf("user %d: %w", i, err)
		}
		stored = append(stored, n)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, u := range stored {
		s.users[u.ID] = u
	}
	return nil
}

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
	// Normalising a stored user again copies its metadata deeply.
	c, err := normaliseUser(*u, u.CreatedAt)
	if err != nil {
		panic("clerkfake: stored metadata does not encode: " + err.Error())
	}
	return *c, true
}

// SetSecretKey makes the Backend API require "Authorization: Bearer <k>" and
// answer 401 otherwise. An empty key turns the check off.
func (s *Server) SetSecretKey(k string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.secretKey = k
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
// were answered. Each call is recorded before its response is sent, so a
// client that has its answer will find the call here.
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Call, len(s.calls))
	for i, c := range s.calls {
		c.Body = bytes.Clone(c.Body)
		out[i] = c
	}
	return out
}

// MetadataWrites counts the metadata writes for the user that succeeded
// (answered 2xx); faults, rate-limited writes and errors do not count.
func (s *Server) MetadataWrites(userID string) int {
	p := "/v1/users/" + userID + "/metadata"
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.calls {
		if c.Method == http.MethodPatch && c.Path == p && c.Status >= 200 && c.Status < 300 {
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
	s.calls = nil
	s.faults = nil
	clear(s.rateHits)
	s.violations = 0
}

// ServeHTTP serves the admin API under /_fake/ and the Backend API everywhere
// else.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/_fake/") {
		s.admin.ServeHTTP(w, r)
		return
	}
	s.serveAPI(w, r)
}

// serveAPI answers a Backend API request into a buffer, records the call and
// only then sends the answer, so the record is never behind the client.
func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request) {
	at := s.now()
	var body []byte
	if r.Body != nil {
		b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
		if err != nil {
			http.Error(w, "clerkfake: read body: "+err.Error(), http.StatusRequestEntityTooLarge)
			return
		}
		if len(b) > 0 {
			body = b
		}
		r.Body = io.NopCloser(bytes.NewReader(b))
	}

	s.mu.Lock()
	s.traceSeq++
	trace := fmt.Sprintf("fake_trace_%08d", s.traceSeq)
	fault, faulted := s.takeFault(r.Method + " " + r.URL.Path)
	authorized := s.authorized(r.Header.Get("Authorization"))
	s.mu.Unlock()

	rec := httptest.NewRecorder()
	rec.Header().Set("Clerk-Trace-Id", trace)
	switch {
	case faulted:
		writeFault(rec, fault)
	case !authorized:
		writeFault(rec, Fault{Status: http.StatusUnauthorized})
	default:
		s.api.ServeHTTP(rec, r)
	}

	s.mu.Lock()
	s.calls = append(s.calls, Call{
		Method: r.Method,
		Path:   r.URL.Path,
		Query:  r.URL.RawQuery,
		Body:   body,
		Status: rec.Code,
		At:     at,
	})
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

// authorized checks the Authorization header against the secret key. s.mu held.
func (s *Server) authorized(header string) bool {
	if s.secretKey == "" {
		return true
	}
	return subtle.ConstantTimeCompare([]byte(header), []byte("Bearer "+s.secretKey)) == 1
}

// allowWrite applies the rate limit to a metadata write for id at now. s.mu held.
func (s *Server) allowWrite(id string, now time.Time) (retryAfter time.Duration, ok bool) {
	if s.rateLimit <= 0 {
		return 0, true
	}
	cutoff := now.Add(-s.ratePer)
	kept := slices.DeleteFunc(s.rateHits[id], func(h time.Time) bool { return !h.After(cutoff) })
	if len(kept) >= s.rateLimit {
		s.rateHits[id] = kept
		s.violations++
		return kept[0].Add(s.ratePer).Sub(now), false
	}
	s.rateHits[id] = append(kept, now)
	return 0, true
}

// writeJSON answers v as JSON with the status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "clerkfake: encode response: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
