package clerkfake

import (
	"cmp"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/creditgate/creditgate/pkg/clerk/clerkevent"
)

// listQuery is the parsed query of GET /v1/users and GET /v1/users/count.
type listQuery struct {
	createdAfter  *int64 // unix ms, exclusive
	createdBefore *int64 // unix ms, exclusive
	userIDs       []string
	emails        []string
	limit, offset int
	orderField    string // "created_at" or "updated_at"
	descending    bool
}

// supportedParams are the query parameters the fake understands. Clerk has
// many more filters (query, username, last_active_at_*, …); the fake refuses
// them rather than ignore them and answer with users they would have excluded.
var supportedParams = []string{
	"created_at_after", "created_at_before", "user_id", "email_address",
	"limit", "offset", "order_by",
}

// parseListQuery reads the filters and paging of a users list. A 422 has been
// written when ok is false.
func parseListQuery(w http.ResponseWriter, v url.Values) (q listQuery, ok bool) {
	for name := range v {
		if !slices.Contains(supportedParams, name) {
			writeParamError(w, "form_param_unknown", name, "clerkfake does not implement the users parameter "+strconv.Quote(name))
			return q, false
		}
	}
	q = listQuery{userIDs: v["user_id"], emails: v["email_address"], limit: 10} // Clerk's default page
	for _, p := range []struct {
		name, long string
		min, max   int64
		set        func(int64)
	}{
		{"created_at_after", "created_at_after must be unix milliseconds", math.MinInt64, math.MaxInt64, func(n int64) { q.createdAfter = &n }},
		{"created_at_before", "created_at_before must be unix milliseconds", math.MinInt64, math.MaxInt64, func(n int64) { q.createdBefore = &n }},
		{"limit", "limit must be between 1 and 500", 1, 500, func(n int64) { q.limit = int(n) }},
		{"offset", "offset must be 0 or more", 0, math.MaxInt64, func(n int64) { q.offset = int(n) }},
	} {
		if s := v.Get(p.name); s != "" {
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil || n < p.min || n > p.max {
				writeParamError(w, "form_param_value_invalid", p.name, p.long)
				return q, false
			}
			p.set(n)
		}
	}
	// Clerk's default is newest first. An unencoded '+' in a hand-written URL
	// arrives as a space.
	order := cmp.Or(v.Get("order_by"), "-created_at")
	if strings.HasPrefix(order, " ") {
		order = "+" + strings.TrimLeft(order, " ")
	}
	q.descending = strings.HasPrefix(order, "-")
	q.orderField = strings.TrimLeft(order, "+-")
	if q.orderField != "created_at" && q.orderField != "updated_at" {
		writeParamError(w, "form_param_value_invalid", "order_by",
			"clerkfake orders users by created_at or updated_at only, not "+strconv.Quote(order))
		return q, false
	}
	return q, true
}

// matches reports whether u passes the filters (not the paging).
func (q listQuery) matches(u *User) bool {
	created := u.CreatedAt.UnixMilli()
	return (q.createdAfter == nil || created > *q.createdAfter) &&
		(q.createdBefore == nil || created < *q.createdBefore) &&
		(len(q.userIDs) == 0 || slices.Contains(q.userIDs, u.ID)) &&
		(len(q.emails) == 0 || u.Email != "" && slices.ContainsFunc(q.emails, func(e string) bool {
			return strings.EqualFold(e, u.Email)
		}))
}

// list renders the page of users that q asks for, in q's order, and counts
// every user passing q's filters.
func (s *Server) list(q listQuery) (page []clerkevent.User, total int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var all []*User
	for _, u := range s.users {
		if q.matches(u) {
			all = append(all, u)
		}
	}
	key := func(u *User) time.Time {
		if q.orderField == "updated_at" {
			return u.UpdatedAt
		}
		return u.CreatedAt
	}
	// Ties are broken by id so that paging is stable.
	slices.SortFunc(all, func(a, b *User) int {
		c := cmp.Or(key(a).Compare(key(b)), strings.Compare(a.ID, b.ID))
		if q.descending {
			return -c
		}
		return c
	})
	page = []clerkevent.User{}
	for i := q.offset; i < len(all) && len(page) < q.limit; i++ {
		page = append(page, render(all[i]))
	}
	return page, len(all)
}

// handleList answers GET /v1/users with a bare JSON array, as Clerk does.
// clerk-sdk-go v2.4.2's user.List decodes that array and then calls
// GET /v1/users/count with the same parameters to fill UserList.TotalCount;
// it does not expect the {"data":[…],"total_count":N} envelope that most other
// Clerk list endpoints use. Like Clerk, the count ignores the limit, offset
// and order_by that clerk-sdk-go sends it too.
func (s *Server) handleList(w http.ResponseWriter, r *http.Request) {
	q, ok := parseListQuery(w, r.URL.Query())
	if !ok {
		return
	}
	page, n := s.list(q)
	if strings.HasSuffix(r.URL.Path, "/count") {
		writeJSON(w, http.StatusOK, map[string]any{"object": "total_count", "total_count": n})
		return
	}
	writeJSON(w, http.StatusOK, page)
}

func (s *Server) handleGetUser(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	u, ok := s.users[r.PathValue("id")]
	var a clerkevent.User
	if ok {
		a = render(u)
	}
	s.mu.Unlock()
	writeUser(w, a, ok)
}

func writeUser(w http.ResponseWriter, a clerkevent.User, found bool) {
	if !found {
		writeError(w, http.StatusNotFound, notFound("User not found"))
		return
	}
	writeJSON(w, http.StatusOK, a)
}

// handleUpdateMetadata answers PATCH /v1/users/{id}/metadata: a deep merge of
// each given metadata into the user's, answered with the updated user. A
// metadata that is absent or null is left alone.
func (s *Server) handleUpdateMetadata(w http.ResponseWriter, r *http.Request) {
	id, now := r.PathValue("id"), s.now()
	if retry, ok := s.allowWrite(id, now); !ok {
		writeFault(w, Fault{Status: http.StatusTooManyRequests, RetryAfter: retry})
		return
	}
	var patch struct {
		Public  map[string]any `json:"public_metadata"`
		Private map[string]any `json:"private_metadata"`
		Unsafe  map[string]any `json:"unsafe_metadata"`
	}
	if err := json.NewDecoder(r.Body).Decode(&patch); err != nil {
		// A metadata that is not an object, or holds a number out of range.
		if typeErr, ok := errors.AsType[*json.UnmarshalTypeError](err); ok && typeErr.Field != "" {
			writeParamError(w, "form_param_format_invalid", typeErr.Field, typeErr.Field+" must be a JSON object")
			return
		}
		writeError(w, http.StatusBadRequest, apiErrorItem{Code: "malformed_request", Message: "malformed request",
			LongMessage: "The request body is not valid JSON: " + err.Error()})
		return
	}

	s.mu.Lock()
	u, ok := s.users[id]
	var a clerkevent.User
	if ok {
		mergeMetadata(u.PublicMetadata, patch.Public)
		mergeMetadata(u.PrivateMetadata, patch.Private)
		mergeMetadata(u.UnsafeMetadata, patch.Unsafe)
		u.UpdatedAt = toMillis(now)
		a = render(u)
	}
	s.mu.Unlock()
	writeUser(w, a, ok)
}

// allowWrite applies the rate limit to a metadata write for id at now.
func (s *Server) allowWrite(id string, now time.Time) (retryAfter time.Duration, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
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

func (s *Server) handleJWKS(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	set := cmp.Or(string(s.jwks), `{"keys":[]}`)
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(set))
}

func handleNoEndpoint(w http.ResponseWriter, r *http.Request) {
	long := "clerkfake does not implement " + r.Method + " " + r.URL.Path
	if !strings.HasPrefix(r.URL.Path, "/v1/") {
		long += " (the Backend API is under /v1: set BackendConfig.URL to <fake base>/v1)"
	}
	writeError(w, http.StatusNotFound, notFound(long))
}

// render turns a stored user into Clerk's JSON shape: clerkevent's User, the
// object Clerk's events carry too, with the stored email (under an id derived
// from the user's: user_2abc → idn_2abc) and metadata. Marshalled here, under
// the lock, the metadata needs no copy; being normalised, it always encodes.
func render(u *User) clerkevent.User {
	a := clerkevent.NewUser(clerkevent.Event{UserID: u.ID, Email: u.Email}, u.CreatedAt.UnixMilli(), u.UpdatedAt.UnixMilli())
	if u.Email != "" {
		id := "idn_" + strings.TrimPrefix(u.ID, "user_")
		a.EmailAddresses[0].ID, a.PrimaryEmailAddressID = id, &id
	}
	a.PublicMetadata, _ = json.Marshal(u.PublicMetadata)
	a.PrivateMetadata, _ = json.Marshal(u.PrivateMetadata)
	a.UnsafeMetadata, _ = json.Marshal(u.UnsafeMetadata)
	return a
}

// mergeMetadata merges patch into dst the way Clerk's "update metadata"
// endpoint does: objects are merged key by key at every depth, a key whose
// new value is null is removed, and any other value (arrays included)
// replaces the old one. Nulls inside a new object that has nothing to merge
// with are dropped too, since they would have removed a key that is not there.
// Arrays and scalars of patch are stored as they are: patch is handed over.
func mergeMetadata(dst, patch map[string]any) {
	for k, pv := range patch {
		switch pv := pv.(type) {
		case nil:
			delete(dst, k)
		case map[string]any:
			sub, ok := dst[k].(map[string]any)
			if !ok {
				sub = map[string]any{}
			}
			mergeMetadata(sub, pv)
			dst[k] = sub
		default:
			dst[k] = pv
		}
	}
}

// apiError is the body of every Clerk Backend API error. clerk-sdk-go only
// turns a response into *clerk.APIErrorResponse when "errors" is a non-null
// array; anything else it returns as errors.New(body), losing the status.
type apiError struct {
	Errors  []apiErrorItem `json:"errors"`
	TraceID string         `json:"clerk_trace_id,omitempty"`
}

type apiErrorItem struct {
	Message     string         `json:"message"`
	LongMessage string         `json:"long_message"`
	Code        string         `json:"code"`
	Meta        map[string]any `json:"meta,omitempty"`
}

// writeError answers a Clerk-shaped error. The trace id is the one ServeHTTP
// put in the Clerk-Trace-Id header.
func writeError(w http.ResponseWriter, status int, item apiErrorItem) {
	writeJSON(w, status, apiError{Errors: []apiErrorItem{item}, TraceID: w.Header().Get("Clerk-Trace-Id")})
}

// writeParamError answers 422 for a bad query or body parameter, as Clerk
// does for form parameter errors.
func writeParamError(w http.ResponseWriter, code, param, longMessage string) {
	writeError(w, http.StatusUnprocessableEntity, apiErrorItem{Code: code, Message: "is invalid", LongMessage: longMessage,
		Meta: map[string]any{"param_name": param}})
}

// writeFault answers an injected fault with the error Clerk would send for
// that status, as far as Clerk's error reference documents them.
func writeFault(w http.ResponseWriter, f Fault) {
	status := cmp.Or(f.Status, http.StatusInternalServerError)
	if f.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.FormatInt(ceilSeconds(f.RetryAfter), 10))
	}
	var item apiErrorItem
	switch {
	case status == http.StatusTooManyRequests:
		item = apiErrorItem{Code: "too_many_requests", Message: "Too many requests", LongMessage: "Too many requests, retry later"}
	case status == http.StatusUnauthorized:
		item = apiErrorItem{Code: "authentication_invalid", Message: "Invalid authentication",
			LongMessage: "Unable to authenticate the request, you need to supply an active API key"}
	case status == http.StatusNotFound:
		item = notFound("Resource not found")
	case status >= 500:
		item = apiErrorItem{Code: "internal_clerk_error", Message: "Oops, an unexpected error occurred",
			LongMessage: "There was an internal error on our servers. We've been notified and are working on fixing it."}
	default:
		text := cmp.Or(http.StatusText(status), "Status "+strconv.Itoa(status))
		item = apiErrorItem{Code: strings.ReplaceAll(strings.ToLower(text), " ", "_"), Message: text,
			LongMessage: text + " (injected by clerkfake)"}
	}
	writeError(w, status, item)
}

// notFound is Clerk's 404 error, with a long message saying what is missing.
func notFound(longMessage string) apiErrorItem {
	return apiErrorItem{Code: "resource_not_found", Message: "not found", LongMessage: longMessage}
}

// ceilSeconds is d in whole seconds, rounded up, at least 1.
func ceilSeconds(d time.Duration) int64 {
	return max(int64((d+time.Second-1)/time.Second), 1)
}
